"""Confidentiality on the real stack: what Temporal stores of ours is ciphertext, the codec
server decodes for a token holder only, a key rotation keeps old histories readable, and a
reviewer-key rotation or a roster revocation takes effect on items already open."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads, WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.payloads import (
    LabelDatasetResult,
    ReviewReceipt,
    ReviewStateView,
    ReviewSubmission,
)
from tests.helpers import claim, cli, signed, start_review
from tests.integration.reviewing import eventually, handle_for, submit
from worker.codec import rotate_ring
from worker.main import Runtime
from worker.secrets import read as read_secrets
from worker.settings import Settings
from worker.stack import find_binary
from worker.temporal_client import connect


async def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60)


def payload_texts(history_json: str) -> str:
    """Every payload's data in a `temporal workflow show -o json` history, base64-decoded."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:
                found.append(base64.b64decode(node["data"]).decode(errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return "\n".join(found)


async def raw_history(settings: Settings, workflow_id: str) -> bytes:
    """The history as the server stores it: read without our codec."""
    plain = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    answer = await plain.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=settings.temporal_namespace,
            execution=WorkflowExecution(workflow_id=workflow_id),
            maximum_page_size=1000,
        )
    )
    return answer.history.SerializeToString()


def codec_post(settings: Settings, path: str, body: str, token: str | None) -> tuple[int, str]:
    headers = {"content-type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        settings.codec_url + path, data=body.encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_history_holds_no_rationale_note_gold_label_or_roster_in_clear(
    env: WorkflowEnvironment,
    stack: Settings,
    runtime: Runtime,
    routed: tuple[str, list[str], dict[str, str], LabelDatasetResult],
) -> None:
    dataset, items, gold, job = routed
    item = items[-1]
    handle = handle_for(env, dataset, item)
    state = await handle.query("state", result_type=ReviewStateView)
    rationales = [v.rationale for v in state.votes if len(v.rationale) > 8]
    assert rationales, state.votes
    note = f"private note {uuid.uuid4().hex}"
    receipt = await submit(handle, "alice", gold[item], note=note)
    assert receipt.state == "done"
    await handle.result()

    for workflow_id in (handle.id, f"label:{dataset}:j1"):
        raw = await raw_history(stack, workflow_id)
        assert b"binary/encrypted" in raw
        for secret in [note, *rationales, "alice", "bob", "carol", "positive", "negative"]:
            assert secret.encode() not in raw, (workflow_id, secret)

    # The codec server decodes it for the token holder, and only for them.
    plain = await Client.connect(stack.temporal_address, namespace=stack.temporal_namespace)
    first = [e async for e in plain.get_workflow_handle(handle.id).fetch_history_events()][0]
    sealed = first.workflow_execution_started_event_attributes.input
    body = json_format.MessageToJson(Payloads(payloads=list(sealed.payloads)))
    token = read_secrets(stack.home_dir)["codec_token"]
    status, text = codec_post(stack, "/decode", body, token)
    assert status == 200
    decoded = json.loads(json_format.Parse(text, Payloads()).payloads[0].data)
    assert decoded["item_id"] == item and "alice" in {r["id"] for r in decoded["reviewers"]}
    for wrong in (None, "not-the-token"):
        status, text = codec_post(stack, "/decode", body, wrong)
        assert status == 401 and "alice" not in text

    # `temporal workflow show` through the codec server prints the note; without it, not.
    show = [str(find_binary("temporal")), "workflow", "show", "-w", handle.id, "-o", "json",
            "--address", stack.temporal_address]  # fmt: skip
    via_codec = await run(
        [*show, "--codec-endpoint", stack.codec_url, "--codec-auth", f"Bearer {token}"]
    )
    assert via_codec.returncode == 0, via_codec.stderr
    assert note in payload_texts(via_codec.stdout)
    bare = await run(show)
    assert bare.returncode == 0 and note not in payload_texts(bare.stdout) + bare.stdout


async def test_a_payload_key_rotation_keeps_old_histories_readable(
    env: WorkflowEnvironment,
    stack: Settings,
    runtime: Runtime,
    routed: tuple[str, list[str], dict[str, str], LabelDatasetResult],
) -> None:
    dataset, items, gold, job = routed
    old_item = items[-1]  # decided under the key before the rotation (test above)
    before = await raw_history(stack, handle_for(env, dataset, old_item).id)
    ring = rotate_ring(stack.codec_keys_path)
    assert ring.active.encode() not in before

    client = await connect(stack)  # a new client encrypts with the new key
    old = await client.get_workflow_handle(
        handle_for(env, dataset, old_item).id, result_type=ReviewStateView
    ).result()
    assert old.state == "done" and old.label == gold[old_item]
    # The running worker (ring loaded before the rotation) serves a workflow written with
    # the new key; the codec server (its own process) decodes it too.
    handle = await start_review(client, stack, job, items[-2], ["alice"])
    receipt = await handle.execute_update(
        "submit_review", signed("alice", gold[items[-2]]), result_type=ReviewReceipt
    )
    assert receipt.accepted
    final = await handle.result()
    assert final.state == "done"
    raw = await raw_history(stack, handle.id)
    assert ring.active.encode() in raw
    token = read_secrets(stack.home_dir)["codec_token"]
    first = [e async for e in (await Client.connect(stack.temporal_address))
             .get_workflow_handle(handle.id).fetch_history_events()][0]  # fmt: skip
    sealed = first.workflow_execution_started_event_attributes.input
    body = json_format.MessageToJson(Payloads(payloads=list(sealed.payloads)))
    status, _ = await eventually_status(stack, body, token)
    assert status == 200


async def eventually_status(settings: Settings, body: str, token: str) -> tuple[int, str]:
    async def once() -> tuple[int, str] | None:
        answer = codec_post(settings, "/decode", body, token)
        return answer if answer[0] == 200 else None

    return await eventually(once, within=10) or codec_post(settings, "/decode", body, token)


async def test_a_reviewer_key_rotation_takes_effect_on_open_items(
    env: WorkflowEnvironment,
    stack: Settings,
    cli_worker: object,
    routed: tuple[str, list[str], dict[str, str], LabelDatasetResult],
) -> None:
    dataset, items, gold, job = routed
    handle = handle_for(env, dataset, items[0])
    assert (await handle.query("state", result_type=ReviewStateView)).state == "awaiting"
    before = claim("alice")
    issued = cli(stack, "reviewer", "token", "alice", "--task", "sentiment", "--hours", "1")
    assert issued.returncode == 0 and issued.stdout.count(".") == 2, issued.stdout
    rotated = cli(stack, "reviewer", "rotate-key")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert "open review item(s) told the new keys" in rotated.stdout

    # Claims signed before, by `claim` or by `reviewer token`, no longer count.
    for old in (before, issued.stdout.strip()):
        sub = ReviewSubmission(reviewer="alice", label=gold[items[0]], token=old)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("submit_review", sub, result_type=ReviewReceipt)
        assert "not a current one" in str(refused.value.cause)

    # A claim from the new key is taken by the item opened before the rotation.
    async def accepted() -> ReviewReceipt | None:
        try:
            return await submit(handle, "alice", gold[items[0]])
        except WorkflowUpdateFailedError as err:
            assert "not a current one" in str(err.cause), err.cause
            return None

    receipt = await eventually(accepted, within=20)
    assert receipt is not None and receipt.state == "done"
