"""`label_chunk`: agents vote on a range of a job's items, votes are reconciled, the job's
policy version routes each item, and all of it is recorded in one transaction.

Idempotent: items this job already decided are skipped, and the chunk's rows commit together,
so a worker killed at any instant leaves either the whole chunk or none of it. Agents and
policies are built once per worker process. An agent that raises or answers outside the
label set abstains with the reason; a rule that errors routes the item to human review.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ids
from activities.anchor import no_anchor
from activities.errors import check_pinned
from activities.gates import shift
from activities.payloads import ChunkInput, ChunkResult, OutcomeCounts
from agents.aggregate import (
    DawidSkene,
    Ensemble,
    krippendorff_alpha,
    majority_vote,
    weighted_vote,
)
from agents.base import Agent, Vote, abstain
from agents.tasks import TaskError, TaskSpec, build_agents, load_task, task_names
from catalog import db
from catalog.audit import DECISION_FIELDS, VOTE_FIELDS, VOTE_FIELDS_WITH_RATIONALE, rows_digest
from policy_rules.engine import Decision, Policy, PolicyError

tracer = trace.get_tracer(__name__)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    item_id: str
    votes: list[Vote]
    ensemble: Ensemble
    decision: Decision
    shadow: tuple[Decision, ...] = ()  # the shadow candidates' decisions, in their order


def safe_predict(agent: Agent, labels: Sequence[str], texts: Sequence[str]) -> list[Vote]:
    """An agent's votes, with every failure turned into an abstention that says why."""
    try:
        votes = agent.predict(texts)
    except Exception as err:  # an agent must never crash a chunk
        reason = f"agent error: {type(err).__name__}: {err}"[:200]
        return [Vote(label=None, confidence=0.0, rationale=reason) for _ in texts]
    if len(votes) != len(texts):
        reason = f"agent returned {len(votes)} votes for {len(texts)} items"
        return [Vote(label=None, confidence=0.0, rationale=reason) for _ in texts]
    return [
        v
        if v.label is None or v.label in labels
        else Vote(label=None, confidence=0.0, rationale=f"label {v.label!r} not in label set")
        for v in votes
    ]


def policy_inputs(text: str, ensemble: Ensemble) -> dict[str, Any]:
    return {
        "item.chars": len(text),
        "votes.count": ensemble.votes,
        "votes.abstained": ensemble.abstained,
        "ensemble.label": ensemble.label or "",
        "ensemble.confidence": float(ensemble.confidence),
        "ensemble.agreement": float(ensemble.agreement),
    }


def reliabilities(
    names: Sequence[str], per_agent: Sequence[Sequence[Vote]], combined: Combined
) -> dict[str, float]:
    """Each agent's reliability, by name, as the policy input `agents.reliability`.

    With a Dawid–Skene model (stored or fitted on the chunk): its expected accuracy. Otherwise
    the share of the agent's votes in this chunk that agree with the ensemble's label (0.0
    when it voted on nothing): a rough, chunk-local figure, but one every aggregator has.
    """
    model = combined.model or combined.stored
    if model is not None:
        return {name: acc for name, acc in zip(names, model.accuracies().values(), strict=True)}
    out: dict[str, float] = {}
    for name, votes in zip(names, per_agent, strict=True):
        pairs = [
            (v.label, e.label)
            for v, e in zip(votes, combined.ensembles, strict=True)
            if v.label is not None and e.label is not None
        ]
        out[name] = sum(a == b for a, b in pairs) / len(pairs) if pairs else 0.0
    return out


def label_shift(ensembles: Sequence[Ensemble], reference: dict[str, int] | None) -> float:
    """Total variation distance between the chunk's ensemble labels and `reference` (the
    dataset's latest snapshot's label distribution); 0.0 when either side is empty."""
    return shift(Counter(e.label for e in ensembles if e.label is not None), reference)


