"""Keyword / regex labeling functions (Snorkel-style) declared in a task's YAML.

Role: a cheap, transparent, high-precision agent. Each rule maps a label to regex patterns;
a text votes for the label with the most *distinct* matching patterns.

Invariants:
- Patterns are case-insensitive and compiled once, at construction; a pattern that does not
  compile is a `TaskError` naming the task file, the agent and the pattern.
- Patterns run on the `regex` engine (Python `re` syntax), which releases the GIL while it
  matches and takes a timeout: a pattern with catastrophic backtracking cannot spin a
  worker. Each item has `ITEM_BUDGET_S` for all patterns; past it the agent abstains on
  that item, saying which pattern ran out of time.
- Abstains when nothing matches or when the top labels tie (the rules cannot tell).
- Confidence depends only on the margin m = (patterns for the winner) - (patterns for the
  runner-up, 0 if none):  confidence = 1 - 0.5 ** (m + 1), i.e. 0.75, 0.875, 0.9375, ...
  One keyword is weak evidence; each further net keyword halves the remaining doubt.
- `version` = first 16 hex of sha256 of the canonical JSON of the config (labels and rules,
  not the agent's name), so the same rules give the same version in any process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import regex

from agents.base import TaskError, Vote, abstain, canonical_json, clip_rationale, content_version

_RULE_KEYS = frozenset({"label", "patterns"})
ITEM_BUDGET_S = 0.25  # time all patterns together may take on one item


def margin_confidence(margin: int) -> float:
    return 1.0 - 0.5 ** (margin + 1)


class RulesAgent:
    kind = "rules"

    def __init__(
        self,
        name: str,
        labels: Sequence[str],
        rules: Sequence[Mapping[str, object]],
        *,
        source: Path | str | None = None,
    ) -> None:
        self.name = name
        self.labels: tuple[str, ...] = tuple(labels)
        where = f"{source}: " if source is not None else ""
        ctx = f"{where}agent '{name}'"
        normalized: list[dict[str, object]] = []
        # (label, pattern source, compiled regex) in file order, so rationales are stable.
        self._compiled: list[tuple[str, str, regex.Pattern[str]]] = []
        if not isinstance(rules, Sequence) or isinstance(rules, str) or not rules:
            raise TaskError(f"{ctx}: 'rules' must be a non-empty list of {{label, patterns}}")
        for i, rule in enumerate(rules):
            if not isinstance(rule, Mapping):
                raise TaskError(f"{ctx}: rules[{i}] must be a mapping with label and patterns")
            unknown = sorted(set(rule) - _RULE_KEYS)
            if unknown:
                raise TaskError(
                    f"{ctx}: rules[{i}] has unknown field(s) {', '.join(map(repr, unknown))}; "
                    "expected 'label' and 'patterns'"
                )
            label = rule.get("label")
            if label not in self.labels:
                raise TaskError(
                    f"{ctx}: rules[{i}].label {label!r} is not one of the task's labels "
                    f"({', '.join(self.labels)})"
                )
            assert isinstance(label, str)
            patterns = rule.get("patterns")
            if (
                not isinstance(patterns, (list, tuple))
                or not patterns
                or not all(isinstance(p, str) and p for p in patterns)
            ):
                raise TaskError(f"{ctx}: rules[{i}].patterns must be a non-empty list of strings")
            for pattern in patterns:
                try:
                    compiled = regex.compile(pattern, regex.IGNORECASE | regex.VERSION0)
                except (regex.error, ValueError, OverflowError) as exc:
                    raise TaskError(f"{ctx}: pattern {pattern!r} does not compile: {exc}") from exc
                self._compiled.append((label, pattern, compiled))
            normalized.append({"label": label, "patterns": list(patterns)})
        config = {"kind": self.kind, "labels": list(self.labels), "rules": normalized}
        self.version = content_version(canonical_json(config))

    def predict(self, texts: Sequence[str]) -> list[Vote]:
        return [self._vote(text) for text in texts]

    def _vote(self, text: str) -> Vote:
        matched: dict[str, list[str]] = {}
        deadline = time.monotonic() + ITEM_BUDGET_S
        for label, pattern, compiled in self._compiled:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                found = compiled.search(text, timeout=left, concurrent=True)
            except TimeoutError:
                return abstain(
                    clip_rationale(f"rules: pattern /{pattern}/ ran out of time on this item")
                )
            if found:
                matched.setdefault(label, []).append(pattern)
        if not matched:
            return abstain("rules: no pattern matched")
        # Sort by count, then by label name, only to make the rationale order deterministic.
        ranked = sorted(matched.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        top_label, top = ranked[0]
        runner_up = len(ranked[1][1]) if len(ranked) > 1 else 0
        if len(top) == runner_up:
            tied = " vs ".join(f"{label} {_fmt(p)}" for label, p in ranked if len(p) == runner_up)
            return abstain(f"rules: tie {tied}")
        margin = len(top) - runner_up
        rationale = f"rules: {top_label} {_fmt(top)}"
        if runner_up:
            rationale += " vs " + ", ".join(f"{label} {_fmt(p)}" for label, p in ranked[1:])
        return Vote(
            label=top_label,
            confidence=margin_confidence(margin),
            rationale=clip_rationale(rationale),
        )


def _fmt(patterns: list[str]) -> str:
    return "[" + ", ".join(f"/{p}/" for p in patterns) + "]"
