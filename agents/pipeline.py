"""The labeling pipeline of one chunk, with no Temporal, database or S3: agents vote on the
items, the votes are reconciled by the task's aggregator, and a routing policy (with any
shadow candidates) decides each item.

An agent that raises or answers outside the label set abstains with the reason; one past its
`timeout_s` abstains too, and says so. A rule that errors routes the item to human review.
`label_chunk` (`activities/labeling.py`) runs this inside the activity and records the rows
`chunk_rows` builds; `labelfabric calibrate` and `eval` and the benchmarks run it in process.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents import pii
from agents.aggregate import DawidSkene, Ensemble, krippendorff_alpha, majority_vote, weighted_vote
from agents.base import Agent, Vote, abstain
from agents.tasks import AGGREGATORS, TaskSpec
from policy_rules.engine import Decision, Policy
from policy_rules.gates import shift
from policy_rules.model import AUTO_ACCEPT, HUMAN_REVIEW

BEAT_S = 5.0  # heartbeat interval while an agent works: well under the chunk's timeout
PREDICT_SLICE = 64  # items an agent is given at once; its time limit is checked between

# Laplace smoothing of fitted confusion matrices: graded posteriors (see DawidSkene.smoothed).
DS_PSEUDO_COUNT = 1.0


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    item_id: str
    votes: list[Vote]
    ensemble: Ensemble
    decision: Decision
    shadow: tuple[Decision, ...] = ()  # the shadow candidates' decisions, in their order
    priority: float | None = None  # a routed item's place in the review frontier


def agent_keys(agents: Sequence[Agent]) -> list[str]:
    """`name@version` of each agent, in order: what a Dawid–Skene model is fitted for."""
    return [f"{a.name}@{a.version}" for a in agents]


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


def aggregator_of(task: TaskSpec, policy: Policy | None) -> str:
    """The aggregator a job uses: the policy version's param `aggregator` (which
    `labelfabric calibrate` chose on its slice) when it sets one, else the task's."""
    chosen = str(policy.params.get("aggregator") or "") if policy is not None else ""
    if not chosen:
        return task.aggregator
    if chosen not in AGGREGATORS:
        raise ValueError(
            f"policy {policy.ref if policy else ''} param aggregator {chosen!r} is not one of "
            f"{', '.join(AGGREGATORS)}"
        )
    return chosen


def combine(
    task: TaskSpec,
    keys: Sequence[str],
    per_agent: Sequence[Sequence[Vote]],
    stored: DawidSkene | None = None,
    aggregator: str | None = None,
) -> Combined:
    """Aggregate each item's votes with `aggregator` (by default the task's).

    Dawid–Skene uses `stored` (the model `labelfabric calibrate` fitted and named in the
    policy version, whose posteriors its threshold was chosen on) when there is one;
    otherwise it is fitted on this chunk's votes (unsupervised: it needs no gold), stored and
    cited by version.
    """
    items = len(per_agent[0]) if per_agent else 0
    by_item = [[votes[i] for votes in per_agent] for i in range(items)]
    matrix = [[v.label for v in votes] for votes in by_item]
    alpha = krippendorff_alpha(matrix) if items else math.nan
    method = aggregator or task.aggregator
    if method == "dawid_skene" and stored is not None:
        return Combined(
            [stored.ensemble(v) for v in by_item],
            f"dawid_skene@{stored.version}",
            None,
            alpha,
            stored,
        )
    if method == "dawid_skene" and any(lbl is not None for row in matrix for lbl in row):
        model = DawidSkene.fit(task.labels, keys, matrix).smoothed(DS_PSEUDO_COUNT)
        return Combined(
            [model.ensemble(v) for v in by_item], f"dawid_skene@{model.version}", model, alpha
        )
    if method == "weighted_vote":
        return Combined([weighted_vote(v) for v in by_item], "weighted_vote", None, alpha)
    return Combined([majority_vote(v) for v in by_item], "majority_vote", None, alpha)


def agent_inputs(
    task: TaskSpec, agents: Sequence[Agent], texts: Sequence[str]
) -> tuple[list[dict[str, int]], list[list[str]]]:
    """What each agent reads of `texts` under the task's `pii:` (`agents/pii.py`): an LLM
    agent the `llm` mode's rewrite, any other the `agents` mode's; without `pii:`, the texts.
    Also each text's PII count per type (the routing input `item.pii`). Detection runs once
    per text, and fails closed (a text it cannot finish is withheld whole)."""
    kinds = {spec.name: spec.kind for spec in task.agents}
    consumers = [pii.consumer_of(kinds.get(a.name, getattr(a, "kind", ""))) for a in agents]
    spans, by_consumer = pii.views(task.pii, texts, consumers)
    return [pii.counts(found) for found in spans], [by_consumer[c] for c in consumers]


