"""A route policy's `review:` section: how a routed item's human review closes (ReviewItem)
and how it waits its turn (the review frontier: `open_limit`, `priority`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policy_rules.cel import CompileError, compile_when, estimate_cost
from policy_rules.model import (
    MAX_RULE_COST,
    MAX_WHEN_CHARS,
    OUTCOMES,
    RANDOM,
    UNCERTAINTY,
    PolicyError,
    ReviewRules,
)
from policy_rules.yaml_marks import MarkedMapping, pos

REVIEW_KEYS = (
    "reviewers_needed",
    "timeout_s",
    "escalate_to",
    "escalation_timeout_s",
    "on_timeout",
    "open_limit",
    "priority",
)
MAX_OPEN_LIMIT = 10_000


def parse_review(path: Path, raw: MarkedMapping, env: Any) -> tuple[ReviewRules, Any]:
    """The review rules and the compiled priority expression (None for the built-in orders)."""
    if "review" not in raw:
        return ReviewRules(), None
    block = raw["review"]
    if not isinstance(block, MarkedMapping):
        raise PolicyError(f"{path}:{pos(raw, 'review')}: review must be a mapping")
    for key in block:
        if key not in REVIEW_KEYS:
            raise PolicyError(
                f"{path}:{pos(block, key, of_key=True)}: unknown review field '{key}'; "
                f"expected: {', '.join(REVIEW_KEYS)}"
            )
    for key in ("reviewers_needed", "timeout_s", "escalation_timeout_s", "open_limit"):
        value = block.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PolicyError(f"{path}:{pos(block, key)}: review.{key} must be an integer >= 1")
    if block.get("open_limit", 1) > MAX_OPEN_LIMIT:
        raise PolicyError(
            f"{path}:{pos(block, 'open_limit')}: review.open_limit is over the bound "
            f"{MAX_OPEN_LIMIT} (each open item is a workflow; the rest wait in the catalog)"
        )
    if not isinstance(block.get("escalate_to", ""), str):
        raise PolicyError(f"{path}:{pos(block, 'escalate_to')}: review.escalate_to must be text")
    if block.get("on_timeout", "quarantine") not in OUTCOMES:
        raise PolicyError(
            f"{path}:{pos(block, 'on_timeout')}: review.on_timeout must be one of "
            f"{', '.join(OUTCOMES)}"
        )
    rules = ReviewRules(**{k: block[k] for k in REVIEW_KEYS if k in block})
    return rules, _compile_priority(path, block, rules.priority, env)


def _compile_priority(path: Path, block: MarkedMapping, expr: object, env: Any) -> Any:
    where = f"{path}:{pos(block, 'priority')}: review.priority"
    if not isinstance(expr, str) or not expr.strip():
        raise PolicyError(f"{where} must be {UNCERTAINTY!r}, {RANDOM!r} or a CEL number expression")
    if expr.strip() in (UNCERTAINTY, RANDOM):
        return None
    if len(expr) > MAX_WHEN_CHARS or estimate_cost(expr) > MAX_RULE_COST:
        raise PolicyError(f"{where} is over the size or cost bound of a rule")
    try:
        return compile_when(env, expr, numeric=True)
    except CompileError as exc:
        raise PolicyError(f"{where}: {exc}") from exc.__cause__
