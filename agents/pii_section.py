"""A task file's `pii:` section, checked and turned into a `agents.pii.PiiSpec`.

    pii:
      entities: [EMAIL_ADDRESS, US_SSN]          # default: agents.pii.DEFAULT_ENTITIES
      modes: {agents: redact, llm: redact, reviewers: mask, exports: redact}
      sensitivity: {US_SSN: confidential}        # entity -> a clearance level (agents/roster.py)
      min_score: {URL: 0.6}                      # entity -> lowest presidio score kept
      salt: ""                                   # keys `hash`, with the task's name

Every problem is a `TaskError` naming the file and the field, as everywhere in a task file;
unknown fields are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.base import TaskError
from agents.pii import (
    CONSUMERS,
    DEFAULT_ENTITIES,
    DEFAULT_MODES,
    ENTITIES,
    MODES,
    RECOGNIZERS,
    PiiSpec,
)
from agents.roster import CLEARANCE

_PII_KEYS = ("entities", "modes", "sensitivity", "min_score", "salt")


def parse_pii(path: Path, raw: object, task: str) -> PiiSpec | None:
    """A task file's `pii:` value checked: None when absent (or `false`), else a PiiSpec;
    every problem a TaskError naming the file and the field."""
    if raw is None or raw is False:
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: field 'pii' must be a mapping with {', '.join(_PII_KEYS)}")
    unknown = sorted(str(k) for k in raw if k not in _PII_KEYS)
    if unknown:
        raise TaskError(
            f"{path}: field 'pii' has unknown field(s) {', '.join(map(repr, unknown))}; "
            f"expected: {', '.join(_PII_KEYS)}"
        )
    entities = raw.get("entities", list(DEFAULT_ENTITIES))
    if not isinstance(entities, list) or not entities:
        raise TaskError(f"{path}: field 'pii.entities' must be a non-empty list of entity names")
    for name in entities:
        _entity(path, "pii.entities", name)
    if len(set(entities)) != len(entities):
        raise TaskError(f"{path}: field 'pii.entities' names an entity twice")
    modes = dict(DEFAULT_MODES)
    for consumer, mode in _mapping(path, "pii.modes", raw.get("modes")).items():
        if consumer not in CONSUMERS:
            raise TaskError(
                f"{path}: field 'pii.modes' has unknown consumer {consumer!r}; "
                f"expected: {', '.join(CONSUMERS)}"
            )
        mode = "off" if mode is False else mode  # YAML 1.1 reads a bare `off` as false
        if mode not in MODES:
            raise TaskError(
                f"{path}: field 'pii.modes.{consumer}' must be one of {', '.join(MODES)}, "
                f"got {mode!r}"
            )
        modes[consumer] = mode
    levels: dict[str, str] = {}
    for name, level in _mapping(path, "pii.sensitivity", raw.get("sensitivity")).items():
        _entity(path, "pii.sensitivity", name)
        if name not in entities:
            raise TaskError(f"{path}: field 'pii.sensitivity' maps {name}, not in pii.entities")
        if level not in CLEARANCE:
            raise TaskError(
                f"{path}: field 'pii.sensitivity.{name}' must be one of {', '.join(CLEARANCE)}, "
                f"got {level!r}"
            )
        levels[name] = level
    scores: dict[str, float] = {}
    for name, score in _mapping(path, "pii.min_score", raw.get("min_score")).items():
        _entity(path, "pii.min_score", name)
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 < score <= 1:
            raise TaskError(f"{path}: field 'pii.min_score.{name}' must be a number in (0, 1]")
        scores[name] = float(score)
    salt = raw.get("salt", "")
    if not isinstance(salt, str) or len(salt) > 256:
        raise TaskError(f"{path}: field 'pii.salt' must be a string of at most 256 characters")
    return PiiSpec(
        entities=tuple(entities),
        modes=modes,
        sensitivity=levels,
        min_score=scores,
        task=task,
        salt=salt,
    )


def _entity(path: Path, where: str, name: object) -> None:
    if not isinstance(name, str) or name not in RECOGNIZERS:
        raise TaskError(
            f"{path}: field '{where}': unknown PII entity {name!r}; known: {', '.join(ENTITIES)}"
        )


def _mapping(path: Path, where: str, raw: object) -> dict[Any, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: field '{where}' must be a mapping")
    return raw
