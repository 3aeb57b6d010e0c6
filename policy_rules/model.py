"""What a loaded policy is: its ref, rules, review rules, and how it decides.

Outcomes: a route policy's are OUTCOMES; a gate policy's are GATE_OUTCOMES (`pass` marks a
snapshot training-ready); a drift policy's are DRIFT_OUTCOMES (what a drift check does: none,
alert, sample_review, relabel, retrain).

Invariants:
- `evaluate` never raises. A rule that errors at run time (division by zero, a missing or
  mistyped input) gives the kind's error outcome (`human_review` for a route, `fail` for a
  gate), recording the rule id and the error: a broken rule must never auto-accept an item or
  pass a snapshot. Input problems found before any rule runs are reported under the rule id
  "inputs"; no rule firing gives "default".
- A `PolicyRef` pins the exact bytes: sha256 of the version file, so a recorded decision can
  always be traced to the rules that made it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_rules.cel import coerce, misfit

AUTO_ACCEPT = "auto_accept"
HUMAN_REVIEW = "human_review"
QUARANTINE = "quarantine"
REJECT = "reject"
OUTCOMES = (AUTO_ACCEPT, HUMAN_REVIEW, QUARANTINE, REJECT)
GATE_PASS = "pass"
GATE_FAIL = "fail"
GATE_OUTCOMES = (GATE_PASS, GATE_FAIL)
# A drift policy's outcomes: what a drift check does about what it measured.
DRIFT_NONE = "none"
DRIFT_ALERT = "alert"
DRIFT_OUTCOMES = (DRIFT_NONE, DRIFT_ALERT, "sample_review", "relabel", "retrain")
KINDS = {"route": OUTCOMES, "gate": GATE_OUTCOMES, "drift": DRIFT_OUTCOMES}
# Where an item goes when a rule cannot be evaluated: a person looks at it.
ERROR_OUTCOME = HUMAN_REVIEW
# What a gate says when it cannot be evaluated: not training-ready.
GATE_ERROR_OUTCOME = GATE_FAIL
# What a drift check does when its policy cannot be evaluated: say so, change nothing.
DRIFT_ERROR_OUTCOME = "alert"
MAX_RULE_COST = 10_000
MAX_POLICY_COST = 50_000
MAX_WHEN_CHARS = 4_000
DEFAULT_RULE_ID = "default"
INPUTS_RULE_ID = "inputs"


class PolicyError(ValueError):
    """An invalid or unknown policy; names the file, rule id and line:column where known."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyRef:
    id: str
    version: int
    sha256: str  # of the version file's bytes, full 64 hex

    def __str__(self) -> str:
        return f"{self.id}@{self.version}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    outcome: str
    rule_id: str  # "default" when no rule fired, "inputs" when the inputs were unusable
    error: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Rule:
    id: str
    when: str
    outcome: str
    params: Mapping[str, float | int | str | bool] = field(default_factory=dict)
    reads: tuple[str, ...] = ()  # the declared inputs `when` refers to, in declaration order
    cost: int = 0  # estimated evaluation cost (see `policy_rules.cel`)
    description: str = ""  # its `description`, or the comment right above it in the file


@dataclass(frozen=True, kw_only=True, slots=True)
class ReviewRules:
    """How a routed item's human review closes, from the policy version that routed it."""

    reviewers_needed: int = 1  # agreeing reviews that close an item
    timeout_s: int = 7 * 24 * 3600  # wait for the first reviewer group
    escalate_to: str = ""  # reviewer group asked next when nobody answered ("" = none)
    escalation_timeout_s: int = 24 * 3600
    on_timeout: str = "quarantine"  # final outcome when nobody answered at all
    # The review frontier: at most this many ReviewItem workflows open per dataset; the rest
    # wait in the catalog and open as reviews close, highest priority first.
    open_limit: int = 200
    # Which waiting item a person sees first: "uncertainty" (1 - ensemble.confidence),
    # "random" (a hash of the item id: the baseline) or a CEL number over the inputs.
    priority: str = "uncertainty"


UNCERTAINTY = "uncertainty"
RANDOM = "random"


