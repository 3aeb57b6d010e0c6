"""The boundary, tried as a hostile caller would, on the real stack: no record, raw start,
job id or signal can wedge a job or a review, lose data or slip past the checks.

Each case here once left a job or review retrying forever or mixed two jobs' data."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.payloads import (
    DatasetInput,
    LabelDatasetInput,
    LabelDatasetResult,
    LabelsChanged,
    ReviewReceipt,
    ReviewStateView,
    ReviewSubmission,
)
from tests.helpers import signed, start_review, write_jsonl
from worker.main import Runtime
from worker.settings import Settings


async def rows(runtime: Runtime, sql: str, **params: object) -> list[Any]:
    async with runtime.engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def run_job(
    env: WorkflowEnvironment, stack: Settings, arg: object, job: str
) -> LabelDatasetResult:
    return await env.client.execute_workflow(
        "LabelDataset", arg, id=job, task_queue=stack.task_queue, result_type=LabelDatasetResult
    )


def new_dataset() -> str:
    return f"h{uuid.uuid4().hex[:8]}"


async def test_hostile_records_are_refused_alone_and_the_job_ends(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    good = [r["text"] for r in gold_rows[:30]]
    hostile = [
        b'{"text": "raw nul \x00 byte"}',
        b'{"text": "escaped nul \\u0000 byte"}',
        b'{"text": "surrogate \\ud800 here"}',
        b'{"text": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"text": "huge int", "x": ' + b"7" * 5000 + b"}",
        b'{"text": "' + b"w" * (2 << 20) + b'"}',  # a 2 MiB line
    ]
    source = write_jsonl(tmp_path / "hostile.jsonl", good, extra_lines=hostile)
    dataset = new_dataset()
    job = f"label:{dataset}:j"
    result = await run_job(
        env, stack, LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment"), job
    )
    lines = len(good) + len(hostile)
    assert (result.items, result.quarantined) == (len(good), len(hostile))
    assert result.items + result.quarantined + result.duplicates == lines
    assert result.counts.total == len(good)
    reasons = dict(
        await rows(runtime, "SELECT line, reason FROM rejected_record WHERE job_id = :j", j=job)
    )
    assert sorted(reasons) == list(range(len(good) + 1, lines + 1))
    assert "NUL" in reasons[32] and "surrogate" in reasons[33] and "nested" in reasons[34]
    assert "over 1048576 bytes" in reasons[36]

    # The same from Excel: a BOM, a 300 KiB quoted field, a NUL inside a field.
    csv_source = tmp_path / "excel.csv"
    big = "a long review " * 22_000
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        [["text", "id"], [big, 1], *[[t, 2] for t in good]]
    )
    body = "\ufeff" + out.getvalue()
    csv_source.write_bytes((body + "bad\x00cell,99\n").encode())
    second = await run_job(
        env,
        stack,
        LabelDatasetInput(dataset=dataset, source=str(csv_source), task="sentiment"),
        f"label:{dataset}:csv",
    )
    # The big field is over the task's character limit: refused by name, not by csv.Error.
    refused = await rows(
        runtime,
        "SELECT line, reason FROM rejected_record WHERE job_id = :j ORDER BY line",
        j=f"label:{dataset}:csv",
    )
    assert [line for line, _ in refused] == [2, body.count("\n") + 1]
    assert "over the task's limit" in refused[0][1] and "NUL" in refused[1][1]
    assert second.items + second.duplicates == len(good)


async def test_a_record_the_catalog_refuses_is_quarantined_and_the_rest_labeled(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    """Whatever the parser lets through, a row PostgreSQL refuses costs only that row."""
    from catalog import db

    dataset = new_dataset()
    fn = f"refuse_{dataset}"
    owner = db.make_engine(stack.owner_url, pool_size=1)  # the app role may not add triggers
    async with owner.begin() as conn:
        await conn.execute(
            text(
                f"CREATE FUNCTION {fn}() RETURNS trigger AS $$ BEGIN "
                "IF NEW.text LIKE '%POISON%' THEN "
                "RAISE EXCEPTION 'poisoned row' USING ERRCODE = '22023'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        await conn.execute(
            text(
                f"CREATE TRIGGER {fn} BEFORE INSERT ON item FOR EACH ROW "
                f"WHEN (NEW.dataset = '{dataset}') EXECUTE FUNCTION {fn}()"
            )
        )
    try:
        texts = [r["text"] for r in gold_rows[:40]]
        texts[7] = "a POISON review the catalog refuses"
        source = write_jsonl(tmp_path / "p.jsonl", texts)
        job = f"label:{dataset}:p"
        result = await run_job(
            env,
            stack,
            LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment", chunk_size=8),
            job,
        )
    finally:
        async with owner.begin() as conn:
            await conn.execute(text(f"DROP TRIGGER {fn} ON item"))
            await conn.execute(text(f"DROP FUNCTION {fn}()"))
        await owner.dispose()
    assert (result.items, result.quarantined) == (39, 1)
    assert result.counts.total == 39  # every stored item was labeled: no gap in ordinals
    [(line, reason)] = await rows(
        runtime, "SELECT line, reason FROM rejected_record WHERE job_id = :j", j=job
    )
    assert line == 8 and "the catalog refused it" in reason and "poisoned row" in reason
    ordinals = [
        r[0]
        for r in await rows(
            runtime, "SELECT ordinal FROM job_item WHERE job_id = :j ORDER BY ordinal", j=job
        )
    ]
    assert ordinals == list(range(39))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dataset": "d1", "source": "/tmp/x.jsonl"}, "task"),  # `task` missing
        (
            {"dataset": "d1", "source": "/tmp/x.jsonl", "task": "sentiment", "chunk_size": "big"},
            "chunk_size",
        ),
        ({"dataset": "a/../b", "source": "/tmp/x.jsonl", "task": "sentiment"}, "dataset name"),
        ({"dataset": "d1", "source": "/tmp/x\u0000.jsonl", "task": "sentiment"}, "source"),
        (
            {"dataset": "d1", "source": "/tmp/x.jsonl", "task": "sentiment", "parallelism": 0},
            "parallelism",
        ),
    ],
)
async def test_a_raw_start_with_bad_input_fails_as_bad_input(
    env: WorkflowEnvironment, worker: Worker, stack: Settings, fields: dict[str, Any], message: str
) -> None:
    """`temporal workflow start --input '{...}'`: the workflow fails, naming the field,
    instead of its first task failing to decode forever."""
    with pytest.raises(WorkflowFailureError) as info:
        await env.client.execute_workflow(
            "LabelDataset",
            fields,
            id=f"label:raw:{uuid.uuid4().hex[:8]}",
            task_queue=stack.task_queue,
            execution_timeout=None,
        )
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "BadInput"
    assert message in cause.message


async def test_a_job_id_names_one_source_and_one_run(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    dataset = new_dataset()
    job = f"label:{dataset}:reused"
    first_src = write_jsonl(tmp_path / "a.jsonl", [r["text"] for r in gold_rows[:20]])
    other_src = write_jsonl(tmp_path / "b.jsonl", [r["text"] for r in gold_rows[20:50]])
    first = await run_job(
        env, stack, LabelDatasetInput(dataset=dataset, source=str(first_src), task="sentiment"), job
    )
    before = await rows(runtime, "SELECT items, source, status FROM job WHERE id = :j", j=job)
    for src in (other_src, first_src):  # another source, then the same one after completion
        with pytest.raises(WorkflowFailureError) as info:
            await run_job(
                env,
                stack,
                LabelDatasetInput(dataset=dataset, source=str(src), task="sentiment"),
                job,
            )
        cause = info.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "JobExists"
        assert job in cause.message
    # Nothing of the refused runs was stored against the job; its record is unchanged.
    assert (
        await rows(runtime, "SELECT items, source, status FROM job WHERE id = :j", j=job) == before
    )
    [(n,)] = await rows(runtime, "SELECT count(*) FROM job_item WHERE job_id = :j", j=job)
    assert n == first.items == 20
    [(failed,)] = await rows(
        runtime, "SELECT count(*) FROM audit_event WHERE event_key = :k", k=f"{job}:failed"
    )
    assert failed == 0  # a refused rerun does not mark the completed job failed


# --- reviews ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def job_for_reviews(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    gold_rows: list[dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, LabelDatasetResult, list[str]]:
    import hashlib

    dataset = new_dataset()
    texts = [r["text"] for r in gold_rows[100:110]]
    source = write_jsonl(tmp_path_factory.mktemp("hr") / "r.jsonl", texts)
    result = await run_job(
        env,
        stack,
        LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment"),
        f"label:{dataset}:j",
    )
    return dataset, result, [hashlib.sha256(t.encode()).hexdigest() for t in texts]


async def open_review(
    env: WorkflowEnvironment,
    stack: Settings,
    ctx: tuple[str, LabelDatasetResult, list[str]],
    item: int,
    **extra: Any,
) -> Any:
    # eve is on the item's copy of the roster, but no longer on the roster file.
    _, job, items = ctx
    return await start_review(env.client, stack, job, items[item], ["alice", "eve"], **extra)


async def test_a_negative_change_count_cannot_stop_snapshots(
    env: WorkflowEnvironment,
    stack: Settings,
    job_for_reviews: tuple[str, LabelDatasetResult, list[str]],
) -> None:
    dataset, job, _ = job_for_reviews
    wid = f"dataset:{dataset}"
    handle = await env.client.start_workflow(
        "Dataset",
        DatasetInput(name=dataset, debounce_s=0.1),
        id=wid,
        task_queue=stack.task_queue,
        start_signal="labels_changed",
        start_signal_args=[LabelsChanged(source="mallory", count=-1_000_000)],
    )
    from activities.payloads import SnapshotRef

    for _ in range(100):
        last = await handle.query("last_snapshot", result_type=SnapshotRef | None)  # type: ignore[arg-type]
        if last is not None:
            break
        await asyncio.sleep(0.2)
    assert last is not None and last.version > job.snapshot.version
    await handle.terminate("test over")


async def eventually_runs(env: WorkflowEnvironment, workflow_id: str, at_least: int) -> int:
    """How many runs `workflow_id` has, once it has `at_least` (within a minute)."""
    query = f'WorkflowId = "{workflow_id}"'
    for _ in range(600):
        runs = [w async for w in env.client.list_workflows(query)]
        if len(runs) >= at_least:
            return len(runs)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} still has {len(runs)} run(s)")


async def test_a_flood_of_oversized_signals_stays_bounded_and_the_item_closes(
    env: WorkflowEnvironment,
    stack: Settings,
    runtime: Runtime,
    job_for_reviews: tuple[str, LabelDatasetResult, list[str]],
) -> None:
    handle = await open_review(env, stack, job_for_reviews, 0, history_limit=120)
    big = "n" * 100_000
    for i in range(60):
        who = "mallory" if i % 3 else "ali\x00ce"
        note = "hi" if i % 3 == 1 else big
        await handle.signal("submit_review", signed(who, "x", note))
    # A malformed signal (wrong types) is refused like the others, never failing the item.
    await handle.signal("submit_review", {"reviewer": 7, "label": ["x"]})
    # History grew past the limit: the item continues as new, carrying its reviews. (A review
    # agreed while it does so closes the run instead: tests/unit/test_review_item_workflow.)
    runs = await eventually_runs(env, handle.id, 2)
    receipt = await handle.execute_update(
        "submit_review",
        signed("alice", "positive", "fine"),
        result_type=ReviewReceipt,
    )
    assert receipt.state == "done"
    final = await handle.result()
    refused = [r for r in final.reviews if not r.accepted]
    assert len(refused) == 20 and final.refused_unkept == 41
    assert all(len(r.note) <= 200 and "\x00" not in r.reviewer for r in refused)
    assert any("control character" in r.reason for r in refused)
    assert any("not on the roster" in r.reason for r in refused)
    assert any("note has 100000 characters" in r.reason for r in refused)
    assert final.state == "done" and final.label == "positive" and runs >= 2
    stored = await rows(
        runtime, "SELECT accepted, length(note) FROM review WHERE workflow_id = :w", w=handle.id
    )
    assert len(stored) == 21 and max(n for _, n in stored) <= 200


async def test_bad_updates_are_refused_before_history(
    env: WorkflowEnvironment,
    stack: Settings,
    job_for_reviews: tuple[str, LabelDatasetResult, list[str]],
) -> None:
    handle = await open_review(env, stack, job_for_reviews, 1)
    for sub, why in [
        (signed("alice", "positive", "x\x00y"), "note has a control"),
        (signed("alice", "positive", "z" * 5000), "over the limit"),
        (ReviewSubmission(reviewer="a" * 500, label="positive"), "reviewer id has 500"),
        (signed("alice", "pos\ud800"), "label has a control"),
    ]:
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update("submit_review", sub, result_type=ReviewReceipt)
        assert why in str(info.value.cause)
    history = json.dumps((await handle.fetch_history()).to_json_dict())
    assert "z" * 5000 not in history
    await handle.terminate("test over")


async def test_a_reviewer_removed_from_the_roster_is_refused_at_once(
    env: WorkflowEnvironment,
    stack: Settings,
    runtime: Runtime,
    job_for_reviews: tuple[str, LabelDatasetResult, list[str]],
) -> None:
    handle = await open_review(env, stack, job_for_reviews, 2)
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(
            "submit_review",
            signed("eve", "negative"),
            result_type=ReviewReceipt,
        )
    assert "no longer on the roster" in str(info.value.cause)
    state = await handle.query("state", result_type=ReviewStateView)
    assert state.state == "awaiting" and state.label is None
    await handle.signal("submit_review", signed("eve", "negative"))
    await handle.signal("submit_review", {"reviewer": ["eve"]})  # does not decode
    receipt = await handle.execute_update(
        "submit_review",
        signed("alice", "positive"),
        result_type=ReviewReceipt,
    )
    assert receipt.label == "positive"
    final = await handle.result()
    assert [(r.reviewer, r.accepted) for r in final.reviews] == [
        ("eve", False),
        ("eve", False),
        ("?", False),
        ("alice", True),
    ]
    assert "malformed submission" in final.reviews[2].reason
    assert "reviewer" in final.reviews[2].reason
    stored = await rows(
        runtime,
        "SELECT reviewer, accepted, reason FROM review WHERE workflow_id = :w "
        "ORDER BY submitted_at",
        w=handle.id,
    )
    # Recorded by concurrent handlers: the same rows, in whatever order they committed.
    assert sorted((r, a) for r, a, _ in stored) == [
        ("?", False),
        ("alice", True),
        ("eve", False),
        ("eve", False),
    ]
    assert all("no longer on the roster" in why for r, _, why in stored if r == "eve")


async def test_open_reviews_refuses_a_policy_changed_since_the_job_started(
    runtime: Runtime, job_for_reviews: tuple[str, LabelDatasetResult, list[str]]
) -> None:
    """Review rules come from the pinned bytes, like routing: a changed file is refused."""
    from dataclasses import replace

    from temporalio.testing import ActivityEnvironment

    from activities.payloads import OpenReviewsInput

    dataset, job, _ = job_for_reviews
    inp = OpenReviewsInput(
        job_id=job.job_id,
        dataset=dataset,
        task="sentiment",
        policy=replace(job.policy, sha256="0" * 64),
        chunk=0,
        start=0,
        end=10,
    )
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(runtime.reviews.open_reviews, inp)
    assert info.value.type == "PolicyChanged" and info.value.non_retryable
    assert "changed on disk since the job started" in info.value.message
