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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.payloads import ChunkInput, ChunkResult, OutcomeCounts
from agents.aggregate import Ensemble, majority_vote
from agents.base import Agent, Vote
from agents.tasks import TaskError, TaskSpec, build_agents, list_tasks, load_task
from catalog import db
from policy_rules.engine import Decision, Policy, PolicyError

tracer = trace.get_tracer(__name__)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    item_id: str
    votes: list[Vote]
    ensemble: Ensemble
    decision: Decision


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

    async def warm(self) -> None:
        """Build every known task's agents now, at worker start, not in a job's first chunk.

        A task that fails to build is logged and left for its first chunk to report.
        """
        for task in list_tasks(self.tasks_dir):
            try:
                async with self._lock:
                    await self._build(task.name, [a.name for a in task.agents])
            except (TaskError, ApplicationError) as err:
                log.warning("task %s: agents not built at start: %s", task.name, err)

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
            raise ApplicationError(str(err), type="UnknownTask", non_retryable=True) from err
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
                        str(err), type="PolicyError", non_retryable=True
                    ) from err
        policy = self._policies[pkey]
        if policy.ref.sha256 != inp.policy.sha256:
            raise ApplicationError(
                f"policy {inp.policy.id}@{inp.policy.version} changed on disk since the job "
                f"started (sha256 {policy.ref.sha256[:12]} != {inp.policy.sha256[:12]}); "
                "released versions are immutable: add a new version instead",
                type="PolicyError",
                non_retryable=True,
            )
        return task, agents, policy

    @activity.defn(name="label_chunk")
    async def label_chunk(self, inp: ChunkInput) -> ChunkResult:
        task, agents, policy = await self._load(inp)
        async with self.engine.connect() as conn:
            rows = await db.chunk_items(
                conn, job_id=inp.job_id, dataset=inp.dataset, start=inp.start, end=inp.end
            )
            done = await db.decided_outcomes(conn, job_id=inp.job_id, item_ids=[r[0] for r in rows])
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
                        await asyncio.to_thread(safe_predict, agent, task.labels, texts)
                    )
                    latency[agent.name] = (time.perf_counter() - started) * 1000 / len(texts)
                activity.heartbeat(f"{agent.name} voted")
            with tracer.start_as_current_span("route", attributes={"policy": policy.ref.id}):
                outcomes = await asyncio.to_thread(self._route, policy, todo, per_agent)

        counts = _count(list(done.values()) + [o.decision.outcome for o in outcomes])
        if outcomes:
            await self._record(inp, agents, policy, outcomes, latency, counts)
        return ChunkResult(chunk=inp.chunk, counts=counts)

    @staticmethod
    def _route(
        policy: Policy, todo: list[tuple[str, str]], per_agent: list[list[Vote]]
    ) -> list[ItemOutcome]:
        out = []
        for i, (item_id, text) in enumerate(todo):
            votes = [agent_votes[i] for agent_votes in per_agent]
            ensemble = majority_vote(votes)
            decision = policy.evaluate(policy_inputs(text, ensemble))
            out.append(ItemOutcome(item_id, votes, ensemble, decision))
        return out

    async def _record(
        self,
        inp: ChunkInput,
        agents: list[Agent],
        policy: Policy,
        outcomes: list[ItemOutcome],
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
                "aggregator": o.ensemble.method,
                "error": o.decision.error,
                "decided_at": now,
            }
            for o in outcomes
        ]
        accepted = {
            o.item_id: o.ensemble.label
            for o in outcomes
            if o.decision.outcome == "auto_accept" and o.ensemble.label
        }
        async with self.engine.begin() as conn:
            await db.record_chunk(
                conn,
                dataset=inp.dataset,
                job_id=inp.job_id,
                votes=votes,
                decisions=decisions,
                accepted=accepted,
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
                },
            )


def _count(outcomes: list[str]) -> OutcomeCounts:
    return OutcomeCounts(
        auto_accept=outcomes.count("auto_accept"),
        human_review=outcomes.count("human_review"),
        quarantine=outcomes.count("quarantine"),
        reject=outcomes.count("reject"),
    )