async def timed_predict(
    agent: Agent,
    task: TaskSpec,
    texts: Sequence[str],
    beat: Callable[[], None] = lambda: None,
) -> list[Vote]:
    """`safe_predict` with the agent's `timeout_s`; past it, every item abstains and says why.

    `beat` runs every few seconds while the agent works (the activity's heartbeat), so a slow
    agent within its timeout never looks like a dead worker. A Python thread cannot be
    stopped, so the batch goes to the agent in slices and a timed-out agent stops at the
    next slice; its votes are dropped.
    """
    timeout = next((s.timeout_s for s in task.agents if s.name == agent.name), 60.0)
    stop = threading.Event()

    def in_slices() -> list[Vote]:
        # Slices, so a CPU-bound agent past its time stops at the next slice instead of
        # spinning on in the background while the chunk is retried elsewhere.
        votes: list[Vote] = []
        for i in range(0, len(texts), PREDICT_SLICE):
            if stop.is_set():
                break
            votes += safe_predict(agent, task.labels, texts[i : i + PREDICT_SLICE])
        return votes

    work = asyncio.ensure_future(asyncio.to_thread(in_slices))
    deadline = time.monotonic() + timeout
    while not work.done():
        left = deadline - time.monotonic()
        if left <= 0:
            stop.set()
            return [abstain(f"agent timed out after {timeout:g}s") for _ in texts]
        await asyncio.wait({work}, timeout=min(left, BEAT_S))
        beat()
    return work.result()


BEAT_S = 5.0  # heartbeat interval while an agent works: well under the chunk's timeout
PREDICT_SLICE = 64  # items an agent is given at once; its time limit is checked between


# Laplace smoothing of fitted confusion matrices: graded posteriors (see DawidSkene.smoothed).
DS_PSEUDO_COUNT = 1.0


@dataclass(frozen=True, slots=True)
class Combined:
    """The chunk's ensembles, the aggregator that made them and, for Dawid–Skene, the model."""

    ensembles: list[Ensemble]
    method: str  # majority_vote | weighted_vote | dawid_skene@VERSION
    model: DawidSkene | None  # fitted on this chunk (to be stored)
    alpha: float  # Krippendorff's alpha over the chunk's votes; NaN when nothing to compare
    stored: DawidSkene | None = None  # the calibrated model used instead of fitting

    def alpha_or(self, default: float | None) -> float | None:
        return default if math.isnan(self.alpha) else self.alpha


def combine(
    task: TaskSpec,
    keys: Sequence[str],
    per_agent: Sequence[Sequence[Vote]],
    stored: DawidSkene | None = None,
) -> Combined:
    """Aggregate each item's votes with the task's aggregator.

    Dawid–Skene uses `stored` (the model `labelfabric calibrate` fitted and named in the
    policy version, whose posteriors its threshold was chosen on) when there is one;
    otherwise it is fitted on this chunk's votes (unsupervised: it needs no gold), stored and
    cited by version.
    """
    items = len(per_agent[0]) if per_agent else 0
    by_item = [[votes[i] for votes in per_agent] for i in range(items)]
    matrix = [[v.label for v in votes] for votes in by_item]
    alpha = krippendorff_alpha(matrix) if items else math.nan
    if task.aggregator == "dawid_skene" and stored is not None:
        return Combined(
            [stored.ensemble(v) for v in by_item],
            f"dawid_skene@{stored.version}",
            None,
            alpha,
            stored,
        )
    if task.aggregator == "dawid_skene" and any(lbl is not None for row in matrix for lbl in row):
        model = DawidSkene.fit(task.labels, keys, matrix).smoothed(DS_PSEUDO_COUNT)
        return Combined(
            [model.ensemble(v) for v in by_item], f"dawid_skene@{model.version}", model, alpha
        )
    if task.aggregator == "weighted_vote":
        return Combined([weighted_vote(v) for v in by_item], "weighted_vote", None, alpha)
    return Combined([majority_vote(v) for v in by_item], "majority_vote", None, alpha)


