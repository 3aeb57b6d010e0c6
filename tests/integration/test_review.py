"""The human review loop on a real Temporal dev server, PostgreSQL and SeaweedFS: routed items
get ReviewItem workflows, reviewers answer by update or signal, refusals are explained and
recorded, a closed review becomes a human label and a new snapshot version."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.ids import review_workflow_id
from activities.payloads import (
    LabelDatasetInput,
    LabelDatasetResult,
    PolicyRefPayload,
    ReviewerGrant,
    ReviewItemInput,
    ReviewReceipt,
    ReviewRulesPayload,
    ReviewStateView,
    ReviewSubmission,
)
from activities.review import is_gold_check
from tests.helpers import write_jsonl
from worker.main import Runtime, s3_target
from worker.settings import Settings

T = TypeVar("T")

ROSTER = [
    ReviewerGrant(id="alice", cleared=True, groups=["primary"]),
    ReviewerGrant(id="bob", cleared=True, groups=["primary"]),
    ReviewerGrant(id="dana", cleared=False, groups=["primary"]),
    ReviewerGrant(id="carol", cleared=True, groups=["senior"]),
]


async def rows(runtime: Runtime, sql: str, **params: object) -> list[tuple[object, ...]]:
    async with runtime.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(sql), params)).all()]


async def eventually(check: Callable[[], Awaitable[T]], within: float = 15.0) -> T:
    """Poll `check` until it returns something truthy, or give its last answer."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def routed(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, list[str], dict[str, str], LabelDatasetResult]:
    """A real job whose human_review items each got a ReviewItem workflow."""
    dataset = f"rev{uuid.uuid4().hex[:6]}"
    chosen = gold_rows[:60]
    source = write_jsonl(tmp_path_factory.mktemp("rev") / "r.jsonl", [r["text"] for r in chosen])
    result = await env.client.execute_workflow(
        "LabelDataset",
        LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment"),
        id=f"label:{dataset}:j1",
        task_queue=stack.task_queue,
        result_type=LabelDatasetResult,
    )
    import hashlib

    gold = {hashlib.sha256(r["text"].encode()).hexdigest(): r["label"] for r in chosen}
    items = [
        str(r[0])
        for r in await rows(
            runtime,
            "SELECT item_id FROM review_task WHERE dataset = :d ORDER BY item_id",
            d=dataset,
        )
    ]
    assert len(items) == result.counts.human_review > 4
    return dataset, items, gold, result


def handle_for(env: WorkflowEnvironment, dataset: str, item: str) -> WorkflowHandle:
    return env.client.get_workflow_handle(
        review_workflow_id(dataset, item), result_type=ReviewStateView
    )


async def submit(
    handle: WorkflowHandle, reviewer: str, label: str, note: str = ""
) -> ReviewReceipt:
    return await handle.execute_update(
        "submit_review",
        ReviewSubmission(reviewer=reviewer, label=label, note=note),
        result_type=ReviewReceipt,
    )


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
        "SELECT reviewer, label, note, via, accepted FROM review WHERE item_id = :i",
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
    from activities.s3 import make_s3_client

    body = (
        make_s3_client(s3_target(stack))
        .get_object(
            Bucket=stack.s3_bucket, Key=f"datasets/{dataset}/labels.jsonl", VersionId=str(latest[1])
        )["Body"]
        .read()
    )
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
    await handle.signal("submit_review", ReviewSubmission(reviewer="mallory", label="positive"))

    async def refused() -> list[tuple[object, ...]]:
        return await rows(
            runtime,
            "SELECT reviewer, accepted, reason FROM review WHERE item_id = :i AND via = 'signal'",
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

    await handle.signal("submit_review", ReviewSubmission(reviewer="bob", label=gold[item]))
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
            runtime, "SELECT item_id FROM review_task WHERE dataset = :d", d=dataset
        )
    ][:200]
    assert len(items) == 200
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
            n=job.counts.auto_accept + 200,
        )
        return found

    assert await eventually(all_in_a_snapshot, within=60)
    versions = await rows(
        runtime,
        "SELECT count(*) FROM snapshot WHERE dataset = :d AND version > :v",
        d=dataset,
        v=job.snapshot.version,
    )
    assert 1 <= int(str(versions[0][0])) <= 25, versions  # 200 reviews, a bounded few versions


