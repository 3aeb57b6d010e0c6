"""Retraining a task's agents on reviewers' labels: one round trains each trainable agent on
its seed plus the accepted human labels (and gold), compares it by k-fold with the version in
use, asks the task's gate policy (`learn.gate`, kind gate) and promotes or refuses it.

Each candidate's artifact goes to S3 by version (`models/{task}/{agent}/{version}.pkl`) and
its verdict, with what it learned from, to `agent_version` and the audit log. Idempotent: a
version is its artifact's hash, recorded once, and the S3 put is skipped when the same
content is there; a retried round repeats nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ids
from activities.anchor import no_anchor
from activities.artifacts import ArtifactStore, model_key
from activities.payloads import AgentOutcome, RetrainRequest, RetrainResult
from activities.s3 import put_once
from agents.base import Agent
from agents.learning import Comparison, Example, compare, seed_of, train, trainable
from agents.store import TaskStore
from agents.tasks import AgentSpec, TaskError, TaskSpec, build_agents
from catalog import db, kinds
from policy_rules.engine import PolicyError
from policy_rules.model import GATE_PASS
from policy_rules.store import PolicyStore

MIN_EXAMPLES = 10  # fewer human labels than this: nothing to learn from yet


@dataclass
class LearningActivities:
    engine: AsyncEngine
    s3: Any
    bucket: str
    tasks: TaskStore
    policies: PolicyStore
    models_dir: Path
    artifacts: ArtifactStore
    anchor: Callable[[], Awaitable[None]] = no_anchor

    @activity.defn(name="retrain_agents")
    async def retrain_agents(self, inp: RetrainRequest) -> RetrainResult:
        retrain_id = f"{activity.info().workflow_id}:{activity.info().workflow_run_id}"
        try:
            task = self.tasks.get(inp.task)
            gate = self.policies.resolve(task.learn_gate)
        except (TaskError, PolicyError) as err:
            raise ApplicationError(str(err), type=ids.BAD_CONFIG, non_retryable=True) from err
        if gate.kind != "gate":
            raise ApplicationError(
                f"task {task.name}: learn.gate {gate.ref} is a {gate.kind} policy, not a gate",
                type=ids.BAD_CONFIG,
                non_retryable=True,
            )
        specs = trainable(task)
        if not specs:
            return RetrainResult(
                task=task.name, note="no trainable agent (sklearn, centroid, tabular)"
            )
        async with self.engine.connect() as conn:
            rows = await db.human_examples(conn, task.name)
            promoted = await db.promoted_versions(conn, task.name)
        rows = [r for r in rows if r[2] in task.labels]
        human = [Example(item_id=r[0], text=r[1], label=r[2]) for r in rows]
        label_ids = sorted(r[3] for r in rows if r[3])  # 0: a gold label, not a label row
        if len(human) < MIN_EXAMPLES:
            note = f"{len(human)} human labels: at least {MIN_EXAMPLES} are needed to learn"
            return RetrainResult(task=task.name, examples=len(human), note=note)
        scratch = Path(self.models_dir) / "training" / task.name
        outcomes = []
        for spec in specs:
            activity.heartbeat(f"retraining {spec.name}")
            incumbent = await self._incumbent(task, spec, promoted.get(spec.name))
            candidate, cmp = await asyncio.to_thread(
                self._train_and_compare, task, spec, human, incumbent, scratch
            )
            if candidate.version == incumbent.version:
                outcomes.append(_outcome(spec, candidate, "unchanged", "", cmp))
                continue
            verdict = gate.evaluate(cmp.gate_inputs())
            state = db.PROMOTED if verdict.outcome == GATE_PASS else db.REFUSED
            learned = _trained_on(task, spec, human, label_ids)
            await self._record(
                task, spec, candidate, learned, cmp, gate.ref, verdict, state, retrain_id
            )
            outcomes.append(_outcome(spec, candidate, state, verdict.rule_id, cmp))
        await self.anchor()
        return RetrainResult(task=task.name, examples=len(human), agents=outcomes)

    def _train_and_compare(
        self, task: TaskSpec, spec: AgentSpec, human: list[Example], incumbent: Agent, scratch: Path
    ) -> tuple[Agent, Comparison]:
        cmp = compare(task, spec, human, incumbent, scratch=scratch, models_dir=self.models_dir)
        candidate = train(task, spec, human, scratch=scratch, models_dir=self.models_dir)
        return candidate, cmp

    async def _incumbent(
        self, task: TaskSpec, spec: AgentSpec, row: db.AgentVersionRow | None
    ) -> Agent:
        """The version in use: the newest promoted, or the seed-trained one."""
        if row is not None:
            return await self.artifacts.load(task, row)
        return (
            await asyncio.to_thread(build_agents, task, [spec.name], models_dir=self.models_dir)
        )[0]

    async def _record(
        self,
        task: TaskSpec,
        spec: AgentSpec,
        candidate: Agent,
        trained_on: dict[str, Any],
        cmp: Comparison,
        gate_ref: Any,
        verdict: Any,
        state: str,
        retrain_id: str,
    ) -> None:
        path = Path(self.models_dir) / f"{spec.name}-{candidate.version}.pkl"
        blob = path.read_bytes()
        key = model_key(task.name, spec.name, candidate.version)
        sha = hashlib.sha256(blob).hexdigest()
        existing, resp = await asyncio.to_thread(
            put_once, self.s3, self.bucket, key, blob, writer=f"retrain:{task.name}", sha=sha
        )
        s3_version = existing or resp["VersionId"]
        gate = {
            "policy": gate_ref.id,
            "version": gate_ref.version,
            "sha256": gate_ref.sha256,
            "rule": verdict.rule_id,
            "error": verdict.error,
            "metrics": cmp.gate_inputs(),
        }
        async with self.engine.begin() as conn:
            new = await db.record_agent_version(
                conn,
                {
                    "task": task.name,
                    "agent": spec.name,
                    "version": candidate.version,
                    "kind": spec.kind,
                    "state": state,
                    "s3_key": key,
                    "s3_version_id": s3_version,
                    "trained_on": trained_on,
                    "gate": gate,
                    "retrain_id": retrain_id,
                    "decided_at": db.utcnow(),
                },
            )
            if new:
                await db.append_audit(
                    conn,
                    key=f"{retrain_id}:{spec.name}:{candidate.version}",
                    actor="labelfabric",
                    kind=kinds.AGENT_PROMOTED if state == db.PROMOTED else kinds.AGENT_REFUSED,
                    subject=f"agent:{task.name}/{spec.name}@{candidate.version}",
                    payload={"trained_on": trained_on, "gate": gate},
                )


def _trained_on(
    task: TaskSpec, spec: AgentSpec, human: list[Example], label_ids: list[int]
) -> dict[str, Any]:
    """What a version learned from: the seed (by sha256), and the human labels by their label
    row ids (each names the review or import that made it), the gold labels by count."""
    seed = seed_of(task, spec)
    return {
        "seed": seed.name,
        "seed_sha256": hashlib.sha256(seed.read_bytes()).hexdigest(),
        "human_labels": len(human),
        "label_ids": label_ids,
        "gold_labels": len(human) - len(label_ids),
        "item_ids_sha256": hashlib.sha256(
            "\n".join(sorted(ex.item_id for ex in human)).encode()
        ).hexdigest(),
    }


def _outcome(
    spec: AgentSpec, candidate: Agent, state: str, rule: str, cmp: Comparison
) -> AgentOutcome:
    return AgentOutcome(
        agent=spec.name,
        version=candidate.version,
        state=state,
        rule=rule,
        candidate_accuracy=cmp.candidate_accuracy,
        incumbent_accuracy=cmp.incumbent_accuracy,
        items=cmp.items,
    )