@dataclass
class LabelingActivities:
    engine: AsyncEngine
    tasks_dir: Path
    policies_dir: Path
    models_dir: Path
    _tasks: dict[str, TaskSpec] = field(default_factory=dict)
    _agents: dict[tuple[str, str], Agent] = field(default_factory=dict)
    _policies: dict[tuple[str, int], Policy] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _reliabilities: dict[str, DawidSkene] = field(default_factory=dict)  # by model version
    anchor: Callable[[], Awaitable[None]] = no_anchor  # the audit head into S3

    async def warm(self) -> None:
        """Build every known task's agents now, at worker start, not in a job's first chunk.

        A task that fails to load or build is logged and left for its jobs to report: one
        bad task file never keeps a worker from serving the others.
        """
        for name in task_names(self.tasks_dir):
            try:
                task = load_task(self.tasks_dir, name)
                async with self._lock:
                    await self._build(task.name, [a.name for a in task.agents])
            except Exception as err:  # whatever is wrong with one task, serve the others
                log.warning("task %s: agents not built at start: %s", name, err)

    async def _build(self, task_name: str, names: Sequence[str]) -> tuple[TaskSpec, list[Agent]]:
        """The task and its named agents; each agent is built once per process. Needs _lock."""
        try:
            if task_name not in self._tasks:
                self._tasks[task_name] = load_task(self.tasks_dir, task_name)
            task = self._tasks[task_name]
            missing = [n for n in names if (task_name, n) not in self._agents]
            if missing:
                built = await asyncio.to_thread(
                    build_agents, task, missing, models_dir=self.models_dir
                )
                self._agents.update({(task_name, a.name): a for a in built})
        except TaskError as err:
            raise ApplicationError(str(err), type=ids.UNKNOWN_TASK, non_retryable=True) from err
        return task, [self._agents[(task_name, n)] for n in names]

    async def _load(self, inp: ChunkInput) -> tuple[TaskSpec, list[Agent], Policy]:
        async with self._lock:  # a model trains once per process, not once per chunk
            task, agents = await self._build(inp.task, inp.agents)
            pkey = (inp.policy.id, inp.policy.version)
            if pkey not in self._policies:
                try:
                    self._policies[pkey] = Policy.load(
                        self.policies_dir, f"{inp.policy.id}@{inp.policy.version}"
                    )
                except PolicyError as err:
                    raise ApplicationError(
                        str(err), type=ids.POLICY_ERROR, non_retryable=True
                    ) from err
        policy = self._policies[pkey]
        if policy.kind != "route":
            raise ApplicationError(
                f"{policy.ref} is a {policy.kind} policy, not a routing policy",
                type=ids.POLICY_ERROR,
                non_retryable=True,
            )
        check_pinned(str(policy.ref), policy.ref.sha256, inp.policy.sha256)
        return task, agents, policy

    @activity.defn(name="label_chunk")
    async def label_chunk(self, inp: ChunkInput) -> ChunkResult:
        task, agents, policy = await self._load(inp)
        async with self.engine.connect() as conn:
            rows = await db.chunk_items(
                conn, job_id=inp.job_id, dataset=inp.dataset, start=inp.start, end=inp.end
            )
            done = await db.decided_outcomes(conn, job_id=inp.job_id, item_ids=[r[0] for r in rows])
            shadows = await self._shadows(conn, policy)
            latest = await db.latest_snapshot(conn, inp.dataset)
        reference = latest.label_distribution if latest is not None else None
        todo = [(item_id, text) for item_id, text in rows if item_id not in done]
        outcomes: list[ItemOutcome] = []
        latency: dict[str, float] = {}
        if todo:
            texts = [text for _, text in todo]
            per_agent: list[list[Vote]] = []
            for agent in agents:
                with tracer.start_as_current_span(
                    "agent.predict",
                    attributes={
                        "agent": agent.name,
                        "agent.version": agent.version,
                        "items": len(texts),
                    },
                ):
                    started = time.perf_counter()
                    per_agent.append(
                        await timed_predict(agent, task, texts, lambda: activity.heartbeat())
                    )
                    latency[agent.name] = (time.perf_counter() - started) * 1000 / len(texts)
                activity.heartbeat(f"{agent.name} voted")
            keys = [f"{a.name}@{a.version}" for a in agents]
            stored = await self._reliability(task, keys, policy)
            with tracer.start_as_current_span("route", attributes={"policy": policy.ref.id}):
                combined = await asyncio.to_thread(combine, task, keys, per_agent, stored)
                context = {
                    "chunk.alpha": combined.alpha_or(-1.0),
                    "agents.reliability": reliabilities(
                        [a.name for a in agents], per_agent, combined
                    ),
                    "drift.label_shift": label_shift(combined.ensembles, reference),
                    "drift.reference_items": sum((reference or {}).values()),
                }
                outcomes = await asyncio.to_thread(
                    self._route, policy, shadows, todo, per_agent, combined, context
                )

        counts = _count(list(done.values()) + [o.decision.outcome for o in outcomes])
        if outcomes:
            await self._record(
                inp, task, agents, policy, shadows, outcomes, combined, latency, counts
            )
            await self.anchor()
        return ChunkResult(chunk=inp.chunk, counts=counts)

    async def _shadows(self, conn: AsyncConnection, policy: Policy) -> list[Policy]:
        """The candidates shadowing this job's policy now (`labelfabric policy shadow`).

        A candidate that no longer loads, or whose file changed since it was attached, is
        logged and left out: a shadow never decides anything, so it must never fail a chunk.
        """
        out: list[Policy] = []
        for row in await db.shadows(conn, policy.ref.id):
            if (row.candidate_id, row.candidate_version) == (policy.ref.id, policy.ref.version):
                continue  # the version deciding: nothing to compare
            ref = f"{row.candidate_id}@{row.candidate_version}"
            key = (row.candidate_id, row.candidate_version)
            try:
                candidate = self._policies.get(key) or Policy.load(self.policies_dir, ref)
            except PolicyError as err:
                log.warning("shadow %s left out: %s", ref, err)
                continue
            self._policies[key] = candidate
            if candidate.ref.sha256 != row.candidate_sha256 or candidate.kind != "route":
                log.warning("shadow %s left out: changed since it was attached", ref)
                continue
            out.append(candidate)
        return out

    async def _reliability(
        self, task: TaskSpec, keys: list[str], policy: Policy
    ) -> DawidSkene | None:
        """The Dawid–Skene model the job's policy version was calibrated with, if it names one
        (param `reliability`, written by `labelfabric calibrate`); None = fit per chunk."""
        version = str(policy.params.get("reliability") or "")
        if task.aggregator != "dawid_skene" or not version:
            return None
        if version not in self._reliabilities:
            async with self.engine.connect() as conn:
                found = await db.reliability(conn, task=task.name, version=version)
            if found is None:
                raise ApplicationError(
                    f"policy {policy.ref} names reliability model {version} for task "
                    f"{task.name}, which is not in the catalog (calibrate on this catalog)",
                    type=ids.POLICY_ERROR,
                    non_retryable=True,
                )
            self._reliabilities[version] = DawidSkene.from_dict(found)
        model = self._reliabilities[version]
        if list(model.agents) != keys:
            raise ApplicationError(
                f"policy {policy.ref} was calibrated for agents {', '.join(model.agents)}; "
                f"this job runs {', '.join(keys)}: calibrate again for these agents",
                type=ids.POLICY_ERROR,
                non_retryable=True,
            )
        return model

    @staticmethod
    def _route(
        policy: Policy,
        shadows: list[Policy],
        todo: list[tuple[str, str]],
        per_agent: list[list[Vote]],
        combined: Combined,
        context: dict[str, Any],
    ) -> list[ItemOutcome]:
        # By position: the map is keyed by name, the votes come in the job's agent order.
        reliability = list(context["agents.reliability"].values())
        out = []
        for i, (item_id, text) in enumerate(todo):
            votes = [agent_votes[i] for agent_votes in per_agent]
            ensemble = combined.ensembles[i]
            support = [
                r
                for r, vote in zip(reliability, votes, strict=True)
                if vote.label is not None and vote.label == ensemble.label
            ]
            inputs = policy_inputs(text, ensemble) | context
            inputs["ensemble.support"] = sum(support) / len(support) if support else 0.0
            decision = policy.evaluate(inputs)
            shadow = tuple(candidate.evaluate(inputs) for candidate in shadows)
            out.append(ItemOutcome(item_id, votes, ensemble, decision, shadow))
        return out

    async def _record(
        self,
        inp: ChunkInput,
        task: TaskSpec,
        agents: list[Agent],
        policy: Policy,
        shadows: list[Policy],
        outcomes: list[ItemOutcome],
        combined: Combined,
        latency: dict[str, float],
        counts: OutcomeCounts,
    ) -> None:
        now = db.utcnow()
        votes = [
            {
                "job_id": inp.job_id,
                "item_id": o.item_id,
                "agent": agent.name,
                "agent_version": agent.version,
                "dataset": inp.dataset,
                "label": vote.label,
                "confidence": vote.confidence,
                "rationale": vote.rationale[:500],
                # No redaction yet, so the agent saw exactly the item's content.
                "input_sha256": o.item_id,
                "chunk": inp.chunk,
                "latency_ms": latency.get(agent.name, 0.0),
            }
            for o in outcomes
            for agent, vote in zip(agents, o.votes, strict=True)
        ]
        decisions = [
            {
                "job_id": inp.job_id,
                "item_id": o.item_id,
                "dataset": inp.dataset,
                "chunk": inp.chunk,
                "policy_id": policy.ref.id,
                "policy_version": policy.ref.version,
                "policy_sha256": policy.ref.sha256,
                "rule_id": o.decision.rule_id,
                "outcome": o.decision.outcome,
                "ensemble_label": o.ensemble.label,
                "ensemble_confidence": o.ensemble.confidence,
                "aggregator": combined.method,
                "error": o.decision.error,
                "decided_at": now,
            }
            for o in outcomes
        ]
        shadow = [
            {
                "job_id": inp.job_id,
                "item_id": o.item_id,
                "candidate_id": candidate.ref.id,
                "candidate_version": candidate.ref.version,
                "candidate_sha256": candidate.ref.sha256,
                "dataset": inp.dataset,
                "policy_id": policy.ref.id,
                "policy_version": policy.ref.version,
                "active_outcome": o.decision.outcome,
                "active_rule": o.decision.rule_id,
                "outcome": d.outcome,
                "rule_id": d.rule_id,
                "error": d.error,
                "decided_at": now,
            }
            for o in outcomes
            for candidate, d in zip(shadows, o.shadow, strict=True)
        ]
        accepted = {
            o.item_id: o.ensemble.label
            for o in outcomes
            if o.decision.outcome == ids.AUTO_ACCEPT and o.ensemble.label
        }
        async with self.engine.begin() as conn:
            if combined.model is not None:
                await db.record_reliability(
                    conn,
                    {
                        "task": task.name,
                        "version": combined.model.version,
                        "method": "dawid_skene",
                        "agents": list(combined.model.agents),
                        "model": combined.model.to_dict(),
                        "fitted_on": f"job:{inp.job_id}:chunk:{inp.chunk}",
                        "items": combined.model.items,
                        "alpha": combined.alpha_or(None),
                        "created_at": now,
                    },
                )
            await db.record_chunk(
                conn,
                dataset=inp.dataset,
                job_id=inp.job_id,
                votes=votes,
                decisions=decisions,
                accepted=accepted,
                shadow=shadow,
            )
            await db.append_audit(
                conn,
                key=f"{inp.job_id}:chunk:{inp.chunk}",
                actor="labelfabric",
                kind="chunk_decided",
                subject=inp.job_id,
                payload={
                    "chunk": inp.chunk,
                    "start": inp.start,
                    "end": inp.end,
                    "policy": f"{policy.ref.id}@{policy.ref.version}",
                    "counts": counts.__dict__,
                    "aggregator": combined.method,
                    "alpha": combined.alpha_or(None),
                    "shadows": [str(c.ref) for c in shadows],
                    # What `labelfabric audit verify` re-hashes from the rows.
                    "decisions_sha256": rows_digest(decisions, DECISION_FIELDS),
                    "votes_sha256": rows_digest(votes, VOTE_FIELDS),
                    "votes_rationale_sha256": rows_digest(votes, VOTE_FIELDS_WITH_RATIONALE),
                },
            )


def _count(outcomes: list[str]) -> OutcomeCounts:
    return OutcomeCounts(
        auto_accept=outcomes.count(ids.AUTO_ACCEPT),
        human_review=outcomes.count(ids.HUMAN_REVIEW),
        quarantine=outcomes.count(ids.QUARANTINE),
        reject=outcomes.count(ids.REJECT),
    )
