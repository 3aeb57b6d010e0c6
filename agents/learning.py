"""Agents that learn from reviewers: a trainable agent (sklearn, centroid, tabular) retrained on
its seed plus accepted human labels, and the k-fold comparison a gate policy judges.

A retrained agent is built exactly as the seed-trained one is (`agents.tasks.build_agents`),
from a training seed: the seed's records, then one record per human label (a human label
replaces a seed record with the same text). Its version is the hash of the fitted artifact,
as always, so the same data gives the same version in any process.

Pure: files only (a scratch folder for the training seeds), no database, no Temporal.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from agents.base import Agent
from agents.tasks import AgentSpec, TaskSpec, build_agents

TRAINABLE = ("sklearn", "centroid", "tabular")
DEFAULT_FOLDS = 5


@dataclass(frozen=True, slots=True)
class Example:
    item_id: str
    text: str
    label: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """k-fold on the human labels: the candidate trained without each fold, the version in
    use as it is, both scored on the fold (an abstention counts as wrong)."""

    items: int
    candidate_accuracy: float
    incumbent_accuracy: float

    def gate_inputs(self) -> dict[str, object]:
        return {
            "heldout.items": self.items,
            "candidate.accuracy": self.candidate_accuracy,
            "incumbent.accuracy": self.incumbent_accuracy,
        }


def trainable(task: TaskSpec) -> list[AgentSpec]:
    return [a for a in task.agents if a.kind in TRAINABLE]


def seed_of(task: TaskSpec, spec: AgentSpec) -> Path:
    return task.path.parent / str(spec.settings.get("seed", ""))


def training_seed(task: TaskSpec, spec: AgentSpec, human: Sequence[Example]) -> bytes:
    """The seed's JSONL records, then the human labels (which win over a seed record with the
    same text), sorted by text: the same labels give the same bytes, whatever their order."""
    records: dict[str, str] = {}
    for line in seed_of(task, spec).read_bytes().decode("utf-8").split("\n"):
        if line.strip():
            record = json.loads(line)
            records[str(record.get("text"))] = str(record.get("label"))
    for ex in human:
        records[ex.text] = ex.label
    return "".join(
        json.dumps({"text": t, "label": records[t]}, ensure_ascii=False) + "\n"
        for t in sorted(records)
    ).encode("utf-8")


def train(
    task: TaskSpec, spec: AgentSpec, human: Sequence[Example], *, scratch: Path, models_dir: Path
) -> Agent:
    """The agent `spec` trained on its seed plus `human` (the artifact lands in models_dir)."""
    data = training_seed(task, spec, human)
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"{spec.name}-{hashlib.sha256(data).hexdigest()[:16]}.jsonl"
    if not path.exists():
        path.write_bytes(data)
    retrained = replace(spec, settings={**spec.settings, "seed": str(path.resolve())})
    try:
        return build_agents(replace(task, agents=(retrained,)), None, models_dir=models_dir)[0]
    finally:
        from agents.sklearn_model import evict_trained

        evict_trained(hashlib.sha256(data).hexdigest())


def fold_of(item_id: str, folds: int) -> int:
    digest = hashlib.sha256(f"learn-fold:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % folds


def compare(
    task: TaskSpec,
    spec: AgentSpec,
    human: Sequence[Example],
    incumbent: Agent,
    *,
    scratch: Path,
    models_dir: Path,
    folds: int = DEFAULT_FOLDS,
) -> Comparison:
    """k-fold over `human` (folds by a hash of the item id)."""
    right_new = right_old = scored = 0
    folds_dir = scratch / "folds"
    for f in range(folds):
        held = [ex for ex in human if fold_of(ex.item_id, folds) == f]
        if not held:
            continue
        rest = [ex for ex in human if fold_of(ex.item_id, folds) != f]
        # Fold models are thrown away with their seeds and artifacts when the folds are done.
        candidate = train(task, spec, rest, scratch=folds_dir, models_dir=folds_dir)
        texts = [ex.text for ex in held]
        right_new += sum(
            v.label == ex.label for v, ex in zip(candidate.predict(texts), held, strict=True)
        )
        right_old += sum(
            v.label == ex.label for v, ex in zip(incumbent.predict(texts), held, strict=True)
        )
        scored += len(held)
    shutil.rmtree(folds_dir, ignore_errors=True)
    return Comparison(
        items=scored,
        candidate_accuracy=right_new / scored if scored else 0.0,
        incumbent_accuracy=right_old / scored if scored else 0.0,
    )


def from_artifact(kind: str, name: str, path: Path, labels: Sequence[str]) -> Agent:
    """A trainable agent loaded from its pickled artifact (its version is re-derived from the
    bytes, so a file that does not hash to its name is refused by the caller's check)."""
    if kind == "sklearn":
        from agents.sklearn_model import SklearnAgent

        return SklearnAgent.from_artifact(name, path, labels)
    if kind == "centroid":
        from agents.centroid import CentroidAgent

        return CentroidAgent.from_artifact(name, path, labels)
    if kind == "tabular":
        from agents.tabular import TabularAgent

        return TabularAgent.from_artifact(name, path, labels)
    raise ValueError(f"agent kind {kind!r} is not trainable ({', '.join(TRAINABLE)})")
