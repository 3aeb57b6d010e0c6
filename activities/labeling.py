"""`label_chunk`: agents vote on a range of a job's items, votes are reconciled, the job's
policy version routes each item, and all of it is recorded in one transaction.

Idempotent: items this job already decided are skipped, and the chunk's rows commit together,
so a worker killed at any instant leaves either the whole chunk or none of it. Agents and
policies are built once per worker process. What happens to the votes (timeouts, abstentions,
aggregation, routing) is the pure pipeline in `agents/pipeline.py`; this module is its
adapter: it reads the chunk from the catalog, heartbeats, and writes the rows and the audit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ids, metrics
from activities.anchor import no_anchor
from activities.artifacts import ArtifactStore
from activities.errors import policy_changed
from activities.payloads import ChunkInput, ChunkResult, OutcomeCounts
from agents.aggregate import DawidSkene
from agents.base import Agent, Vote
from agents.pipeline import (
    BEAT_S,
    Combined,
    ItemOutcome,
    agent_inputs,
    agent_keys,
    aggregator_of,
    chunk_rows,
    decide,
    timed_predict,
)
from agents.store import TaskStore
from agents.tasks import TaskError, TaskSpec, build_agents
from catalog import db, kinds
from catalog.audit import DECISION_FIELDS, VOTE_FIELDS, VOTE_FIELDS_WITH_RATIONALE, rows_digest
from policy_rules.engine import Policy, PolicyError
from policy_rules.store import PinnedPolicyChanged, PolicyStore, check_pin

tracer = trace.get_tracer(__name__)
log = logging.getLogger(__name__)


@dataclass
class LabelingActivities:
    engine: AsyncEngine
    tasks: TaskStore
    policies: PolicyStore
    models_dir: Path
    # The spec each task's agents were built from: agents are built once per process, so a
    # task is read once too and its agents and spec never disagree.
    _tasks: dict[str, TaskSpec] = field(default_factory=dict)
    _agents: dict[tuple[str, str], Agent] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _reliabilities: dict[str, DawidSkene] = field(default_factory=dict)  # by model version
    anchor: Callable[[], Awaitable[None]] = no_anchor  # the audit head into S3
    # Promoted agent versions (retrained on reviewers' labels), from S3; None: seed-trained.
    artifacts: ArtifactStore | None = None

    async def warm(self) -> None:
        """Build every known task's agents now, at worker start, not in a job's first chunk.

        A task that fails to load or build is logged and left for its jobs to report: one
        bad task file never keeps a worker from serving the others.
        """
        for name in self.tasks.names():
            try:
                task = self.tasks.get(name)
                async with self._lock:
                    await self._build(task.name, [a.name for a in task.agents])
            except Exception as err:  # whatever is wrong with one task, serve the others
                log.warning("task %s: agents not built at start: %s", name, err)

    async def _build(self, task_name: str, names: Sequence[str]) -> tuple[TaskSpec, list[Agent]]:
        """The task and its named agents; each agent is built once per process. Needs _lock."""
        try:
            if task_name not in self._tasks:
                self._tasks[task_name] = self.tasks.get(task_name)
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
            if self.artifacts is not None:
                agents = await self.artifacts.for_job(self.engine, task, agents, inp.job_id)
        # Compiled once per worker, but the file's bytes are read and checked every chunk.
        try:
            policy = self.policies.resolve(f"{inp.policy.id}@{inp.policy.version}")
        except PolicyError as err:
            raise ApplicationError(str(err), type=ids.POLICY_ERROR, non_retryable=True) from err
        if policy.kind != "route":
            raise ApplicationError(
                f"{policy.ref} is a {policy.kind} policy, not a routing policy",
                type=ids.POLICY_ERROR,
                non_retryable=True,
            )
        try:
            check_pin(policy, inp.policy)
        except PinnedPolicyChanged as err:
            raise policy_changed(err) from None
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
        seen: dict[tuple[str, str], str] = {}
        if todo:
            texts = [text for _, text in todo]
            found, inputs = await _read_as(task, agents, texts)
            per_agent: list[list[Vote]] = []
            for agent, read in zip(agents, inputs, strict=True):
                with tracer.start_as_current_span(
                    "agent.predict",
                    attributes={
                        "agent": agent.name,
                        "agent.version": agent.version,
                        "items": len(texts),
                    },
                ):
                    started = time.perf_counter()
                    per_agent.append(await timed_predict(agent, task, read, activity.heartbeat))
                    latency[agent.name] = (time.perf_counter() - started) * 1000 / len(texts)
                activity.heartbeat(f"{agent.name} voted")
                seen.update(
                    {
                        (agent.name, item_id): hashlib.sha256(
                            text.encode(errors="surrogatepass")
                        ).hexdigest()
                        for (item_id, raw), text in zip(todo, read, strict=True)
                        if text != raw
                    }
                )
            stored = await self._reliability(task, agent_keys(agents), policy)
            with tracer.start_as_current_span("route", attributes={"policy": policy.ref.id}):
                combined, outcomes = await asyncio.to_thread(
                    decide, task, agents, per_agent, todo, policy, shadows, reference, stored, found
                )

        counts = _count(list(done.values()) + [o.decision.outcome for o in outcomes])
        if outcomes:
            await self._record(
                inp, task, agents, policy, shadows, outcomes, combined, latency, counts, seen
            )
            _count_chunk(inp.dataset, policy, agents, latency, outcomes)
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
            try:
                candidate = self.policies.resolve(ref)
            except PolicyError as err:
                log.warning("shadow %s left out: %s", ref, err)
                continue
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
        try:
            method = aggregator_of(task, policy)
        except ValueError as err:
            raise ApplicationError(str(err), type=ids.POLICY_ERROR, non_retryable=True) from err
        if method != "dawid_skene" or not version:
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
        seen: dict[tuple[str, str], str],
    ) -> None:
        rows = chunk_rows(
            job_id=inp.job_id,
            dataset=inp.dataset,
            chunk=inp.chunk,
            task=task.name,
            agents=agents,
            policy=policy,
            shadows=shadows,
            outcomes=outcomes,
            combined=combined,
            latency=latency,
            now=db.utcnow(),
            seen=seen,
        )
        async with self.engine.begin() as conn:
            if rows.reliability is not None:
                await db.record_reliability(conn, rows.reliability)
            await db.record_chunk(
                conn,
                dataset=inp.dataset,
                job_id=inp.job_id,
                votes=rows.votes,
                decisions=rows.decisions,
                accepted=rows.accepted,
                shadow=rows.shadow,
            )
            await db.append_audit(
                conn,
                key=f"{inp.job_id}:chunk:{inp.chunk}",
                actor="labelfabric",
                kind=kinds.CHUNK_DECIDED,
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
                    "decisions_sha256": rows_digest(rows.decisions, DECISION_FIELDS),
                    "votes_sha256": rows_digest(rows.votes, VOTE_FIELDS),
                    "votes_rationale_sha256": rows_digest(rows.votes, VOTE_FIELDS_WITH_RATIONALE),
                },
            )


async def _read_as(
    task: TaskSpec, agents: Sequence[Agent], texts: list[str]
) -> tuple[list[dict[str, int]], list[list[str]]]:
    """`agent_inputs` (each agent's text under the task's `pii:`, each item's PII counts) on a
    thread, heartbeating while detection runs; the texts as they are without `pii:`."""
    if task.pii is None:
        return [{} for _ in texts], [texts for _ in agents]
    work = asyncio.ensure_future(asyncio.to_thread(agent_inputs, task, agents, texts))
    while not work.done():
        await asyncio.wait({work}, timeout=BEAT_S)
        activity.heartbeat("pii")
    return work.result()


def _count_chunk(
    dataset: str,
    policy: Policy,
    agents: Sequence[Agent],
    latency_ms: dict[str, float],
    outcomes: Sequence[ItemOutcome],
) -> None:
    """The chunk's metrics, once its rows are committed: what the vote and decision rows
    say (activities/metrics.py)."""
    ref = f"{policy.ref.id}@{policy.ref.version}"
    metrics.items_labeled(dataset, ref, (o.decision.outcome for o in outcomes))
    for i, agent in enumerate(agents):
        abstained = sum(o.votes[i].label is None for o in outcomes)
        ms = latency_ms.get(agent.name)
        seconds = None if ms is None else ms / 1000
        metrics.agent_voted(f"{agent.name}@{agent.version}", len(outcomes), abstained, seconds)


def _count(outcomes: list[str]) -> OutcomeCounts:
    return OutcomeCounts(
        auto_accept=outcomes.count(ids.AUTO_ACCEPT),
        human_review=outcomes.count(ids.HUMAN_REVIEW),
        quarantine=outcomes.count(ids.QUARANTINE),
        reject=outcomes.count(ids.REJECT),
    )
