"""Human review side effects: open ReviewItem workflows for routed items, record every
reviewer submission, write the agreed label and tell the dataset's workflow.

Idempotent throughout: a review workflow's id is `review:{dataset}:{item}` and starting one
that runs already keeps the running one; review rows are keyed by update id or signal
sequence; the label write skips a label this review already set.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError

from activities import ids
from activities.anchor import no_anchor
from activities.errors import policy_changed
from activities.payloads import (
    LABEL_DATASET,
    REVIEW_STATE,
    CloseReviewInput,
    DatasetInput,
    LabelsChanged,
    OpenReviewsInput,
    RecordReviewInput,
    RecordReviewResult,
    ReviewerGrant,
    ReviewItemInput,
    ReviewRulesPayload,
    VoteView,
)
from agents.roster import cleared, load_roster
from agents.store import TaskStore
from agents.tasks import TaskError
from catalog import db, kinds
from policy_rules.engine import PolicyError
from policy_rules.store import PinnedPolicyChanged, PolicyStore

STARTS_IN_FLIGHT = 16  # concurrent workflow starts: the dev server's SQLite is the limit


def is_gold_check(item_id: str, fraction: float) -> bool:
    """Whether a review task on this item (which has a known label) checks its reviewer.

    Decided by a hash of the item id, so every retry and every job decides the same way, and
    about `fraction` of the items with a known label are chosen. Hashed again, not the id's
    own digits: anything else ordered or split by id (the sample's seed is) stays unrelated.
    """
    digest = hashlib.sha256(f"gold-check:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


@dataclass
class ReviewActivities:
    engine: AsyncEngine
    client: Client
    task_queue: str
    tasks: TaskStore
    policies: PolicyStore
    roster_path: Path
    snapshot_debounce_s: float = 0.5
    anchor: Callable[[], Awaitable[None]] = no_anchor  # the audit head into S3

    @activity.defn(name="open_reviews")
    async def open_reviews(self, inp: OpenReviewsInput) -> int:
        """Start a ReviewItem workflow for each item of the chunk routed to human review."""
        try:
            task = self.tasks.get(inp.task)
            roster = load_roster(self.roster_path)
            policy = self.policies.pinned(inp.policy)  # loaded first, then its bytes checked
        except PinnedPolicyChanged as err:
            raise policy_changed(err) from None
        except (TaskError, PolicyError) as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        rules = ReviewRulesPayload(**asdict(policy.review))
        async with self.engine.connect() as conn:
            routed = await db.routed_items(
                conn, job_id=inp.job_id, dataset=inp.dataset, start=inp.start, end=inp.end
            )
            votes = await db.votes_of(conn, job_id=inp.job_id, item_ids=[r[0] for r in routed])
            known = await db.gold_labels(conn, task=task.name, item_ids=[r[0] for r in routed])
        gold = {i: lbl for i, lbl in known.items() if is_gold_check(i, task.gold_fraction)}
        inputs = [
            ReviewItemInput(
                dataset=inp.dataset,
                item_id=item_id,
                job_id=inp.job_id,
                task=task.name,
                labels=list(task.labels),
                sensitivity=sensitivity,
                policy=inp.policy,
                rule_id=rule_id,
                rules=rules,
                reviewers=[
                    ReviewerGrant(
                        id=r.id, cleared=cleared(r.clearance, sensitivity), groups=list(r.groups)
                    )
                    for r in roster
                    if task.name in r.tasks
                ],
                votes=[
                    VoteView(agent=a, version=v, label=lbl, confidence=c, rationale=why)
                    for a, v, lbl, c, why in votes[item_id]
                ],
                gold_label=gold.get(item_id),
            )
            for item_id, rule_id, sensitivity in routed
        ]
        async with self.engine.begin() as conn:
            await db.open_review_tasks(
                conn,
                [
                    {
                        "dataset": i.dataset,
                        "item_id": i.item_id,
                        "job_id": i.job_id,
                        "workflow_id": ids.review_workflow_id(i.dataset, i.item_id),
                        "state": "awaiting",
                        "rule_id": i.rule_id,
                        "policy_id": i.policy.id,
                        "policy_version": i.policy.version,
                        "policy_sha256": i.policy.sha256,
                        "gold_label": i.gold_label,
                        "opened_at": db.utcnow(),
                    }
                    for i in inputs
                ],
            )
        gate = asyncio.Semaphore(STARTS_IN_FLIGHT)

        async def start(item: ReviewItemInput) -> None:
            async with gate:
                await self.client.start_workflow(
                    ids.REVIEW_ITEM_WORKFLOW,
                    item,
                    id=ids.review_workflow_id(item.dataset, item.item_id),
                    task_queue=self.task_queue,
                    # A retry, or a later job routing the same open item, keeps the running
                    # review; a closed one may be opened again by a later job.
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                    search_attributes=TypedSearchAttributes(
                        [
                            SearchAttributePair(REVIEW_STATE, ids.AWAITING),
                            SearchAttributePair(LABEL_DATASET, item.dataset),
                        ]
                    ),
                    memo={"reviewers": [r.id for r in item.reviewers if r.cleared]},
                )
            activity.heartbeat()

        await asyncio.gather(*(start(i) for i in inputs))
        return len(inputs)

    def _revoked(self, inp: RecordReviewInput) -> str:
        """Why the roster as it is now refuses this reviewer, or ""."""
        if not inp.accepted or not inp.task:
            return ""
        try:
            roster = load_roster(self.roster_path)
        except TaskError as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        who = inp.submission.reviewer
        entry = next((r for r in roster if r.id == who), None)
        if entry is None or inp.task not in entry.tasks:
            return f"reviewer {who!r} is no longer on the roster for task {inp.task!r}"
        if inp.sensitivity and not cleared(entry.clearance, inp.sensitivity):
            return f"reviewer {who!r} no longer has clearance for a {inp.sensitivity!r} item"
        return ""

    @activity.defn(name="record_review")
    async def record_review(self, inp: RecordReviewInput) -> RecordReviewResult | None:
        # Declared optional: histories from before this result existed completed with null.
        sub = inp.submission
        revoked = self._revoked(inp)
        if revoked:
            inp = replace(inp, accepted=False, reason=revoked)
        correct = (
            None if inp.gold_label is None or not inp.accepted else sub.label == inp.gold_label
        )
        async with self.engine.begin() as conn:
            await db.insert_review(
                conn,
                dict(
                    review_key=inp.key,
                    dataset=inp.dataset,
                    item_id=inp.item_id,
                    job_id=inp.job_id,
                    workflow_id=inp.workflow_id,
                    reviewer=sub.reviewer,
                    label=sub.label,
                    note=sub.note,
                    via=inp.via,
                    accepted=inp.accepted,
                    reason=inp.reason or None,
                    gold_label=inp.gold_label,
                    correct=correct,
                    submitted_at=db.utcnow(),
                ),
            )
            await db.append_audit(
                conn,
                key=f"review:{inp.key}",
                actor=sub.reviewer,
                kind=kinds.REVIEW_ACCEPTED if inp.accepted else kinds.REVIEW_REFUSED,
                subject=inp.workflow_id,
                payload={
                    "label": sub.label,
                    "note": sub.note,
                    "via": inp.via,
                    "reason": inp.reason,
                },
            )
        await self.anchor()
        return RecordReviewResult(accepted=inp.accepted, reason=inp.reason)

    @activity.defn(name="close_review")
    async def close_review(self, inp: CloseReviewInput) -> None:
        """Write the agreed label (or the expiry outcome) and tell the Dataset workflow."""
        async with self.engine.begin() as conn:
            if inp.label is not None:
                # Keyed by the review's run: an item reviewed again later gets a new label row.
                await db.set_labels(
                    conn,
                    dataset=inp.dataset,
                    job_id=f"{inp.workflow_id}:{activity.info().workflow_run_id}",
                    labels={inp.item_id: inp.label},
                    source="human",
                    reviewers=inp.reviewers,
                )
            await db.close_review_task(
                conn,
                dataset=inp.dataset,
                item_id=inp.item_id,
                state=inp.state,
                label=inp.label,
                outcome=inp.outcome,
            )
            await db.append_audit(
                conn,
                key=f"{inp.workflow_id}:{activity.info().workflow_run_id}:closed",
                actor=",".join(inp.reviewers) or "labelfabric",
                kind=kinds.review_closed(inp.state),
                subject=inp.workflow_id,
                payload={"label": inp.label, "outcome": inp.outcome, "reviewers": inp.reviewers},
            )
        await self.anchor()
        if inp.label is not None:
            await self.client.start_workflow(
                ids.DATASET_WORKFLOW,
                DatasetInput(name=inp.dataset, debounce_s=self.snapshot_debounce_s),
                id=ids.dataset_workflow_id(inp.dataset),
                task_queue=self.task_queue,
                start_signal="labels_changed",
                start_signal_args=[LabelsChanged(source=inp.workflow_id)],
            )