async def test_timeout_escalates_then_ends_with_the_policy_outcome(
    stack: Settings,
    runtime: Runtime,
    routed: tuple[str, list[str], dict[str, str], LabelDatasetResult],
) -> None:
    """A day of silence on the time-skipping server: escalation, then quarantine."""
    from temporalio.worker import Worker as TemporalWorker

    from worker.main import WORKFLOWS
    from worker.stack import SEARCH_ATTRIBUTES, find_binary

    dataset, items, _, job = routed
    rules = ReviewRulesPayload(
        timeout_s=3600, escalate_to="senior", escalation_timeout_s=3600, on_timeout="quarantine"
    )

    def item_input(item: str) -> ReviewItemInput:
        return ReviewItemInput(
            dataset=dataset,
            item_id=item,
            job_id=job.job_id,
            task="sentiment",
            labels=["positive", "negative"],
            sensitivity="normal",
            policy=job.policy,
            rule_id="default",
            rules=rules,
            reviewers=ROSTER,
        )

    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(find_binary("temporal-test-server"))
    ) as skipping:
        # The time-skipping server knows no custom search attributes until told.
        from temporalio.api.enums.v1 import IndexedValueType
        from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

        await skipping.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=skipping.client.namespace,
                search_attributes={
                    name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTES
                },
            )
        )
        queue = f"ts-{uuid.uuid4().hex[:6]}"
        async with TemporalWorker(
            skipping.client,
            task_queue=queue,
            workflows=list(WORKFLOWS),
            activities=runtime.activities,
        ):
            silent = await skipping.client.start_workflow(
                "ReviewItem",
                item_input(items[4]),
                id=f"review:ts:{items[4]}",
                task_queue=queue,
                result_type=ReviewStateView,
            )
            expired = await silent.result()  # time skips through both timeouts
            assert expired.state == "expired" and expired.label is None

            answered = await skipping.client.start_workflow(
                "ReviewItem",
                item_input(items[5]),
                id=f"review:ts:{items[5]}",
                task_queue=queue,
                result_type=ReviewStateView,
            )
            await skipping.sleep(3700)
            state = await answered.query("state", result_type=ReviewStateView)
            assert state.state == "escalated"
            await answered.signal(
                "submit_review", ReviewSubmission(reviewer="alice", label="positive")
            )
            await answered.signal(
                "submit_review", ReviewSubmission(reviewer="carol", label="negative")
            )
            done = await answered.result()
    assert (done.state, done.label) == ("done", "negative")
    assert [(r.reviewer, r.accepted) for r in done.reviews] == [("alice", False), ("carol", True)]
    assert "escalated to group 'senior'" in done.reviews[0].reason
    audit = await rows(
        runtime,
        "SELECT kind, payload FROM audit_event WHERE subject = :w AND kind = 'review_expired'",
        w=f"review:ts:{items[4]}",
    )
    assert audit and audit[0][1]["outcome"] == "quarantine"  # type: ignore[index]


async def test_dataset_workflow_carries_label_changes_across_continue_as_new(
    env: WorkflowEnvironment, worker: Worker, stack: Settings, runtime: Runtime
) -> None:
    """One batch per run: every change still becomes a snapshot, none is lost in between."""
    from activities.payloads import DatasetInput, LabelsChanged

    name = f"can{uuid.uuid4().hex[:6]}"
    wid = f"dataset:{name}"
    handle = await env.client.start_workflow(
        "Dataset",
        DatasetInput(name=name, debounce_s=0.2, max_batches_per_run=1),
        id=wid,
        task_queue=stack.task_queue,
        start_signal="labels_changed",
        start_signal_args=[LabelsChanged(source="test-1")],
    )

    async def versions(n: int) -> list[tuple[object, ...]]:
        found = await rows(runtime, "SELECT version FROM snapshot WHERE dataset = :d", d=name)
        return found if len(found) >= n else []

    assert await eventually(lambda: versions(1), within=20)
    # The first run has ended its one batch: this change is the next run's to snapshot.
    await handle.signal("labels_changed", LabelsChanged(source="test-2"))
    assert await eventually(lambda: versions(2), within=20)
    runs = [w async for w in env.client.list_workflows(f'WorkflowId = "{wid}"')]
    assert len(runs) >= 2  # continued as new after its one batch
    await handle.terminate("test done")


