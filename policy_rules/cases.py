"""A policy's example cases (`<id>/cases.yaml`): run them against a version, report failures."""

from __future__ import annotations

from pathlib import Path

import yaml

from policy_rules.loader import read_file
from policy_rules.model import Policy, PolicyError
from policy_rules.yaml_marks import MarkedLoader, MarkedMapping, pos

_CASE_KEYS = ("name", "input", "expect", "versions", "params")


def _params_problem(policy: Policy, fixed: object) -> str:
    """Why a case's `params` cannot apply ("" when they can): declared names, same types."""
    if not isinstance(fixed, dict):
        return "params must map declared param names to values"
    for name, value in fixed.items():
        declared = policy.params.get(name)
        if declared is None:
            return f"param {name!r} is not declared by {policy.ref}"
        if isinstance(declared, float) and isinstance(value, int) and not isinstance(value, bool):
            continue
        if type(value) is not type(declared):
            return f"param {name!r} must be {type(declared).__name__}, got {value!r}"
    return ""


def check_cases(policy: Policy, cases_path: Path) -> list[str]:
    """Run a policy's example cases; returns failure messages ([] = all pass).

    Each case is `{name, input: {...}, expect: {outcome, rule, error?}, versions?: [N, ...],
    params?: {...}}` (`error`: a substring the recorded error must contain; without it, the
    decision must carry no error; `versions`: the policy versions the case is about, all when
    absent, so a new version that moves a threshold brings its own cases; `params`: values of
    declared params the case fixes, so a case can hold for every version whatever its
    thresholds). Every rule of the policy not hit by any case is a failure too: an untested
    rule is a liability.
    """
    try:
        raw = yaml.load(read_file(Path(cases_path)), Loader=MarkedLoader)  # a SafeLoader subclass
    except (PolicyError, yaml.YAMLError) as exc:
        return [f"{cases_path}: cannot load cases: {exc}"]
    if not isinstance(raw, list) or not raw:
        return [f"{cases_path}: expected a non-empty list of cases"]
    failures: list[str] = []
    hit: set[str] = set()
    names: set[str] = set()
    for i, case in enumerate(raw):
        where = f"{cases_path}:{pos(case)}" if isinstance(case, MarkedMapping) else f"{cases_path}"
        if not isinstance(case, dict):
            failures.append(f"{where}: case {i} must be a mapping with name, input and expect")
            continue
        name = str(case.get("name", f"#{i}"))
        label = f"{where}: case '{name}'"
        unknown = sorted(str(k) for k in case if k not in _CASE_KEYS)
        if unknown:
            failures.append(f"{label}: unknown field(s) {', '.join(unknown)}")
            continue
        if name in names:
            failures.append(f"{label}: duplicate case name")
        names.add(name)
        versions = case.get("versions")
        if versions is not None and (
            not isinstance(versions, list)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in versions)
        ):
            failures.append(f"{label}: versions must be a list of version numbers")
            continue
        if versions is not None and policy.ref.version not in versions:
            continue
        inputs, expect = case.get("input"), case.get("expect")
        if not isinstance(inputs, dict) or not isinstance(expect, dict):
            failures.append(f"{label}: needs an 'input' mapping and an 'expect' mapping")
            continue
        if set(expect) - {"outcome", "rule", "error"} or not {"outcome", "rule"} <= set(expect):
            failures.append(f"{label}: expect must have outcome and rule (and optionally error)")
            continue
        fixed = case.get("params") or {}
        problem = _params_problem(policy, fixed)
        if problem:
            failures.append(f"{label}: {problem}")
            continue
        fixed = {
            k: float(v) if isinstance(policy.params[k], float) else v for k, v in fixed.items()
        }
        decision = policy.evaluate(inputs, params=fixed)
        if decision.error is None:
            # A rule that only ever errors in the cases has not shown what it decides.
            hit.add(decision.rule_id)
        got = f"{decision.outcome} by rule '{decision.rule_id}'"
        if decision.error:
            got += f" (error: {decision.error})"
        want = f"{expect['outcome']} by rule '{expect['rule']}'"
        expected_error = expect.get("error")
        if (
            decision.outcome != expect["outcome"]
            or decision.rule_id != expect["rule"]
            or (expected_error is None and decision.error is not None)
            or (expected_error is not None and str(expected_error) not in (decision.error or ""))
        ):
            failures.append(f"{label}: expected {want}, got {got}")
    for rule in policy.rules:
        if rule.id not in hit:
            failures.append(f"{cases_path}: rule '{rule.id}' is not hit by any case")
    return failures
