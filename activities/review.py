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
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError

from activities import ids, metrics
from activities.anchor import no_anchor
from activities.errors import policy_changed
from activities.handoff import tell_retrain, wake_frontier
from activities.payloads import (
    CloseReviewInput,
    DatasetInput,
    FrontierStatus,
    LabelsChanged,
    OpenReviewsInput,
    PolicyRefPayload,
    RecordReviewInput,
    RecordReviewResult,
    ReviewerGrant,
    ReviewItemInput,
    ReviewRulesPayload,
    TopUpInput,
    VoteView,
    dataset_attributes,
)
from agents.roster import Reviewer, cleared, load_roster
from agents.store import TaskStore
from agents.tasks import TaskError
from catalog import db, kinds
from catalog.frontier import QUEUED
from policy_rules.engine import PolicyError
from policy_rules.store import PinnedPolicyChanged, PolicyStore
from worker.identity import IdentityRing, IdentityRingError, claim_problem

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
    simulated_reviewers: bool = False  # the roster's `sim:` reviewers are on duty
    # The reviewer-identity ring: items opened with its public keys ask for signed claims.
    # None: signed reviews are off (`LABELFABRIC_SIGNED_REVIEWS=0`).
    identity_path: Path | None = None
    anchor: Callable[[], Awaitable[None]] = no_anchor  # the audit head into S3

    @activity.defn(name="open_reviews")
    async def open_reviews(self, inp: OpenReviewsInput) -> int:
        """Queue the chunk's items routed to human review in the dataset's review frontier,
        open what fits under the policy's `review.open_limit` (highest priority first) and
        wake the frontier, which opens the rest as reviews close. Returns the items queued."""
        try:
            task = self.tasks.get(inp.task)
            policy = self.policies.pinned(inp.policy)  # loaded first, then its bytes checked
        except PinnedPolicyChanged as err:
            raise policy_changed(err) from None
        except (TaskError, PolicyError) as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        async with self.engine.connect() as conn:
            routed = await db.routed_items(
                conn, job_id=inp.job_id, dataset=inp.dataset, start=inp.start, end=inp.end
            )
            known = await db.gold_labels(conn, task=task.name, item_ids=[r[0] for r in routed])
        if not routed:
            return 0
        async with self.engine.begin() as conn:
            await db.open_review_tasks(
                conn,
                [
                    {
                        "dataset": inp.dataset,
                        "item_id": item_id,
                        "job_id": inp.job_id,
                        "workflow_id": ids.review_workflow_id(inp.dataset, item_id),
                        "state": QUEUED,
                        "task": task.name,
                        "priority": priority,
                        "rule_id": rule_id,
                        "policy_id": inp.policy.id,
                        "policy_version": inp.policy.version,
                        "policy_sha256": inp.policy.sha256,
                        "gold_label": known.get(item_id)
                        if is_gold_check(item_id, task.gold_fraction)
                        else None,
                        "opened_at": db.utcnow(),
                    }
                    for item_id, rule_id, _, priority in routed
                ],
            )
        await self._top_up(inp.dataset, policy.review.open_limit)
        await wake_frontier(self.client, self.task_queue, inp.dataset)
        return len(routed)

    @activity.defn(name="top_up_reviews")
    async def top_up_reviews(self, inp: TopUpInput) -> FrontierStatus:
        """The frontier's step: open waiting items up to the limit of the policy that routed
        the latest of them."""
        async with self.engine.connect() as conn:
            pin = await db.frontier_policy(conn, inp.dataset)
        limit = 0
        if pin is not None:
            limit = self._policy(PolicyRefPayload(id=pin[0], version=pin[1], sha256=pin[2]))
            if limit:
                await self._top_up(inp.dataset, limit)
        async with self.engine.connect() as conn:
            now = (await db.frontier_counts(conn, inp.dataset)).get(inp.dataset)
        return FrontierStatus(
            dataset=inp.dataset,
            open=now.open if now else 0,
            queued=now.queued if now else 0,
            open_limit=limit,
        )

    def _policy(self, pin: PolicyRefPayload) -> int:
        """The open limit of a pinned policy version; 0 (open nothing) when it cannot be read:
        the waiting items stay queued, and `review list` says why not."""
        try:
            return self.policies.pinned(pin).review.open_limit
        except (PinnedPolicyChanged, PolicyError) as err:
            activity.logger.warning("review frontier: policy %s: %s", pin.id, err)
            return 0

    async def _top_up(self, dataset: str, limit: int) -> int:
        """Choose what fits under `limit` open reviews, start their workflows, mark them open."""
        async with self.engine.begin() as conn:
            chosen = await db.claim_frontier(conn, dataset, limit)
        if not chosen:
            return 0
        try:
            roster = load_roster(self.roster_path, simulated=self.simulated_reviewers)
        except TaskError as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        votes: dict[tuple[str, str], list[tuple[str, str, str | None, float, str]]] = {}
        async with self.engine.connect() as conn:
            for job_id in sorted({r.job_id for r in chosen}):
                items = [r.item_id for r in chosen if r.job_id == job_id]
                for item_id, v in (await db.votes_of(conn, job_id=job_id, item_ids=items)).items():
                    votes[(job_id, item_id)] = v
        inputs: list[ReviewItemInput] = []
        broken: dict[tuple[str, str], str] = {}
        for r in chosen:
            try:
                inputs.append(self._review_input(r, roster, votes[(r.job_id, r.item_id)]))
            except ApplicationError as err:
                # Its task or pinned policy is gone or changed: this one item cannot open,
                # and must not keep the others waiting behind it.
                broken[(r.job_id, r.item_id)] = err.message
        if broken:
            async with self.engine.begin() as conn:
                await db.fail_frontier_rows(conn, dataset, broken)
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
                    search_attributes=dataset_attributes(
                        item.dataset, job=item.job_id, review_state=ids.AWAITING
                    ),
                    # The roster when it opened (encrypted like every memo). `review list`
                    # no longer reads it: it asks the roster as it is now and the catalog.
                    memo={"reviewers": [r.id for r in item.reviewers if r.cleared]},
                )
            activity.heartbeat()

        await asyncio.gather(*(start(i) for i in inputs))
        async with self.engine.begin() as conn:
            await db.mark_frontier_open(conn, dataset, [(i.job_id, i.item_id) for i in inputs])
        return len(inputs)

    def _review_input(
        self,
        row: db.FrontierRow,
        roster: list[Reviewer],
        votes: list[tuple[str, str, str | None, float, str]],
    ) -> ReviewItemInput:
        pin = PolicyRefPayload(
            id=row.policy_id, version=row.policy_version, sha256=row.policy_sha256
        )
        try:
            task = self.tasks.get(row.task or "")
            policy = self.policies.pinned(pin)
        except PinnedPolicyChanged as err:
            raise policy_changed(err) from None
        except (TaskError, PolicyError) as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        rules = {f.name: getattr(policy.review, f.name) for f in fields(ReviewRulesPayload)}
        return ReviewItemInput(
            dataset=row.dataset,
            item_id=row.item_id,
            job_id=row.job_id,
            task=task.name,
            labels=list(task.labels),
            sensitivity=row.sensitivity,
            policy=pin,
            rule_id=row.rule_id,
            rules=ReviewRulesPayload(**rules),
            reviewers=[
                ReviewerGrant(
                    id=r.id, cleared=cleared(r.clearance, row.sensitivity), groups=list(r.groups)
                )
                for r in roster
                if task.name in r.tasks
            ],
            votes=[
                VoteView(agent=a, version=v, label=lbl, confidence=c, rationale=why)
                for a, v, lbl, c, why in votes
            ],
            gold_label=row.gold_label,
            identity=self._public_keys() if self.identity_path else None,
        )

    def _public_keys(self) -> dict[str, str]:
        assert self.identity_path is not None
        try:
            return IdentityRing.load(self.identity_path).public_keys()
        except IdentityRingError as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err

    @activity.defn(name="identity_keys")
    async def identity_keys(self) -> dict[str, str]:
        """The identity ring's public keys now: what an open item takes after a rotation."""
        if self.identity_path is None:
            raise ApplicationError(
                "signed reviews are off on this worker", type=ids.BAD_CONFIG, non_retryable=True
            )
        return self._public_keys()

    async def _tell_learning(self, dataset: str) -> None:
        """One more human label for the task's Retrain workflow, if it learns (`learn.every`)."""
        async with self.engine.connect() as conn:
            task_name = await db.dataset_task(conn, dataset)
        try:
            task = self.tasks.get(task_name or "")
        except TaskError:
            return  # the label is recorded; a task gone since cannot learn from it
        if task.learn_every > 0:
            await tell_retrain(self.client, self.task_queue, task, "labels_added")

    def _revoked(self, inp: RecordReviewInput) -> str:
        """Why the roster as it is now refuses this reviewer, or ""."""
        if not inp.accepted or not inp.task:
            return ""
        try:
            roster = load_roster(self.roster_path, simulated=self.simulated_reviewers)
        except TaskError as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        who = inp.submission.reviewer
        entry = next((r for r in roster if r.id == who), None)
        if entry is None or inp.task not in entry.tasks:
            return f"reviewer {who!r} is no longer on the roster for task {inp.task!r}"
        if inp.sensitivity and not cleared(entry.clearance, inp.sensitivity):
            return f"reviewer {who!r} no longer has clearance for a {inp.sensitivity!r} item"
        if inp.signed:  # the claim against the ring as it is now: a rotated-out key fails
            keys = self._public_keys() if self.identity_path else {}
            now = datetime.now(UTC)
            problem = claim_problem(
                inp.submission.token, keys, reviewer=who, task=inp.task, now=now
            )
            if problem:
                return problem
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
            recorded = await db.insert_review(
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
        if recorded:
            metrics.review_recorded(inp.dataset, sub.reviewer, inp.accepted, correct)
        await self.anchor()
        return RecordReviewResult(accepted=inp.accepted, reason=inp.reason)

    @activity.defn(name="review_superseded")
    async def review_superseded(self, workflow_id: str) -> bool:
        """Whether a re-score closed this review as superseded: what a ReviewItem checks before
        it believes a `supersede` signal (anyone who can reach Temporal can send one)."""
        async with self.engine.connect() as conn:
            return await db.review_superseded(conn, workflow_id)

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
            waited = await db.close_review_task(
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
        metrics.review_closed(inp.dataset, inp.state, waited)
        await self.anchor()
        await wake_frontier(
            self.client, self.task_queue, inp.dataset
        )  # room for the next waiting item
        if inp.label is not None:
            await self._tell_learning(inp.dataset)
            await self.client.start_workflow(
                ids.DATASET_WORKFLOW,
                DatasetInput(name=inp.dataset, debounce_s=self.snapshot_debounce_s),
                id=ids.dataset_workflow_id(inp.dataset),
                task_queue=self.task_queue,
                search_attributes=dataset_attributes(inp.dataset),
                start_signal="labels_changed",
                start_signal_args=[LabelsChanged(source=inp.workflow_id)],
            )
