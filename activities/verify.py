"""Label verification: read a dataset's current labels, find the likely wrong ones
(`agents.label_issues`: confident learning over out-of-fold probabilities), record each once
per label version, queue a review of it (rule `label_issue`) and wake the review frontier.

Idempotent: an issue is keyed by the label version it is about, a queued review by
(dataset, item, verify run); a retried or repeated run queues nothing twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities import ids
from activities.handoff import wake_frontier
from activities.payloads import VerifyInput, VerifyResult
from agents.label_issues import MIN_ITEMS, find_issues
from agents.store import TaskStore
from agents.tasks import TaskError
from catalog import db, kinds


@dataclass
class VerifyActivities:
    engine: AsyncEngine
    client: Client
    task_queue: str
    tasks: TaskStore

    @activity.defn(name="verify_labels")
    async def verify_labels(self, inp: VerifyInput) -> VerifyResult:
        verify_id = activity.info().workflow_id or ids.verify_workflow_id(inp.dataset, "adhoc")
        async with self.engine.connect() as conn:
            task_name = await db.dataset_task(conn, inp.dataset)
            labels = await db.labels_to_verify(conn, inp.dataset)
        if task_name is None:
            raise ApplicationError(
                f"dataset {inp.dataset!r} has no job: nothing to verify",
                type=ids.BAD_INPUT,
                non_retryable=True,
            )
        try:
            task = self.tasks.get(task_name)
        except TaskError as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        if len(labels) < MIN_ITEMS:
            note = f"{len(labels)} current labels: at least {MIN_ITEMS} are needed to judge"
            return VerifyResult(dataset=inp.dataset, checked=len(labels), note=note)
        stray = sorted({r.label for r in labels} - set(task.labels))
        if stray:
            raise ApplicationError(
                f"dataset {inp.dataset!r} has labels outside task {task.name!r}: "
                f"{', '.join(stray[:5])}",
                type=ids.BAD_INPUT,
                non_retryable=True,
            )
        activity.heartbeat("fitting out-of-fold models")
        issues = await asyncio.to_thread(
            find_issues,
            [r.text for r in labels],
            [r.label for r in labels],
            list(task.labels),
            tabular=task.modality != "text",
            folds=inp.folds,
        )
        flagged = [
            db.FlaggedLabel(
                label_id=labels[i.index].label_id,
                item_id=labels[i.index].item_id,
                label=i.label,
                suggested=i.suggested,
                quality=i.quality,
            )
            for i in issues
        ]
        async with self.engine.begin() as conn:
            new = await db.record_label_issues(conn, inp.dataset, verify_id, flagged)
            queued = await db.queue_label_issue_reviews(
                conn, inp.dataset, verify_id, task.name, new
            )
            await db.append_audit(
                conn,
                key=f"{verify_id}:label_issues",
                actor="labelfabric",
                kind=kinds.LABEL_ISSUES,
                subject=f"dataset:{inp.dataset}",
                payload={
                    "checked": len(labels),
                    "flagged": len(flagged),
                    "new": [(f.item_id, f.label, f.suggested, round(f.quality, 4)) for f in new],
                    "queued": queued,
                },
            )
        if queued:
            await wake_frontier(self.client, self.task_queue, inp.dataset)
        return VerifyResult(
            dataset=inp.dataset,
            checked=len(labels),
            flagged=len(flagged),
            new=len(new),
            queued=queued,
        )
