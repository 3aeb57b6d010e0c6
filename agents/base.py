"""The labeling-agent contract: what an agent is, what it returns, and how it is versioned.

Role: every labeling agent (keyword rules, a trained model, later an LLM) implements `Agent`
and returns one `Vote` per input text. Workflows and activities only ever see this protocol.

Invariants:
- `predict` is deterministic: the same texts give the same votes, in any process.
- `Agent.version` is a content hash of the agent's configuration or trained artifact, so two
  processes with the same inputs report the same version, and a changed config or model is a
  new version. Recorded labels cite `(name, version)`, which makes every label reproducible.
- An abstention is `Vote(label=None, confidence=0.0, ...)`; a voting agent's label is one of
  its task's labels and its confidence lies in [0, 1].
- Nothing here imports Temporal, a database or anything from `worker/`, `activities/`,
  `workflows/`: agents are plain Python and unit-testable on their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

# Rationales are stored next to every label; keep them short enough to read in a table.
MAX_RATIONALE_CHARS = 200


class TaskError(ValueError):
    """A task definition (or an artifact it points to) is invalid.

    Messages name the file and the field or agent at fault. Defined here rather than in
    `agents.tasks` (which re-exports it) so the agent modules can raise it without importing
    the task loader, which imports them.
    """


@dataclass(frozen=True, kw_only=True, slots=True)
class Vote:
    label: str | None  # None = abstain
    confidence: float  # in [0, 1]; 0.0 for an abstention
    rationale: str  # short, human-readable (<= MAX_RATIONALE_CHARS)

    def __post_init__(self) -> None:
        # A malformed vote is a bug in the agent, not bad data: fail loudly at the source.
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")
        if self.label is None and self.confidence != 0.0:
            raise ValueError("an abstention must have confidence 0.0")


@runtime_checkable
class Agent(Protocol):
    name: str
    version: str  # content hash: same config/artifact -> same version, in any process

    def predict(self, texts: Sequence[str]) -> list[Vote]:
        """One vote per text, in order; deterministic."""
        ...


def abstain(rationale: str) -> Vote:
    return Vote(label=None, confidence=0.0, rationale=clip_rationale(rationale))


def clip_rationale(text: str) -> str:
    if len(text) <= MAX_RATIONALE_CHARS:
        return text
    return text[: MAX_RATIONALE_CHARS - 1] + "…"


def content_version(data: bytes) -> str:
    """First 16 hex digits of sha256: short enough to read, long enough not to collide."""
    return hashlib.sha256(data).hexdigest()[:16]


def canonical_json(obj: Any) -> bytes:
    """Key-sorted, whitespace-free JSON: equal configs give equal bytes in any process."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
