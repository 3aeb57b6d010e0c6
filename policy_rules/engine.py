"""Routing policies: versioned YAML files of CEL rules that decide what happens to a label.

This module is the facade callers import; the work is split by concern:

- `policy_rules.model`: outcomes and limits, `PolicyError`, `PolicyRef`, `Decision`, `Rule`,
  `ReviewRules` and `Policy` (load and evaluate; `evaluate` never raises).
- `policy_rules.loader`: finding a version file (`resolve`, `list_policies`), YAML with
  positions, and parsing it into a `Policy` with every check done at load (the file format is
  described there).
- `policy_rules.cel`: the only module that knows the CEL engine (Google's `cel_expr_python`):
  type environment, compiling `when`, the evaluation cost bound, input conversion.
- `policy_rules.cases`: `check_cases`, a policy's example cases.
"""

from __future__ import annotations

from policy_rules.cases import check_cases
from policy_rules.cel import MAX_ENTRIES, MAX_PLUS, MAX_STRING_CHARS, estimate_cost
from policy_rules.loader import list_policies, resolve
from policy_rules.model import (
    DEFAULT_RULE_ID,
    ERROR_OUTCOME,
    GATE_ERROR_OUTCOME,
    GATE_OUTCOMES,
    INPUTS_RULE_ID,
    KINDS,
    MAX_POLICY_COST,
    MAX_RULE_COST,
    MAX_WHEN_CHARS,
    OUTCOMES,
    Decision,
    Policy,
    PolicyError,
    PolicyRef,
    ReviewRules,
    Rule,
)

__all__ = [
    "DEFAULT_RULE_ID",
    "ERROR_OUTCOME",
    "GATE_ERROR_OUTCOME",
    "GATE_OUTCOMES",
    "INPUTS_RULE_ID",
    "KINDS",
    "MAX_ENTRIES",
    "MAX_PLUS",
    "MAX_POLICY_COST",
    "MAX_RULE_COST",
    "MAX_STRING_CHARS",
    "MAX_WHEN_CHARS",
    "OUTCOMES",
    "Decision",
    "Policy",
    "PolicyError",
    "PolicyRef",
    "ReviewRules",
    "Rule",
    "check_cases",
    "estimate_cost",
    "list_policies",
    "resolve",
]
