"""Routing policies: versioned YAML files of CEL rules that decide what happens to a label.

Role: the only module that knows the CEL engine (Google's `cel_expr_python`). A policy lives in
`<policies_dir>/<id>/v<N>.yaml` next to its `cases.yaml`:

    id: route_default              # must equal the folder name
    version: 1                     # must equal N in vN.yaml
    kind: route                    # route (default): routes items; gate: judges a snapshot
    description: ...
    inputs:                        # flat dotted name -> CEL type: int, double, string, bool,
      ensemble.confidence: double  #   list<T> or map<string,T> of those (<= 64 entries)
    params:                        # named constants, bound as `params.<name>` (type from value)
      min_confidence: 0.7
    rules:                         # ordered; the first whose `when` is true decides
      - {id: confident, when: "ensemble.confidence >= params.min_confidence",
         outcome: auto_accept,
         params: {min_confidence: 0.8}}   # optional: this rule's own values of declared params
    default: {outcome: human_review}

Outcomes: a route policy's are OUTCOMES; a gate policy's are GATE_OUTCOMES (`pass` marks a
snapshot training-ready).

Invariants:
- Everything that can be checked is checked at load: unknown or missing fields, duplicate keys
  and rule ids, outcomes outside the kind's, and every `when` is compiled against the declared
  inputs and params (an undeclared name or a string compared with a number fails with CEL's
  line:column) and must return bool. Errors are `PolicyError`s naming the file (with the
  YAML line:column) and the rule id.
- Evaluation cost is bounded before a rule is accepted: every operand and operator costs 1, a
  comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) costs its body times
  MAX_ENTRIES (the most entries a collection input may have), nested ones multiply, and a rule
  over MAX_RULE_COST or a policy over MAX_POLICY_COST is refused. Inputs are scalars or
  collections of at most MAX_ENTRIES scalars, so the bound holds for every item.
- `evaluate` never raises. A rule that errors at run time (division by zero, a missing or
  mistyped input) gives the kind's error outcome (`human_review` for a route, `fail` for a
  gate), recording the rule id and the error: a broken rule must never auto-accept an item or
  pass a snapshot. Input problems found before any rule runs are reported under the rule id
  "inputs"; no rule firing gives "default".
- Inputs are the caller's dict keyed by the declared flat names; int values are accepted for
  double inputs (converted), keys the policy does not declare are ignored.
- A `PolicyRef` pins the exact bytes: sha256 of the version file, so a recorded decision can
  always be traced to the rules that made it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cel_expr_python import cel

OUTCOMES = ("auto_accept", "human_review", "quarantine", "reject")
GATE_OUTCOMES = ("pass", "fail")
KINDS = {"route": OUTCOMES, "gate": GATE_OUTCOMES}
# Where an item goes when a rule cannot be evaluated: a person looks at it.
ERROR_OUTCOME = "human_review"
# What a gate says when it cannot be evaluated: not training-ready.
GATE_ERROR_OUTCOME = "fail"
MAX_ENTRIES = 64  # most entries in a list or map input
MAX_RULE_COST = 10_000
MAX_POLICY_COST = 50_000
MAX_WHEN_CHARS = 4_000
# A `+` may double a string or list; capped, with string inputs and params bounded, so no
# rule can build gigabytes (`.map(s, s + s + s + s)` chained) under the operation count.
MAX_PLUS = 8
MAX_STRING_CHARS = 1_024  # of a string input, param or list/map entry
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_TOKEN_RE = re.compile(
    # Strings first (triple-quoted, then single-line; optional r/b prefixes), so that a
    # quote inside one never hides real code from the count.
    r"""\s+|[rRbB]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?''')"""
    r"""|[rRbB]{0,2}(?:"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""
    r"""|[0-9][0-9a-zA-Z.]*|[A-Za-z_][A-Za-z0-9_]*|&&|\|\||[=!<>]=|."""
)
DEFAULT_RULE_ID = "default"
INPUTS_RULE_ID = "inputs"

_CEL_TYPES: dict[str, Any] = {
    "int": cel.Type.INT,
    "double": cel.Type.DOUBLE,
    "string": cel.Type.STRING,
    "bool": cel.Type.BOOL,
}
_POLICY_KEYS = (
    "id",
    "version",
    "kind",
    "description",
    "inputs",
    "params",
    "rules",
    "default",
    "review",
)
_REVIEW_KEYS = (
    "reviewers_needed",
    "timeout_s",
    "escalate_to",
    "escalation_timeout_s",
    "on_timeout",
)
_REQUIRED_KEYS = ("id", "version", "inputs", "rules", "default")
_RULE_KEYS = ("id", "when", "outcome", "params")
_REQUIRED_RULE_KEYS = ("id", "when", "outcome")
_COLLECTION_RE = re.compile(r"^(?:list<(?P<item>\w+)>|map<string,\s*(?P<value>\w+)>)$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_REF_RE = re.compile(r"^(?P<id>[A-Za-z0-9][A-Za-z0-9_-]*)(?:@(?P<version>[0-9]+))?$")
_VERSION_FILE_RE = re.compile(r"^v(?P<version>[1-9][0-9]*)\.yaml$")
_INPUT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CEL_POS_RE = re.compile(r"(?P<line>\d+):(?P<col>\d+): ")
_INT64 = (-(2**63), 2**63 - 1)


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
    cost: int = 0  # estimated evaluation cost (see the module docstring)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReviewRules:
    """How a routed item's human review closes, from the policy version that routed it."""

    reviewers_needed: int = 1  # agreeing reviews that close an item
    timeout_s: int = 7 * 24 * 3600  # wait for the first reviewer group
    escalate_to: str = ""  # reviewer group asked next when nobody answered ("" = none)
    escalation_timeout_s: int = 24 * 3600
    on_timeout: str = "quarantine"  # final outcome when nobody answered at all


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
    ) -> None:
        self.ref = ref
        self.path = path
        self.kind = kind
        self.description = description
        self.params = dict(params)
        self.inputs = dict(inputs)
        self.rules = rules
        self.default_outcome = default_outcome
        self.review = review or ReviewRules()
        self.error_outcome = GATE_ERROR_OUTCOME if kind == "gate" else ERROR_OUTCOME
        self._programs = programs
        # Bound once: every evaluation merges these into the caller's inputs.
        self._param_data = {f"params.{k}": v for k, v in self.params.items()}
        self._rule_data = tuple(
            {f"params.{k}": v for k, v in rule.params.items()} or None for rule in rules
        )

    @property
    def cost(self) -> int:
        """The estimated worst-case cost of one evaluation (every rule run)."""
        return sum(rule.cost for rule in self.rules)

    @classmethod
    def load(cls, policies_dir: Path, ref: str) -> Policy:
        path, policy_id, version = _locate(Path(policies_dir), ref)
        # Hash and parse the same bytes: the ref can never describe a file other than the one
        # that was compiled, even if it is edited meanwhile.
        data = _read(path)
        pref = PolicyRef(id=policy_id, version=version, sha256=hashlib.sha256(data).hexdigest())
        return _parse(path, data, pref)

    def evaluate(self, inputs: Mapping[str, object]) -> Decision:
        data: dict[str, object] = dict(self._param_data)
        for name, type_name in self.inputs.items():
            if name not in inputs:
                return self._input_error(f"missing input '{name}' ({type_name})")
            value = _coerce(inputs[name], type_name)
            if value is None:
                return self._input_error(_misfit(name, type_name, inputs[name]))
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

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def _input_error(self, message: str) -> Decision:
        return Decision(outcome=self.error_outcome, rule_id=INPUTS_RULE_ID, error=message)


def resolve(policies_dir: Path, ref: str) -> PolicyRef:
    """`<id>` (highest version) or `<id>@<version>` -> the exact file version, by hash."""
    path, policy_id, version = _locate(Path(policies_dir), ref)
    return PolicyRef(id=policy_id, version=version, sha256=hashlib.sha256(_read(path)).hexdigest())


def list_policies(policies_dir: Path) -> list[str]:
    """Ids of the policies under `policies_dir` (folders holding at least one vN.yaml)."""
    policies_dir = Path(policies_dir)
    if not policies_dir.is_dir():
        return []
    return sorted(p.name for p in policies_dir.iterdir() if p.is_dir() and _versions(p))


def check_cases(policy: Policy, cases_path: Path) -> list[str]:
    """Run a policy's example cases; returns failure messages ([] = all pass).

    Each case is `{name, input: {...}, expect: {outcome, rule, error?}, versions?: [N, ...]}`
    (`error`: a substring the recorded error must contain; without it, the decision must carry
    no error; `versions`: the policy versions the case is about, all when absent, so a new
    version that moves a threshold brings its own cases). Every rule of the policy not hit by
    any case is a failure too: an untested rule is a liability.
    """
    try:
        raw = yaml.load(_read(Path(cases_path)), Loader=_MarkedLoader)  # a SafeLoader subclass
    except (PolicyError, yaml.YAMLError) as exc:
        return [f"{cases_path}: cannot load cases: {exc}"]
    if not isinstance(raw, list) or not raw:
        return [f"{cases_path}: expected a non-empty list of cases"]
    failures: list[str] = []
    hit: set[str] = set()
    names: set[str] = set()
    for i, case in enumerate(raw):
        where = f"{cases_path}:{_pos(case)}" if isinstance(case, _Mapping) else f"{cases_path}"
        if not isinstance(case, dict):
            failures.append(f"{where}: case {i} must be a mapping with name, input and expect")
            continue
        name = str(case.get("name", f"#{i}"))
        label = f"{where}: case '{name}'"
        unknown = sorted(str(k) for k in case if k not in ("name", "input", "expect", "versions"))
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
        decision = policy.evaluate(inputs)
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


# --- locating and reading -------------------------------------------------------------------


def _locate(policies_dir: Path, ref: str) -> tuple[Path, str, int]:
    m = _REF_RE.fullmatch(ref)
    if m is None:
        raise PolicyError(f"bad policy ref '{ref}': expected '<id>' or '<id>@<version>'")
    policy_id = m["id"]
    versions = _versions(policies_dir / policy_id)
    if not versions:
        known = ", ".join(list_policies(policies_dir)) or "(none)"
        raise PolicyError(
            f"unknown policy '{policy_id}': no {policies_dir}/{policy_id}/v<N>.yaml; "
            f"known policies: {known}"
        )
    version = int(m["version"]) if m["version"] is not None else max(versions)
    if version not in versions:
        known = ", ".join(str(v) for v in sorted(versions))
        raise PolicyError(f"policy '{policy_id}' has no version {version}; known versions: {known}")
    return versions[version], policy_id, version


def _versions(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        m = _VERSION_FILE_RE.fullmatch(path.name)
        if m and path.is_file():
            found[int(m["version"])] = path
    return found


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc}") from exc


# --- parsing ----------------------------------------------------------------------------------


class _Mapping(dict[Any, Any]):
    """A YAML mapping that remembers where it and each of its values start in the file."""

    def __init__(self) -> None:
        super().__init__()
        self.start: Any = None
        self.value_marks: dict[Any, Any] = {}
        self.key_marks: dict[Any, Any] = {}


class _MarkedLoader(yaml.SafeLoader):
    """SafeLoader whose mappings carry positions and which refuses duplicate keys (PyYAML
    silently keeps the last one, so `when` written twice would hide a rule's real condition)."""


def _construct_mapping(loader: _MarkedLoader, node: Any) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.start = node.start_mark
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "unhashable mapping key", key_node.start_mark
            )
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_marks[key] = key_node.start_mark
        mapping.value_marks[key] = value_node.start_mark
    return mapping


_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _pos(mapping: _Mapping, key: Any = None, *, of_key: bool = False) -> str:
    """'line:column' (1-based) of a mapping's value for `key`, of the key, or of the mapping."""
    marks = mapping.key_marks if of_key else mapping.value_marks
    mark = marks.get(key) if key is not None else None
    mark = mark or mapping.start
    return f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "?:?"


def _parse(path: Path, data: bytes, ref: PolicyRef) -> Policy:
    try:
        raw = yaml.load(data, Loader=_MarkedLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{path}"
        problem = getattr(exc, "problem", None) or exc
        raise PolicyError(f"{where}: not valid YAML: {problem}") from exc
    if not isinstance(raw, _Mapping):
        raise PolicyError(f"{path}: expected a mapping with fields {', '.join(_POLICY_KEYS)}")

    for key in raw:
        if key not in _POLICY_KEYS:
            raise PolicyError(
                f"{path}:{_pos(raw, key, of_key=True)}: unknown field '{key}'; "
                f"expected: {', '.join(_POLICY_KEYS)}"
            )
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise PolicyError(f"{path}: missing field(s) {', '.join(missing)}")
    if raw["id"] != ref.id:
        raise PolicyError(
            f"{path}:{_pos(raw, 'id')}: id is {raw['id']!r} but the folder is '{ref.id}'"
        )
    if raw["version"] != ref.version or isinstance(raw["version"], bool):
        raise PolicyError(
            f"{path}:{_pos(raw, 'version')}: version is {raw['version']!r} but the file is "
            f"v{ref.version}.yaml"
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise PolicyError(f"{path}:{_pos(raw, 'description')}: description must be a string")
    kind = raw.get("kind", "route")
    if kind not in KINDS:
        raise PolicyError(
            f"{path}:{_pos(raw, 'kind')}: kind {kind!r} is not one of {', '.join(KINDS)}"
        )
    outcomes = KINDS[kind]
    if kind == "gate" and "review" in raw:
        raise PolicyError(f"{path}:{_pos(raw, 'review', of_key=True)}: a gate has no review")

    inputs = _parse_inputs(path, raw)
    params = _parse_params(path, raw)
    variables = {name: _cel_type(t) for name, t in inputs.items()}
    variables.update({f"params.{name}": _cel_type_of(value) for name, value in params.items()})
    env = cel.NewEnv(variables=variables)

    rules_raw = raw["rules"]
    if not isinstance(rules_raw, list) or not rules_raw:
        raise PolicyError(f"{path}:{_pos(raw, 'rules')}: rules must be a non-empty list")
    rules: list[Rule] = []
    programs: list[Any] = []
    for i, entry in enumerate(rules_raw):
        rule = _parse_rule(path, i, entry, {r.id for r in rules}, outcomes, params, inputs)
        programs.append(_compile(path, env, rule, entry))
        rules.append(rule)
    total = sum(r.cost for r in rules)
    if total > MAX_POLICY_COST:
        raise PolicyError(
            f"{path}: estimated evaluation cost of all rules is {total}, over the bound "
            f"{MAX_POLICY_COST}: split the policy or simplify its rules"
        )

    default = raw["default"]
    if not isinstance(default, _Mapping) or set(default) != {"outcome"}:
        raise PolicyError(f"{path}:{_pos(raw, 'default')}: default must be {{outcome: ...}}")
    if default["outcome"] not in outcomes:
        raise PolicyError(
            f"{path}:{_pos(default, 'outcome')}: default outcome {default['outcome']!r} is not "
            f"one of {', '.join(outcomes)}"
        )
    return Policy(
        ref=ref,
        path=path,
        description=description.strip(),
        params=params,
        inputs=inputs,
        rules=tuple(rules),
        default_outcome=default["outcome"],
        programs=tuple(programs),
        review=_parse_review(path, raw),
        kind=kind,
    )


def _parse_review(path: Path, raw: _Mapping) -> ReviewRules:
    if "review" not in raw:
        return ReviewRules()
    block = raw["review"]
    if not isinstance(block, _Mapping):
        raise PolicyError(f"{path}:{_pos(raw, 'review')}: review must be a mapping")
    for key in block:
        if key not in _REVIEW_KEYS:
            raise PolicyError(
                f"{path}:{_pos(block, key, of_key=True)}: unknown review field '{key}'; "
                f"expected: {', '.join(_REVIEW_KEYS)}"
            )
    for key in ("reviewers_needed", "timeout_s", "escalation_timeout_s"):
        value = block.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PolicyError(f"{path}:{_pos(block, key)}: review.{key} must be an integer >= 1")
    if not isinstance(block.get("escalate_to", ""), str):
        raise PolicyError(f"{path}:{_pos(block, 'escalate_to')}: review.escalate_to must be text")
    if block.get("on_timeout", "quarantine") not in OUTCOMES:
        raise PolicyError(
            f"{path}:{_pos(block, 'on_timeout')}: review.on_timeout must be one of "
            f"{', '.join(OUTCOMES)}"
        )
    return ReviewRules(**{k: block[k] for k in _REVIEW_KEYS if k in block})


def _parse_inputs(path: Path, raw: _Mapping) -> dict[str, str]:
    inputs = raw["inputs"]
    if not isinstance(inputs, _Mapping) or not inputs:
        raise PolicyError(f"{path}:{_pos(raw, 'inputs')}: inputs must map names to CEL types")
    out: dict[str, str] = {}
    for name, type_name in inputs.items():
        where = f"{path}:{_pos(inputs, name, of_key=True)}"
        if not isinstance(name, str) or not _INPUT_NAME_RE.fullmatch(name):
            raise PolicyError(f"{where}: input name {name!r} must be a dotted identifier")
        if name.startswith("params."):
            raise PolicyError(f"{where}: input '{name}': 'params.' is reserved for params")
        if not isinstance(type_name, str) or _cel_type(type_name) is None:
            raise PolicyError(
                f"{where}: input '{name}' has type {type_name!r}; expected one of "
                f"{', '.join(_CEL_TYPES)}, list<T> or map<string,T> (T one of those)"
            )
        out[name] = type_name
    return out


def _parse_params(path: Path, raw: _Mapping) -> dict[str, float | int | str | bool]:
    params = raw.get("params", None)
    if params is None:
        return {}
    if not isinstance(params, _Mapping):
        raise PolicyError(f"{path}:{_pos(raw, 'params')}: params must be a mapping")
    out: dict[str, float | int | str | bool] = {}
    for name, value in params.items():
        where = f"{path}:{_pos(params, name, of_key=True)}"
        if not isinstance(name, str) or not _PARAM_NAME_RE.fullmatch(name):
            raise PolicyError(f"{where}: param name {name!r} must be an identifier")
        if not isinstance(value, bool | int | float | str):
            raise PolicyError(f"{where}: param '{name}' must be a number, string or bool")
        problem = _param_problem(value)
        if problem:
            raise PolicyError(f"{where}: param '{name}' {problem}")
        out[name] = value
    return out


def _param_problem(value: object) -> str:
    """Why a param value cannot be used by CEL, or ""."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be finite"
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        return "is outside CEL's 64-bit integer range"
    if isinstance(value, str) and (len(value) > MAX_STRING_CHARS or "\x00" in value):
        return f"must be at most {MAX_STRING_CHARS} characters, without NUL"
    return ""


def _parse_rule(
    path: Path,
    i: int,
    entry: object,
    seen: set[str],
    outcomes: tuple[str, ...],
    params: Mapping[str, float | int | str | bool],
    inputs: Mapping[str, str],
) -> Rule:
    if not isinstance(entry, _Mapping):
        raise PolicyError(f"{path}: rules[{i}] must be a mapping with id, when and outcome")
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not _ID_RE.fullmatch(rule_id):
        raise PolicyError(
            f"{path}:{_pos(entry, 'id')}: rules[{i}]: id must be letters, digits, '_' or '-', "
            f"got {rule_id!r}"
        )
    if rule_id in seen or rule_id in (DEFAULT_RULE_ID, INPUTS_RULE_ID):
        raise PolicyError(f"{path}:{_pos(entry, 'id')}: rule '{rule_id}': duplicate or reserved id")
    for key in entry:
        if key not in _RULE_KEYS:
            raise PolicyError(
                f"{path}:{_pos(entry, key, of_key=True)}: rule '{rule_id}': unknown field "
                f"'{key}'; expected: {', '.join(_RULE_KEYS)}"
            )
    for key in _REQUIRED_RULE_KEYS:
        if key not in entry:
            raise PolicyError(f"{path}:{_pos(entry)}: rule '{rule_id}': missing field '{key}'")
    when, outcome = entry["when"], entry["outcome"]
    if not isinstance(when, str) or not when.strip():
        raise PolicyError(
            f"{path}:{_pos(entry, 'when')}: rule '{rule_id}': when must be a CEL expression "
            f"string, got {when!r} (quote it)"
        )
    if outcome not in outcomes:
        raise PolicyError(
            f"{path}:{_pos(entry, 'outcome')}: rule '{rule_id}': outcome {outcome!r} is not one "
            f"of {', '.join(outcomes)}"
        )
    if len(when) > MAX_WHEN_CHARS:
        raise PolicyError(
            f"{path}:{_pos(entry, 'when')}: rule '{rule_id}': when is {len(when)} characters, "
            f"over the bound {MAX_WHEN_CHARS}"
        )
    pluses = sum(1 for t in _TOKEN_RE.findall(when) if t == "+")
    if pluses > MAX_PLUS:
        raise PolicyError(
            f"{path}:{_pos(entry, 'when')}: rule '{rule_id}': {pluses} '+' operators, over "
            f"the bound {MAX_PLUS} (each may double a string or list)"
        )
    cost = estimate_cost(when)
    if cost > MAX_RULE_COST:
        raise PolicyError(
            f"{path}:{_pos(entry, 'when')}: rule '{rule_id}': estimated evaluation cost {cost} "
            f"is over the bound {MAX_RULE_COST} (a comprehension costs its body x "
            f"{MAX_ENTRIES} entries; nested ones multiply)"
        )
    reads = tuple(
        name for name in inputs if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", when)
    )
    own = _parse_rule_params(path, rule_id, entry, params)
    return Rule(id=rule_id, when=when.strip(), outcome=outcome, params=own, reads=reads, cost=cost)


def _parse_rule_params(
    path: Path, rule_id: str, entry: _Mapping, params: Mapping[str, float | int | str | bool]
) -> dict[str, float | int | str | bool]:
    """A rule's own values of declared params; same names and types as the policy's, so a
    misspelled name or a threshold given as text fails here rather than silently not apply."""
    own = entry.get("params")
    if own is None:
        return {}
    if not isinstance(own, _Mapping) or not own:
        raise PolicyError(
            f"{path}:{_pos(entry, 'params')}: rule '{rule_id}': params must be a non-empty "
            "mapping of declared param names to values"
        )
    out: dict[str, float | int | str | bool] = {}
    for name, value in own.items():
        where = f"{path}:{_pos(own, name, of_key=True)}: rule '{rule_id}'"
        if name not in params:
            known = ", ".join(params) or "(none)"
            raise PolicyError(f"{where}: param '{name}' is not declared; declared: {known}")
        declared = params[name]
        if isinstance(declared, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(declared) or _param_problem(value):
            raise PolicyError(
                f"{where}: param '{name}' must be {type(declared).__name__} like the policy's "
                f"({declared!r}), got {value!r}"
            )
        out[name] = value
    return out


def estimate_cost(when: str) -> int:
    """Worst-case evaluation cost of a CEL expression: 1 per operand or operator, a
    comprehension's body x MAX_ENTRIES (see the module docstring). Conservative by design."""
    tokens = [t for t in _TOKEN_RE.findall(when) if not t.isspace()]
    frames = [[1, 0]]  # [multiplier, cost] per open parenthesis
    for i, tok in enumerate(tokens):
        if tok == "(":
            macro = i >= 2 and tokens[i - 2] == "." and tokens[i - 1] in _MACROS
            frames.append([MAX_ENTRIES if macro else 1, 0])
        elif tok == ")" and len(frames) > 1:
            mult, cost = frames.pop()
            frames[-1][1] += mult * cost
        elif tok not in (",", ".", "[", "]", "{", "}", ")"):
            frames[-1][1] += 1
    while len(frames) > 1:  # unbalanced: CEL will refuse it anyway
        mult, cost = frames.pop()
        frames[-1][1] += mult * cost
    return frames[0][1]


def _compile(path: Path, env: Any, rule: Rule, entry: _Mapping) -> Any:
    where = f"{path}:{_pos(entry, 'when')}: rule '{rule.id}'"
    try:
        program = env.compile(rule.when)
    except RuntimeError as exc:
        message = str(exc)
        detail = _clean(message)
        m = _CEL_POS_RE.match(detail)
        at = ""
        if m:
            # Headline position; further errors, if any, keep their own "line:col:" prefix.
            at = f" at {m['line']}:{m['col']} of the expression"
            detail = detail[m.end() :]
        raise PolicyError(f"{where}: when does not compile{at}: {detail}") from exc
    return_type = program.return_type()
    if return_type != cel.Type.BOOL:
        raise PolicyError(
            f"{where}: when must be a bool expression, got {return_type.name().lower()}"
        )
    for literal in _regex_literals(rule.when):
        problem = _regex_problem(env, literal)
        if problem:
            raise PolicyError(f"{where}: regex {literal} in matches() does not compile: {problem}")
    return program


def _regex_literals(when: str) -> list[str]:
    """The string literals given as the pattern of `matches(...)` (its last argument)."""
    tokens = [t for t in _TOKEN_RE.findall(when) if not t.isspace()]
    out: list[str] = []
    for i, tok in enumerate(tokens):
        if tok != "matches" or tokens[i + 1 : i + 2] != ["("]:
            continue
        depth, last = 0, None
        for t in tokens[i + 1 :]:
            if t in ("(", "[", "{"):
                depth += 1
            elif t in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    break
            elif depth == 1 and t != ",":
                is_string = t.lstrip("rRbB")[:1] in ("'", '"')
                last = t if is_string else None
        if last is not None:
            out.append(last)
    return out


def _regex_problem(env: Any, literal: str) -> str:
    """Evaluate `"".matches(literal)` with CEL's own regex engine: "" when it compiles."""
    try:
        result = env.compile(f'"".matches({literal})').eval(data={}).value()
    except Exception as exc:  # the engine is foreign code
        return _clean(str(exc))
    return "" if isinstance(result, bool) else _clean(str(result))


def _clean(message: str) -> str:
    # CEL wraps the useful part ("<input>:1:9: undeclared reference ... + caret display") in
    # status boilerplate; keep the part a policy author can act on.
    message = message.removeprefix("INVALID_ARGUMENT: ").removesuffix(" [INVALID_ARGUMENT]")
    return message.replace("ERROR: <input>:", "")


def _cel_type_of(value: object) -> Any:
    # bool first: it is an int subclass.
    if isinstance(value, bool):
        return cel.Type.BOOL
    if isinstance(value, int):
        return cel.Type.INT
    if isinstance(value, float):
        return cel.Type.DOUBLE
    return cel.Type.STRING


def _cel_type(type_name: str) -> Any:
    """The CEL type of a declared input type, or None when it is not one we accept."""
    if type_name in _CEL_TYPES:
        return _CEL_TYPES[type_name]
    m = _COLLECTION_RE.fullmatch(type_name)
    if m is None:
        return None
    if m["item"] is not None:
        item = _CEL_TYPES.get(m["item"])
        return None if item is None else cel.Type.List(item)
    value = _CEL_TYPES.get(m["value"])
    return None if value is None else cel.Type.Map(cel.Type.STRING, value)


def _misfit(name: str, type_name: str, value: object) -> str:
    if isinstance(value, list | tuple | dict) and len(value) > MAX_ENTRIES:
        return f"input '{name}' has {len(value)} entries, more than {MAX_ENTRIES}"
    return f"input '{name}' must be {type_name}, got {type(value).__name__}"


def _coerce(value: object, type_name: str) -> object | None:
    """The value as CEL should see it, or None when it does not fit the declared type."""
    m = _COLLECTION_RE.fullmatch(type_name) if "<" in type_name else None
    if m is not None:
        return _coerce_collection(value, m["item"], m["value"])
    if type_name == "int":
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and _INT64[0] <= value <= _INT64[1]
        ):
            return value
        return None
    if type_name == "double":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None
    if type_name == "string":
        return value if isinstance(value, str) and len(value) <= MAX_STRING_CHARS else None
    return value if isinstance(value, bool) else None


def _coerce_collection(value: object, item: str | None, element: str | None) -> object | None:
    if item is not None and isinstance(value, list | tuple) and len(value) <= MAX_ENTRIES:
        items = [_coerce(v, item) for v in value]
        return None if any(v is None for v in items) else items
    if element is not None and isinstance(value, Mapping) and len(value) <= MAX_ENTRIES:
        entries = {k: _coerce(v, element) for k, v in value.items()}
        if any(not isinstance(k, str) or v is None for k, v in entries.items()):
            return None
        return entries
    return None
