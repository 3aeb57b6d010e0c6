"""Label issues on the real stack: a dataset whose imported labels have some flipped; a
VerifyLabels run flags likely wrong labels (confident learning, out-of-fold), each label
version once, and sends them through the review frontier; a reviewer's answer becomes the
current label, and verifying again flags nothing twice."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from activities import ids
from activities.payloads import VerifyInput, VerifyResult
from catalog import db
from tests.helpers import ThreadWorker
from tests.integration.reviewing import eventually, handle_for, label_texts, rows, submit
from worker.main import Runtime
from worker.settings import Settings


async def verify(env: WorkflowEnvironment, stack: Settings, dataset: str) -> VerifyResult:
    return await env.client.execute_workflow(
        ids.VERIFY_WORKFLOW,
        VerifyInput(dataset=dataset),
        id=ids.verify_workflow_id(dataset, uuid.uuid4().hex[:8]),
        task_queue=stack.task_queue,
        result_type=VerifyResult,
    )


async def test_label_issues_round_trip_through_review(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    chosen = gold_rows[:400]
    dataset, _ = await label_texts(env, stack, [r["text"] for r in chosen], tmp_path, prefix="li")
    # The team's own labels, imported: right but for one in twelve, flipped.
    truth = {hashlib.sha256(r["text"].encode()).hexdigest(): r["label"] for r in chosen}
    flipped = set(sorted(truth)[::12])
    other = {"positive": "negative", "negative": "positive"}
    given = {i: other[lbl] if i in flipped else lbl for i, lbl in truth.items()}
    async with runtime.engine.begin() as conn:
        await db.set_labels(
            conn, dataset=dataset, job_id="import:team", labels=given, source="import"
        )

    first = await verify(env, stack, dataset)
    assert first.checked == len(truth) and first.flagged > 0
    assert first.new == first.flagged and first.queued == first.new
    issues = await rows(
        runtime, "SELECT item_id, label, suggested FROM label_issue WHERE dataset = :d", d=dataset
    )
    assert len(issues) == first.flagged
    assert all(lbl == given[str(i)] and s != lbl for i, lbl, s in issues)
    caught = sorted({str(i) for i, _, _ in issues} & flipped)
    assert caught, "no flipped label was flagged"
    queued = await rows(
        runtime,
        "SELECT item_id FROM review_task WHERE dataset = :d AND rule_id = 'label_issue'",
        d=dataset,
    )
    assert {str(r[0]) for r in queued} == {str(i) for i, _, _ in issues}

    # The reviewer puts the flipped label right; it becomes the current (human) label.
    item = caught[0]

    async def review_open() -> bool:
        state = await rows(
            runtime,
            "SELECT state FROM review_task WHERE dataset = :d AND item_id = :i "
            "AND rule_id = 'label_issue'",
            d=dataset,
            i=item,
        )
        return bool(state) and state[0][0] == "awaiting"

    assert await eventually(review_open, within=30)
    receipt = await submit(handle_for(env, dataset, item), "alice", truth[item])
    assert receipt.state == "done"

    async def corrected() -> list[tuple[object, ...]]:
        current = await rows(
            runtime,
            "SELECT label, source FROM label WHERE dataset = :d AND item_id = :i AND is_current",
            d=dataset,
            i=item,
        )
        return current if current and current[0][1] == "human" else []

    assert await eventually(corrected, within=30) == [(truth[item], "human")]

    # Verifying again flags no label version twice, and queues nothing for those flagged.
    second = await verify(env, stack, dataset)
    total = await rows(
        runtime,
        "SELECT count(*), count(DISTINCT label_id) FROM label_issue WHERE dataset = :d",
        d=dataset,
    )
    assert total == [(first.new + second.new, first.new + second.new)]
    again = await rows(
        runtime,
        "SELECT count(*) FROM review_task t JOIN label_issue l ON l.item_id = t.item_id "
        "AND l.dataset = t.dataset AND l.verify_id = t.job_id WHERE t.dataset = :d",
        d=dataset,
    )
    assert again == [(first.queued + second.queued,)]
    audit = await rows(
        runtime,
        "SELECT count(*) FROM audit_event WHERE kind = 'label_issues' AND subject = :s",
        s=f"dataset:{dataset}",
    )
    assert audit == [(2,)]
