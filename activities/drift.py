"""A drift check: read the dataset's reference and recent windows from the catalog, compute
the detectors' metrics (`agents.drift`), ask the drift policy what to do, do it, and record
the check and an audit event together.

Actions: `none`; `alert` (the audit event is the alert); `retrain` (asks the task's Retrain
workflow for a round); `sample_review` (queues `sample` recent items in the review frontier,
rule `drift_sample`); `relabel` (one LabelDataset job, reason `drift:<check id>`, over the
window's items whose current label an agent gave; people's labels are never relabelled).
Idempotent: a check is recorded once by its workflow id, and its queued reviews are keyed by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from activities import ids
from activities.handoff import tell_retrain, wake_frontier
from activities.metrics import drift_checked as count_drift
from activities.payloads import (
    DriftCheckInput,
    DriftCheckResult,
    LabelDatasetInput,
    dataset_attributes,
)
from activities.s3 import put_once
from agents.drift import label_shift, mean_confidence, override_rate, tabular_drift, text_auc
from agents.store import TaskStore
from agents.tasks import TaskError, TaskSpec
from catalog import db, kinds
from policy_rules.engine import PolicyError
from policy_rules.model import random_rank
from policy_rules.store import PolicyStore

SAMPLE_RULE = "drift_sample"


@dataclass
class DriftActivities:
    engine: AsyncEngine
    client: Client
    task_queue: str
    tasks: TaskStore
    policies: PolicyStore
    s3: Any = None  # relabel jobs' sources go here, by object version
    bucket: str = ""

    @activity.defn(name="check_drift")
    async def check_drift(self, inp: DriftCheckInput) -> DriftCheckResult:
        info = activity.info()
        # By run: a schedule's triggers in one second share a workflow id, never a run id.
        check_id = f"{info.workflow_id or ids.drift_check_id(inp.dataset)}:{info.workflow_run_id}"
        try:
            policy = self.policies.resolve(inp.policy)
        except PolicyError as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        if policy.kind != "drift":
            raise ApplicationError(
                f"{policy.ref} is a {policy.kind} policy, not a drift policy",
                type=ids.BAD_CONFIG,
                non_retryable=True,
            )
        async with self.engine.connect() as conn:
            task_name = await db.dataset_task(conn, inp.dataset)
            recent = (await db.newest_job_items(conn, inp.dataset))[: inp.window]
            start = min((r.decided_at for r in recent), default=None)
            ref = await db.drift_reference(conn, inp.dataset, inp.reference_version, start)
            before = []
            if ref.cutoff is not None:
                strictly = ref.cutoff == start  # "everything before the window"
                before = await db.decided(conn, inp.dataset, before=ref.cutoff, strictly=strictly)
            in_window = {r.item_id for r in recent}
            before = [r for r in before if r.item_id not in in_window]
            reviews = await db.reviews_of(conn, inp.dataset, [r.item_id for r in recent])
        if task_name is None:
            raise ApplicationError(
                f"dataset {inp.dataset!r} has no job: nothing to check",
                type=ids.BAD_INPUT,
                non_retryable=True,
            )
        try:
            task = self.tasks.get(task_name)
        except TaskError as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        activity.heartbeat("measuring")
        metrics = await asyncio.to_thread(_metrics, task, before, recent, reviews)
        decision = policy.evaluate({k: v for k, v in metrics.items() if v is not None})
        detail = await self._act(decision.outcome, inp, task, recent, check_id)
        stored = {k: (None if v is None or math.isnan(v) else v) for k, v in metrics.items()}
        recorded = False
        async with self.engine.begin() as conn:
            if await db.record_drift_check(
                conn,
                {
                    "id": check_id,
                    "dataset": inp.dataset,
                    "reference": {"description": ref.description, "items": len(before)},
                    "window_items": len(recent),
                    "metrics": stored,
                    "policy_id": policy.ref.id,
                    "policy_version": policy.ref.version,
                    "policy_sha256": policy.ref.sha256,
                    "rule_id": decision.rule_id,
                    "action": decision.outcome,
                    "detail": detail or decision.error,
                    "checked_at": db.utcnow(),
                },
            ):
                await db.append_audit(
                    conn,
                    key=f"{check_id}:checked",
                    actor="labelfabric",
                    kind=kinds.DRIFT_CHECKED,
                    subject=f"dataset:{inp.dataset}",
                    payload={
                        "check": check_id,
                        "metrics": stored,
                        "policy": str(policy.ref),
                        "rule": decision.rule_id,
                        "action": decision.outcome,
                        "detail": detail,
                    },
                )
                recorded = True
        if recorded:  # committed, once per check: activities/metrics.py
            count_drift(inp.dataset, decision.outcome, stored)
        return DriftCheckResult(
            check_id=check_id,
            dataset=inp.dataset,
            reference=ref.description,
            window_items=len(recent),
            metrics=stored,
            policy=str(policy.ref),
            rule=decision.rule_id,
            action=decision.outcome,
            detail=detail or (decision.error or ""),
        )

    async def _act(
        self,
        action: str,
        inp: DriftCheckInput,
        task: TaskSpec,
        recent: list[db.Decided],
        check_id: str,
    ) -> str:
        if action == "retrain":
            asked = await tell_retrain(self.client, self.task_queue, task, "retrain")
            return f"asked {asked} for a round"
        if action == "sample_review":
            chosen = sorted(recent, key=lambda r: -random_rank(f"{check_id}:{r.item_id}"))
            items = [(r.item_id, random_rank(r.item_id)) for r in chosen[: inp.sample]]
            async with self.engine.begin() as conn:
                queued = await db.queue_item_reviews(
                    conn, inp.dataset, check_id, task.name, items, SAMPLE_RULE
                )
            await wake_frontier(self.client, self.task_queue, inp.dataset)
            return f"{queued} recent item(s) queued for review (rule {SAMPLE_RULE})"
        if action == "relabel":
            return await self._relabel(inp, task, recent, check_id)
        return ""

    async def _relabel(
        self, inp: DriftCheckInput, task: TaskSpec, recent: list[db.Decided], check_id: str
    ) -> str:
        """Start one relabel job (a LabelDataset job, reason `drift:<check>`) over the window's
        items whose current label an agent gave: their texts go to S3 as the job's source,
        pinned by object version. Its id comes from the check, so a retry starts nothing new."""
        async with self.engine.connect() as conn:
            affected = await db.agent_labeled(conn, inp.dataset, [r.item_id for r in recent])
            policy = await db.newest_job_policy(conn, inp.dataset) or "route_default"
        if not affected:
            return "relabel decided; no item in the window has an agent's label"
        digest = hashlib.sha256(check_id.encode()).hexdigest()[:16]
        key = f"relabel/{inp.dataset}/{digest}.jsonl"
        body = "".join(json.dumps({task.text_field: text}) + "\n" for _, text in affected)
        data = body.encode()
        existing, put = await asyncio.to_thread(
            put_once,
            self.s3,
            self.bucket,
            key,
            data,
            writer=check_id,
            sha=hashlib.sha256(data).hexdigest(),
            content_type="application/x-ndjson",
        )
        version = existing or put["VersionId"]
        job_id = ids.label_workflow_id(inp.dataset, f"r{digest}")
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await self.client.start_workflow(
                ids.LABEL_DATASET_WORKFLOW,
                LabelDatasetInput(
                    dataset=inp.dataset,
                    source=f"s3://{self.bucket}/{key}?versionId={version}",
                    task=task.name,
                    policy=policy,
                    reason=f"drift:{check_id}",
                ),
                id=job_id,
                task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=dataset_attributes(inp.dataset, job=job_id),
            )
        return f"relabel job {job_id} started over {len(affected)} agent-labeled item(s)"


def _metrics(
    task: TaskSpec,
    before: list[db.Decided],
    recent: list[db.Decided],
    reviews: list[tuple[str, str]],
) -> dict[str, float | None]:
    """The drift policy's inputs (and, for tabular tasks, PSI and KS per feature)."""
    auc = text_auc([r.text for r in before], [r.text for r in recent])
    machine = {r.item_id: r.label for r in recent}
    overrides = override_rate([(human, machine.get(item)) for item, human in reviews])
    drop = (
        mean_confidence([r.confidence for r in before])
        - mean_confidence([r.confidence for r in recent])
        if before and recent
        else 0.0
    )
    metrics: dict[str, float | None] = {
        "window.items": len(recent),
        "reference.items": len(before),
        # No evidence either way reads as no drift (0.5 AUC, no reviews): the policy's
        # window-size rule decides what a window too small means.
        "input.auc": 0.5 if math.isnan(auc) else auc,
        "prediction.label_shift": label_shift(
            Counter(r.label or "" for r in before), Counter(r.label or "" for r in recent)
        ),
        "prediction.confidence_drop": drop,
        "quality.override_rate": -1.0 if math.isnan(overrides) else overrides,
    }
    if task.modality != "text" and before and recent:
        import numpy as np

        from agents.tabular import parse_vector

        try:
            a = np.stack([parse_vector(r.text) for r in before])
            b = np.stack([parse_vector(r.text) for r in recent])
            metrics |= {f"input.{k}": v for k, v in tabular_drift(a, b).items()}
        except ValueError:
            pass  # items that are not all vectors of one length: no per-feature view
    return metrics