def random_rank(item_id: str) -> float:
    """A uniform number in [0, 1) from the item id: the same on every run and worker."""
    digest = hashlib.sha256(f"frontier:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Policy:
    """A loaded, fully compiled policy version; immutable and safe to share between threads."""

    ref: PolicyRef
    path: Path
    kind: str
    description: str
    params: Mapping[str, float | int | str | bool]
    inputs: Mapping[str, str]
    rules: tuple[Rule, ...]
    default_outcome: str
    review: ReviewRules

    def __init__(
        self,
        *,
        ref: PolicyRef,
        path: Path,
        description: str,
        params: Mapping[str, float | int | str | bool],
        inputs: Mapping[str, str],
        rules: tuple[Rule, ...],
        default_outcome: str,
        programs: tuple[Any, ...],
        review: ReviewRules | None = None,
        kind: str = "route",
        priority_program: Any = None,
        default_description: str = "",
    ) -> None:
        self.ref = ref
        self.path = path
        self.kind = kind
        self.description = description
        self.params = dict(params)
        self.inputs = dict(inputs)
        self.rules = rules
        self.default_outcome = default_outcome
        self.default_description = default_description
        self.review = review or ReviewRules()
        self.error_outcome = {"gate": GATE_ERROR_OUTCOME, "drift": DRIFT_ERROR_OUTCOME}.get(
            kind, ERROR_OUTCOME
        )
        self._programs = programs
        self._priority_program = priority_program
        # Bound once: every evaluation merges these into the caller's inputs.
        self._param_data = {f"params.{k}": v for k, v in self.params.items()}
        self._rule_data = tuple(
            {f"params.{k}": v for k, v in rule.params.items()} or None for rule in rules
        )

    def describe(self, rule_id: str) -> str:
        """What rule `rule_id` of this version means, for a person: its description (or the
        comment right above it), else its condition and outcome; "" for an id it has not."""
        if rule_id == DEFAULT_RULE_ID:
            return self.default_description or (
                f"no rule matched: the default outcome, {self.default_outcome}"
            )
        if rule_id == INPUTS_RULE_ID:
            return "the inputs did not match what the policy declares"
        rule = next((r for r in self.rules if r.id == rule_id), None)
        if rule is None:
            return ""
        return rule.description or f"when {rule.when}: {rule.outcome}"

    @property
    def cost(self) -> int:
        """The estimated worst-case cost of one evaluation (every rule run)."""
        return sum(rule.cost for rule in self.rules)

    @classmethod
    def load(cls, policies_dir: Path, ref: str) -> Policy:
        """`<id>` (highest version) or `<id>@<version>` from `policies_dir`, compiled."""
        # The loader builds Policy objects, so it imports this module; importing it here, at
        # call time, keeps `Policy.load` without an import cycle.
        from policy_rules.loader import load_policy

        return load_policy(policies_dir, ref)

    def evaluate(
        self, inputs: Mapping[str, object], params: Mapping[str, object] | None = None
    ) -> Decision:
        """The decision on `inputs`; `params` (declared names only: example cases) replaces
        some of the version's param values for this one evaluation."""
        data: dict[str, object] = dict(self._param_data)
        if params:
            data.update({f"params.{k}": v for k, v in params.items()})
        for name, type_name in self.inputs.items():
            if name not in inputs:
                return self._input_error(f"missing input '{name}' ({type_name})")
            value = coerce(inputs[name], type_name)
            if value is None:
                return self._input_error(misfit(name, type_name, inputs[name]))
            data[name] = value
        for rule, program, own in zip(self.rules, self._programs, self._rule_data, strict=True):
            try:
                result = program.eval(data=data if own is None else data | own).value()
            except Exception as exc:  # the engine is foreign code: never let it escape
                return Decision(outcome=self.error_outcome, rule_id=rule.id, error=f"{exc}")
            if result is True:
                return Decision(outcome=rule.outcome, rule_id=rule.id)
            if result is not False:
                # CEL returns errors as values (a status string) rather than raising.
                return Decision(outcome=self.error_outcome, rule_id=rule.id, error=str(result))
        return Decision(outcome=self.default_outcome, rule_id=DEFAULT_RULE_ID)

    def priority(self, item_id: str, inputs: Mapping[str, object]) -> float:
        """How soon a person should see this routed item (higher first), by `review.priority`.
        Never raises: an expression that fails or gives no finite number ranks the item 0."""
        how = self.review.priority
        if how == RANDOM:
            return random_rank(item_id)
        if self._priority_program is None:
            confidence = inputs.get("ensemble.confidence")
            ok = isinstance(confidence, int | float) and math.isfinite(confidence)
            return 1.0 - float(confidence) if ok else 1.0  # type: ignore[arg-type]
        data: dict[str, object] = dict(self._param_data)
        for name, type_name in self.inputs.items():
            value = coerce(inputs.get(name), type_name)
            if value is None:
                return 0.0
            data[name] = value
        try:
            result = self._priority_program.eval(data=data).value()
        except Exception:  # the engine is foreign code: never let it escape
            return 0.0
        if isinstance(result, bool) or not isinstance(result, int | float):
            return 0.0
        return float(result) if math.isfinite(result) else 0.0

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def _input_error(self, message: str) -> Decision:
        return Decision(outcome=self.error_outcome, rule_id=INPUTS_RULE_ID, error=message)