def policy_inputs(
    text: str, ensemble: Ensemble, found: Mapping[str, int] | None = None
) -> dict[str, Any]:
    return {
        "item.chars": len(text),
        "item.pii": dict(found or {}),  # PII spans per type (empty without the task's `pii:`)
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


def route(
    policy: Policy,
    shadows: Sequence[Policy],
    todo: Sequence[tuple[str, str]],
    per_agent: Sequence[Sequence[Vote]],
    combined: Combined,
    context: dict[str, Any],
    found: Sequence[Mapping[str, int]] | None = None,
) -> list[ItemOutcome]:
    """Each (item id, text) of `todo` decided by `policy` (and by each shadow candidate) on
    its own inputs plus the chunk-wide `context`, with `ensemble.support` added; `found`:
    each item's PII counts (`agent_inputs`)."""
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
        inputs = policy_inputs(text, ensemble, found[i] if found else None) | context
        inputs["ensemble.support"] = sum(support) / len(support) if support else 0.0
        decision = policy.evaluate(inputs)
        shadow = tuple(candidate.evaluate(inputs) for candidate in shadows)
        rank = policy.priority(item_id, inputs) if decision.outcome == HUMAN_REVIEW else None
        out.append(ItemOutcome(item_id, votes, ensemble, decision, shadow, rank))
    return out


def decide(
    task: TaskSpec,
    agents: Sequence[Agent],
    per_agent: Sequence[Sequence[Vote]],
    todo: Sequence[tuple[str, str]],
    policy: Policy,
    shadows: Sequence[Policy] = (),
    reference: dict[str, int] | None = None,
    stored: DawidSkene | None = None,
    found: Sequence[Mapping[str, int]] | None = None,
) -> tuple[Combined, list[ItemOutcome]]:
    """The agents' votes on `todo` combined (`combine`) and each item routed (`route`), with
    the chunk-wide inputs: Krippendorff's alpha, each agent's reliability and the label shift
    against `reference` (the dataset's latest snapshot's label distribution). `stored`: the
    calibrated Dawid–Skene model to aggregate with, as in `combine`; `found`: each item's PII
    counts, the input `item.pii`."""
    combined = combine(task, agent_keys(agents), per_agent, stored, aggregator_of(task, policy))
    context = {
        "chunk.alpha": combined.alpha_or(-1.0),
        "agents.reliability": reliabilities([a.name for a in agents], per_agent, combined),
        "drift.label_shift": label_shift(combined.ensembles, reference),
        "drift.reference_items": sum((reference or {}).values()),
    }
    return combined, route(policy, shadows, todo, per_agent, combined, context, found)


@dataclass(frozen=True, slots=True)
class ChunkRows:
    """What a decided chunk writes: vote, decision and shadow-decision rows, the labels of
    auto-accepted items (item id → label) and the Dawid–Skene model fitted on it, if any."""

    votes: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    shadow: list[dict[str, Any]]
    accepted: dict[str, str]
    reliability: dict[str, Any] | None


def chunk_rows(
    *,
    job_id: str,
    dataset: str,
    chunk: int,
    task: str,
    agents: Sequence[Agent],
    policy: Policy,
    shadows: Sequence[Policy],
    outcomes: Sequence[ItemOutcome],
    combined: Combined,
    latency: dict[str, float],
    now: datetime,
    seen: Mapping[tuple[str, str], str] | None = None,
) -> ChunkRows:
    """The rows of a decided chunk; `latency` is each agent's milliseconds per item; `seen`:
    (agent, item id) -> sha256 of the text the agent read when it was not the item's own
    (a PII rewrite)."""
    seen = seen or {}
    votes = [
        {
            "job_id": job_id,
            "item_id": o.item_id,
            "agent": agent.name,
            "agent_version": agent.version,
            "dataset": dataset,
            "label": vote.label,
            "confidence": vote.confidence,
            "rationale": vote.rationale[:500],
            # What the agent read: the item's content unless PII was rewritten for it.
            "input_sha256": seen.get((agent.name, o.item_id), o.item_id),
            "chunk": chunk,
            "latency_ms": latency.get(agent.name, 0.0),
        }
        for o in outcomes
        for agent, vote in zip(agents, o.votes, strict=True)
    ]
    decisions = [
        {
            "job_id": job_id,
            "item_id": o.item_id,
            "dataset": dataset,
            "chunk": chunk,
            "policy_id": policy.ref.id,
            "policy_version": policy.ref.version,
            "policy_sha256": policy.ref.sha256,
            "rule_id": o.decision.rule_id,
            "outcome": o.decision.outcome,
            "ensemble_label": o.ensemble.label,
            "ensemble_confidence": o.ensemble.confidence,
            "aggregator": combined.method,
            "error": o.decision.error,
            "priority": o.priority,
            "decided_at": now,
        }
        for o in outcomes
    ]
    shadow = [
        {
            "job_id": job_id,
            "item_id": o.item_id,
            "candidate_id": candidate.ref.id,
            "candidate_version": candidate.ref.version,
            "candidate_sha256": candidate.ref.sha256,
            "dataset": dataset,
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
        if o.decision.outcome == AUTO_ACCEPT and o.ensemble.label
    }
    model = combined.model
    reliability = (
        {
            "task": task,
            "version": model.version,
            "method": "dawid_skene",
            "agents": list(model.agents),
            "model": model.to_dict(),
            "fitted_on": f"job:{job_id}:chunk:{chunk}",
            "items": model.items,
            "alpha": combined.alpha_or(None),
            "created_at": now,
        }
        if model is not None
        else None
    )
    return ChunkRows(votes, decisions, shadow, accepted, reliability)