async def test_gold_checks_score_each_reviewer(
    env: WorkflowEnvironment,
    worker: Worker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    """Items with a known label, chosen for a check by the task's gold_fraction, carry it into
    their review; a reviewer's answer is scored, and `review list --reviewers` shows it."""
    import hashlib

    from agents.tasks import load_task
    from catalog import db
    from tests.helpers import cli
    from worker.gold import load_gold

    def item_id(r: dict[str, str]) -> str:
        return hashlib.sha256(r["text"].encode()).hexdigest()

    task = load_task(stack.tasks_dir, "sentiment")
    assert task.gold_fraction == 0.1
    # Known labels for 300 items, 40 of them chosen for checks and 40 not.
    pool = gold_rows[1000:1300]
    checked = [r for r in pool if is_gold_check(item_id(r), task.gold_fraction)][:40]
    unchecked = [r for r in pool if not is_gold_check(item_id(r), task.gold_fraction)][:40]
    gold_file = tmp_path / "gold.jsonl"
    gold_file.write_text("".join(json.dumps(r) + "\n" for r in pool))
    assert (await load_gold(runtime.engine, task, gold_file, actor="test")).loaded == len(pool)

    dataset = f"gold{uuid.uuid4().hex[:6]}"
    source = write_jsonl(tmp_path / "items.jsonl", [r["text"] for r in checked + unchecked])
    await env.client.execute_workflow(
        "LabelDataset",
        LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment"),
        id=f"label:{dataset}:j1",
        task_queue=stack.task_queue,
        result_type=LabelDatasetResult,
    )
    tasks = {
        str(i): g
        for i, g in await rows(
            runtime, "SELECT item_id, gold_label FROM review_task WHERE dataset = :d", d=dataset
        )
    }
    known = {item_id(r): r["label"] for r in pool}
    on_checked = [i for i in tasks if i in {item_id(r) for r in checked}]
    assert len(on_checked) >= 2 and len(tasks) > len(on_checked)
    assert all(tasks[i] == known[i] for i in on_checked)
    assert all(tasks[i] is None for i in tasks if i not in on_checked)

    async with runtime.engine.connect() as conn:
        before = await db.reviewer_stats(conn)
    right, wrong = on_checked[:2]
    flipped = {"positive": "negative", "negative": "positive"}
    await submit(handle_for(env, dataset, right), "alice", known[right])
    await submit(handle_for(env, dataset, wrong), "bob", flipped[known[wrong]])
    plain = next(i for i in tasks if i not in on_checked)
    await submit(handle_for(env, dataset, plain), "carol", "positive")
    async with runtime.engine.connect() as conn:
        after = await db.reviewer_stats(conn)

    def delta(who: str, key: str) -> int:
        return after[who][key] - before.get(who, {}).get(key, 0)

    assert (delta("alice", "gold"), delta("alice", "correct")) == (1, 1)
    assert (delta("bob", "gold"), delta("bob", "correct")) == (1, 0)
    assert (delta("carol", "gold"), delta("carol", "accepted")) == (0, 1)

    shown = cli(stack, "review", "list", "--reviewers")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    bob = next(line for line in shown.stdout.splitlines() if "│ bob " in line)
    g, c = after["bob"]["gold"], after["bob"]["correct"]
    assert f"{c / g:.0%} ({c}/{g})" in bob
