"""The human review loop on a real Temporal dev server, PostgreSQL and SeaweedFS: routed items
get ReviewItem workflows, reviewers answer by update or signal, refusals are explained and
recorded, a closed review becomes a human label and a new snapshot version."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.ids import review_workflow_id
from activities.payloads import (
    LabelDatasetInput,
    LabelDatasetResult,
    PolicyRefPayload,
    ReviewItemInput,
    ReviewReceipt,
    ReviewRulesPayload,
    ReviewStateView,
)
from tests.helpers import signed, write_jsonl
from tests.integration.reviewing import (
    ROSTER,
    eventually,
    handle_for,
    rows,
    submit,
)
from worker.main import Runtime
from worker.settings import Settings


async def test_update_labels_the_item_and_a_new_snapshot_version_appears(
    env: WorkflowEnvironment,
    stack: Settings,
    runtime: Runtime,
    routed: tuple[str, list[str], dict[str, str], LabelDatasetResult],
) -> None:
    dataset, items, gold, job = routed
    item = items[0]
    handle = handle_for(env, dataset, item)
    state = await handle.query("state", result_type=ReviewStateView)
    assert state.state == "awaiting" and state.rule_id and state.labels == ["positive", "negative"]
    assert {v.agent for v in state.votes} == {"keywords", "tfidf_logreg"}
    assert all(v.rationale for v in state.votes)

    receipt = await submit(handle, "alice", gold[item], note="clear case")
    assert (receipt.accepted, receipt.state, receipt.label) == (True, "done", gold[item])
    final = await handle.result()
    assert final.state == "done" and final.label == gold[item]

    labels = await rows(
        runtime,
        "SELECT label, source, reviewers, is_current FROM label "
        "WHERE dataset = :d AND item_id = :i",
        d=dataset,
        i=item,
    )
    assert labels == [(gold[item], "human", ["alice"], True)]
    reviews = await rows(
        runtime,
        "SELECT reviewer, label, note, via, accepted FROM review "
        "WHERE dataset = :d AND item_id = :i",
        d=dataset,
        i=item,
    )
    assert reviews == [("alice", gold[item], "clear case", "update", True)]

    async def new_version() -> tuple[object, ...] | None:
        found = await rows(
            runtime,
            "SELECT version, s3_version_id FROM snapshot WHERE dataset = :d AND version > :v "
            "ORDER BY version DESC LIMIT 1",
            d=dataset,
            v=job.snapshot.version,
        )
        return found[0] if found else None

    latest = await eventually(new_version)
    assert latest is not None, "no snapshot version after the review"
    from tests.integration.stored import snapshot_bytes

    body = snapshot_bytes(stack, f"datasets/{dataset}/labels.jsonl", str(latest[1]))
    by_id = {r["id"]: r for r in map(json.loads, body.splitlines())}
    assert by_id[item]["label"] == gold[item] and by_id[item]["label_source"] == "human"


@pytest.mark.parametrize(
    ("reviewer", "label", "reason"),
    [
        ("mallory", "positive", "reviewer 'mallory' is not on the roster for task 'sentiment'"),
        ("dana", "positive", "reviewer 'dana' lacks clearance for a 'normal' item"),
        ("alice", "meh", "label 'meh' is not one of positive, negative"),
    ],
)
async def test_validator_refuses_before_history(
    env: WorkflowEnvironment,
    routed: tuple[str, list[str], dict[str, str], LabelDatasetResult],
    reviewer: str,
    label: str,
    reason: str,
) -> None:
    dataset, items, _, _ = routed
    handle = handle_for(env, dataset, items[1])
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await submit(handle, reviewer, label)
    assert reason in str(info.value.cause)
    history = await handle.fetch_history()
    assert not any(
        e.HasField("workflow_execution_update_accepted_event_attributes") for e in history.events
    )
    assert (await handle.query("state", result_type=ReviewStateView)).state == "awaiting"


async def test_refused_signal_is_recorded_and_the_item_keeps_waiting(
    env: WorkflowEnvironment,
    runtime: Runtime,
    routed: tuple[str, list[str], dict[str, str], LabelDatasetResult],
) -> None:
    dataset, items, gold, _ = routed
    item = items[2]
    handle = handle_for(env, dataset, item)
    await handle.signal("submit_review", signed("mallory", "positive"))

    async def refused() -> list[tuple[object, ...]]:
        return await rows(
            runtime,
            "SELECT reviewer, accepted, reason FROM review "
            "WHERE dataset = :d AND item_id = :i AND via = 'signal'",
            d=dataset,
            i=item,
        )

    recorded = await eventually(refused)
    assert recorded == [
        ("mallory", False, "reviewer 'mallory' is not on the roster for task 'sentiment'")
    ]
    audit = await rows(
        runtime,
        "SELECT actor FROM audit_event WHERE kind = 'review_refused' AND subject = :w",
        w=review_workflow_id(dataset, item),
    )
    assert audit == [("mallory",)]
    state = await handle.query("state", result_type=ReviewStateView)
    assert state.state == "awaiting" and state.reviews[0].reason

    await handle.signal("submit_review", signed("bob", gold[item]))
    final = await handle.result()
    assert (final.state, final.label) == ("done", gold[item])
    # The closed item refuses anything further.
    with pytest.raises(Exception, match="(closed|completed)"):
        await submit(handle, "alice", gold[item])


async def test_policy_can_ask_for_two_agreeing_reviewers(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    routed: tuple[str, list[str], dict[str, str], LabelDatasetResult],
) -> None:
    dataset, items, _, job = routed
    inp = ReviewItemInput(
        dataset=dataset,
        item_id=items[3],
        job_id=job.job_id,
        task="sentiment",
        labels=["positive", "negative"],
        sensitivity="normal",
        policy=PolicyRefPayload(id="strict", version=1, sha256="0" * 64),
        rule_id="default",
        rules=ReviewRulesPayload(reviewers_needed=2),
        reviewers=ROSTER,
    )
    handle = await env.client.start_workflow(
        "ReviewItem",
        inp,
        id=f"review:two:{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=ReviewStateView,
    )
    first = await submit(handle, "alice", "negative")
    assert (first.state, first.label) == ("awaiting", None)
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await submit(handle, "alice", "negative")
    assert "reviewer 'alice' already reviewed this item" in str(info.value.cause)
    second = await submit(handle, "bob", "negative")
    assert (second.state, second.label) == ("done", "negative")
    final = await handle.result()
    assert [r.reviewer for r in final.reviews] == ["alice", "bob"]


async def test_burst_of_reviews_makes_few_snapshot_versions(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    dataset = f"burst{uuid.uuid4().hex[:6]}"
    source = write_jsonl(tmp_path / "b.jsonl", [r["text"] for r in gold_rows[:300]])
    job = await env.client.execute_workflow(
        "LabelDataset",
        LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment"),
        id=f"label:{dataset}:j1",
        task_queue=stack.task_queue,
        result_type=LabelDatasetResult,
    )
    items = [
        str(r[0])
        for r in await rows(
            runtime,
            "SELECT item_id FROM review_task WHERE dataset = :d AND state = 'awaiting'",
            d=dataset,
        )
    ][:120]
    assert len(items) == 120
    gate = asyncio.Semaphore(20)

    async def review(item: str) -> ReviewReceipt:
        async with gate:
            return await submit(handle_for(env, dataset, item), "alice", "positive")

    receipts = await asyncio.gather(*(review(i) for i in items))
    assert all(r.accepted and r.state == "done" for r in receipts)

    async def all_in_a_snapshot() -> list[tuple[object, ...]]:
        found = await rows(
            runtime,
            "SELECT version FROM snapshot WHERE dataset = :d AND item_count >= :n",
            d=dataset,
            n=job.counts.auto_accept + 120,
        )
        return found

    assert await eventually(all_in_a_snapshot, within=60)
    versions = await rows(
        runtime,
        "SELECT count(*) FROM snapshot WHERE dataset = :d AND version > :v",
        d=dataset,
        v=job.snapshot.version,
    )
    assert 1 <= int(str(versions[0][0])) <= 15, versions  # 120 reviews, a bounded few versions
