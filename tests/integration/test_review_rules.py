"""Review rules over time and across reviewers: escalation and expiry on the time-skipping
server, the Dataset workflow carrying label changes across continue-as-new, and gold checks
scoring each reviewer."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.payloads import (
    LabelDatasetInput,
    LabelDatasetResult,
    ReviewItemInput,
    ReviewRulesPayload,
    ReviewStateView,
)
from activities.review import is_gold_check
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
            await answered.signal("submit_review", signed("alice", "positive"))
            await answered.signal("submit_review", signed("carol", "negative"))
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

    shown = cli(stack, "review", "list", "--reviewers", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    bob = next(r for r in json.loads(shown.stdout)["reviewers"] if r["reviewer"] == "bob")
    g, c = after["bob"]["gold"], after["bob"]["correct"]
    assert (bob["gold"], bob["correct"], bob["accuracy"]) == (g, c, c / g)
    table = cli(stack, "review", "list", "--reviewers")  # and the table says the same
    assert f"{c / g:.0%}" in next(line for line in table.stdout.splitlines() if "bob" in line)
