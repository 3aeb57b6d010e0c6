"""Re-scoring after a promotion: the task's backlog (items waiting for people or with a review
open, whose current label is not a person's) goes through the newest promoted agents and the
active routing policy as a job of its own (`rescore:{dataset}:{round}`, source "rescore …").
Items the policy now auto-accepts get new votes, decisions and labels (the job names the
agent versions and the policy version), and their review tasks close as `superseded`; each
open ReviewItem is told (`supersede`), checks the catalog, and ends.

Chunks go through `label_chunk`'s own code, so votes, decisions, labels and the audit digest
are written exactly as a job's. Idempotent: the job id comes from the round, the job's items
are inserted once, a decided item is skipped, a closed review task is not closed again.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities import ids
from activities.handoff import wake_frontier
from activities.labeling import LabelingActivities
from activities.payloads import (
    ChunkInput,
    PolicyRefPayload,
    RescoreInput,
    RescoreResult,
)
from agents.store import TaskStore
from agents.tasks import TaskError
from catalog import db, kinds
from policy_rules.engine import Policy, PolicyError
from policy_rules.store import PolicyStore

CHUNK = 500


@dataclass
class RescoreActivities:
    engine: AsyncEngine
    client: Client
    task_queue: str
    labeling: LabelingActivities
    tasks: TaskStore
    policies: PolicyStore

    @activity.defn(name="rescore_backlog")
    async def rescore_backlog(self, inp: RescoreInput) -> RescoreResult:
        async with self.engine.connect() as conn:
            datasets = await db.backlog_datasets(conn, inp.task)
        items = accepted = superseded = 0
        for dataset in datasets:
            n, a, s = await self._dataset(dataset, inp)
            items, accepted, superseded = items + n, accepted + a, superseded + s
        return RescoreResult(
            task=inp.task,
            datasets=len(datasets),
            items=items,
            accepted=accepted,
            superseded=superseded,
        )

    async def _dataset(self, dataset: str, inp: RescoreInput) -> tuple[int, int, int]:
        job_id = f"rescore:{dataset}:{inp.key}"
        async with self.engine.connect() as conn:
            backlog = await db.backlog(conn, dataset)
            if not backlog:
                return 0, 0, 0
            policy_id = Counter(b.policy_id for b in backlog).most_common(1)[0][0]
            active = await db.active_policy(conn, policy_id)
        try:
            task = self.tasks.get(inp.task)
            policy = self.policies.resolve(f"{policy_id}@{active.version}" if active else policy_id)
        except (TaskError, PolicyError) as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        agents = [a.name for a in task.agents]
        async with self.engine.begin() as conn:
            await db.create_rescore_job(
                conn,
                _job_row(job_id, dataset, task.name, policy, agents, inp.reason),
                [b.item_id for b in backlog],
            )
        pin = PolicyRefPayload(
            id=policy.ref.id, version=policy.ref.version, sha256=policy.ref.sha256
        )
        for chunk, start in enumerate(range(0, len(backlog), CHUNK)):
            await self.labeling.label_chunk(
                ChunkInput(
                    job_id=job_id,
                    dataset=dataset,
                    task=task.name,
                    agents=agents,
                    policy=pin,
                    chunk=chunk,
                    start=start,
                    end=min(start + CHUNK, len(backlog)),
                )
            )
            activity.heartbeat(f"{dataset}: {start + CHUNK} of {len(backlog)} re-scored")
        async with self.engine.begin() as conn:
            outcomes = await db.decided_outcomes(
                conn, job_id=job_id, item_ids=[b.item_id for b in backlog]
            )
            now_accepted = sorted(i for i, o in outcomes.items() if o == ids.AUTO_ACCEPT)
            workflows = await db.supersede_reviews(conn, dataset, now_accepted, job_id)
            await db.append_audit(
                conn,
                key=f"{job_id}:superseded",
                actor="labelfabric",
                kind=kinds.REVIEWS_SUPERSEDED,
                subject=f"dataset:{dataset}",
                payload={
                    "job": job_id,
                    "policy": str(policy.ref),
                    "rescored": len(backlog),
                    "accepted": len(now_accepted),
                    "workflows": workflows,
                },
            )
            await db.finish_job(conn, job_id, "completed")
        for workflow_id in workflows:
            with contextlib.suppress(RPCError):  # already closed: nothing left to tell
                await self.client.get_workflow_handle(workflow_id).signal("supersede")
        if now_accepted:
            await wake_frontier(self.client, self.task_queue, dataset)
        return len(backlog), len(now_accepted), len(workflows)


def _job_row(
    job_id: str, dataset: str, task: str, policy: Policy, agents: list[str], reason: str
) -> dict[str, object]:
    return {
        "id": job_id,
        "dataset": dataset,
        "task": task,
        "source": f"rescore ({reason})",
        "policy_id": policy.ref.id,
        "policy_version": policy.ref.version,
        "policy_sha256": policy.ref.sha256,
        "agents": agents,
        "status": "running",
    }
