"""Snapshot objects sealed at rest on the real stack: what SeaweedFS stores holds no item text,
the manifest names the key, and every reader (the next snapshot's diff, `dataset export`,
`audit verify`) gets the plaintext back, also across versions written in clear."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import tempfile
import uuid
from pathlib import Path

from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.payloads import LabelDatasetInput, LabelDatasetResult, SnapshotInput
from activities.s3 import make_s3_client
from activities.snapshot import data_key
from formats import sealed
from tests.helpers import ThreadWorker, cli, write_jsonl
from tests.integration.stored import snapshot_bytes
from worker.codec import KeyRing
from worker.main import Runtime
from worker.settings import Settings
from worker.stack import s3_target


async def test_snapshots_are_sealed_at_rest_and_read_back_in_clear(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    assert stack.snapshot_encryption  # the default
    texts = [r["text"] for r in gold_rows[2420:2463]]
    dataset = f"sealed{uuid.uuid4().hex[:6]}"
    result = await env.client.execute_workflow(
        "LabelDataset",
        LabelDatasetInput(dataset=dataset, source=str(write_jsonl(tmp_path / "in.jsonl", texts)),
                          task="sentiment"),
        id=f"label:{dataset}:j1",
        task_queue=stack.task_queue,
        result_type=LabelDatasetResult,
    )  # fmt: skip
    snap = result.snapshot
    assert snap.item_count >= 5
    ring = KeyRing.load(stack.codec_keys_path)

    # What S3 holds: a sealed object, no item text, the key named in its metadata.
    s3 = make_s3_client(s3_target(stack))
    got = s3.get_object(Bucket=stack.s3_bucket, Key=snap.s3_key, VersionId=snap.s3_version_id)
    raw = got["Body"].read()
    assert raw.startswith(sealed.MAGIC)
    plain = snapshot_bytes(stack, snap.s3_key, snap.s3_version_id)
    stored_texts = [json.loads(line)["text"] for line in plain.splitlines()]
    assert len(stored_texts) == snap.item_count
    for text in stored_texts:
        assert text[:24].encode() not in raw
    assert b'"label"' not in raw and b"positive" not in raw
    meta = got["Metadata"]
    assert meta["sealed-key-id"] == ring.active and meta["sealed-scheme"] == sealed.SCHEME
    # The content sha256 (catalog, result, metadata) is the plaintext's, as before sealing.
    assert hashlib.sha256(plain).hexdigest() == snap.content_sha256 == meta["content-sha256"]

    # The manifest (in clear: no item text) names the scheme, the key id, the sealed bytes.
    manifest = json.loads(
        s3.get_object(Bucket=stack.s3_bucket, Key=f"datasets/{dataset}/manifest.json",
                      VersionId=snap.manifest_version_id)["Body"].read()
    )  # fmt: skip
    assert manifest["data"]["encryption"] == {
        "scheme": sealed.SCHEME,
        "key_id": ring.active,
        "sealed_sha256": hashlib.sha256(raw).hexdigest(),
    }
    assert manifest["content_sha256"] == snap.content_sha256

    # v2 written in clear (sealing off: the parent, sealed, is still opened for the diff),
    # then v3 sealed again over a parent in clear.
    acts = runtime.snapshots
    clear = dataclasses.replace(acts, encrypt=False)
    v2 = await ActivityEnvironment().run(
        clear.snapshot, SnapshotInput(job_id="clear", dataset=dataset)
    )
    v3 = await ActivityEnvironment().run(
        acts.snapshot, SnapshotInput(job_id="again", dataset=dataset)
    )
    assert (v2.version, v3.version) == (2, 3)
    raw2 = s3.get_object(Bucket=stack.s3_bucket, Key=v2.s3_key, VersionId=v2.s3_version_id)
    assert raw2["Body"].read() == plain and "sealed-key-id" not in raw2["Metadata"]
    assert v2.content_sha256 == v3.content_sha256 == snap.content_sha256
    changes = await runtime_rows(runtime, dataset)
    assert changes == {1: snap.item_count}  # v2 and v3 changed nothing against their parents

    # `dataset export` (the CLI's code path) writes the plaintext, for each kind of version.
    for version in (1, 2, 3):
        out = tmp_path / f"v{version}.jsonl"
        done = cli(stack, "dataset", "export", f"{dataset}@{version}", "--out", str(out))
        assert done.returncode == 0, done.stdout + done.stderr
        assert out.read_bytes() == plain

    # `audit verify --deep` opens and re-hashes every version of this dataset.
    done = cli(stack, "audit", "verify", "--deep", "--json")
    verdict = json.loads(done.stdout)
    assert not [b for b in verdict["bad_snapshots"] if b.startswith(f"{dataset}@")], verdict
    assert verdict["snapshots_checked"] >= 3


async def runtime_rows(runtime: Runtime, dataset: str) -> dict[int, int]:
    from sqlalchemy import text

    async with runtime.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT version, count(*) FROM snapshot_change WHERE dataset = :d "
                 "GROUP BY version"), {"d": dataset},
        )  # fmt: skip
        return {int(v): int(n) for v, n in rows}


async def test_a_retried_sealed_put_keeps_the_version_and_its_own_sealing(
    runtime: Runtime, stack: Settings
) -> None:
    """A retry after the upload re-seals under a new data key, finds the version this job put
    (by the plaintext's sha256) and reports that version's sealing, not its own."""
    dataset = f"retry{uuid.uuid4().hex[:6]}"
    content = b"".join(b'{"id": "%d", "text": "a tender film"}\n' % i for i in range(1000))
    sha = hashlib.sha256(content).hexdigest()
    with tempfile.TemporaryFile() as body:
        body.write(content)
        body.seek(0)
        first = await asyncio.to_thread(runtime.snapshots._put_data, dataset, body, "j-r", sha)
        again = await asyncio.to_thread(runtime.snapshots._put_data, dataset, body, "j-r", sha)
    assert again == first and first[1] is not None
    s3 = make_s3_client(s3_target(stack))
    raw = s3.get_object(Bucket=stack.s3_bucket, Key=data_key(dataset), VersionId=first[0])
    assert first[1]["sealed_sha256"] == hashlib.sha256(raw["Body"].read()).hexdigest()
    assert snapshot_bytes(stack, data_key(dataset), first[0]) == content
