"""Policy files: finding a version, reading YAML with positions, parsing it into a `Policy`.

A policy lives in `<policies_dir>/<id>/v<N>.yaml` next to its `cases.yaml`:

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
         params: {min_confidence: 0.8},   # optional: this rule's own values of declared params
         description: "..."}              # optional: what it means, for reviewers and leads
    default: {outcome: human_review}

A rule without `description` is described by the comment lines right above it (no blank line
between), and so is `default:`: released versions, whose bytes never change, read the same.

Invariants:
- Everything that can be checked is checked at load: unknown or missing fields, duplicate keys
  and rule ids, outcomes outside the kind's, and every `when` is compiled against the declared
  inputs and params (an undeclared name or a string compared with a number fails with CEL's
  line:column) and must return bool. Errors are `PolicyError`s naming the file (with the
  YAML line:column) and the rule id.
- A rule whose estimated evaluation cost is over MAX_RULE_COST, or a policy over
  MAX_POLICY_COST, is refused (the estimate: `policy_rules.cel`).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from policy_rules.cel import (
    MAX_ENTRIES,
    MAX_PLUS,
    SCALAR_TYPES,
    CompileError,
    cel_type,
    compile_when,
    environment,
    estimate_cost,
    param_problem,
    plus_count,
)
from policy_rules.model import (
    DEFAULT_RULE_ID,
    INPUTS_RULE_ID,
    KINDS,
    MAX_POLICY_COST,
    MAX_RULE_COST,
    MAX_WHEN_CHARS,
    Policy,
    PolicyError,
    PolicyRef,
    Rule,
)
from policy_rules.review_rules import parse_review
from policy_rules.yaml_marks import MarkedLoader, MarkedMapping, pos

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
_REQUIRED_KEYS = ("id", "version", "inputs", "rules", "default")
_RULE_KEYS = ("id", "when", "outcome", "params", "description")
_REQUIRED_RULE_KEYS = ("id", "when", "outcome")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_REF_RE = re.compile(r"^(?P<id>[A-Za-z0-9][A-Za-z0-9_-]*)(?:@(?P<version>[0-9]+))?$")
_VERSION_FILE_RE = re.compile(r"^v(?P<version>[1-9][0-9]*)\.yaml$")
_INPUT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load_policy(policies_dir: Path, ref: str) -> Policy:
    """`<id>` (highest version) or `<id>@<version>`, compiled; what `Policy.load` does."""
    path, policy_id, version = locate(Path(policies_dir), ref)
    # Hash and parse the same bytes: the ref can never describe a file other than the one
    # that was compiled, even if it is edited meanwhile.
    data = read_file(path)
    pref = PolicyRef(id=policy_id, version=version, sha256=hashlib.sha256(data).hexdigest())
    return parse_policy(path, data, pref)


def resolve(policies_dir: Path, ref: str) -> PolicyRef:
    """`<id>` (highest version) or `<id>@<version>` -> the exact file version, by hash."""
    path, policy_id, version = locate(Path(policies_dir), ref)
    return PolicyRef(
        id=policy_id, version=version, sha256=hashlib.sha256(read_file(path)).hexdigest()
    )


def list_policies(policies_dir: Path) -> list[str]:
    """Ids of the policies under `policies_dir` (folders holding at least one vN.yaml)."""
    policies_dir = Path(policies_dir)
    if not policies_dir.is_dir():
        return []
    return sorted(p.name for p in policies_dir.iterdir() if p.is_dir() and version_files(p))


# --- locating and reading -------------------------------------------------------------------


def locate(policies_dir: Path, ref: str) -> tuple[Path, str, int]:
    """The version file `<id>` (highest version) or `<id>@<version>` names: (path, id, version)."""
    m = _REF_RE.fullmatch(ref)
    if m is None:
        raise PolicyError(f"bad policy ref '{ref}': expected '<id>' or '<id>@<version>'")
    policy_id = m["id"]
    versions = version_files(policies_dir / policy_id)
    if not versions:
        names = list_policies(policies_dir)
        close = difflib.get_close_matches(policy_id, names, n=1)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        raise PolicyError(
            f"unknown policy '{policy_id}'{guess}: no {policies_dir}/{policy_id}/v<N>.yaml; "
            f"known policies: {', '.join(names) or '(none)'}"
        )
    version = int(m["version"]) if m["version"] is not None else max(versions)
    if version not in versions:
        known = ", ".join(str(v) for v in sorted(versions))
        raise PolicyError(f"policy '{policy_id}' has no version {version}; known versions: {known}")
    return versions[version], policy_id, version


def version_files(folder: Path) -> dict[int, Path]:
    """A policy folder's version files by version number ({} when there is none)."""
    if not folder.is_dir():
        return {}
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        m = _VERSION_FILE_RE.fullmatch(path.name)
        if m and path.is_file():
            found[int(m["version"])] = path
    return found


def read_file(path: Path) -> bytes:
    """A policy or cases file's bytes; a PolicyError naming the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc}") from exc


# --- parsing ----------------------------------------------------------------------------------


def parse_policy(path: Path, data: bytes, ref: PolicyRef) -> Policy:
    """`data` (the bytes of `path`, hashed into `ref`) parsed and compiled into a `Policy`."""
    try:
        raw = yaml.load(data, Loader=MarkedLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{path}"
        problem = getattr(exc, "problem", None) or exc
        raise PolicyError(f"{where}: not valid YAML: {problem}") from exc
    if not isinstance(raw, MarkedMapping):
        raise PolicyError(f"{path}: expected a mapping with fields {', '.join(_POLICY_KEYS)}")

    for key in raw:
        if key not in _POLICY_KEYS:
            raise PolicyError(
                f"{path}:{pos(raw, key, of_key=True)}: unknown field '{key}'; "
                f"expected: {', '.join(_POLICY_KEYS)}"
            )
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise PolicyError(f"{path}: missing field(s) {', '.join(missing)}")
    if raw["id"] != ref.id:
        raise PolicyError(
            f"{path}:{pos(raw, 'id')}: id is {raw['id']!r} but the folder is '{ref.id}'"
        )
    if raw["version"] != ref.version or isinstance(raw["version"], bool):
        raise PolicyError(
            f"{path}:{pos(raw, 'version')}: version is {raw['version']!r} but the file is "
            f"v{ref.version}.yaml"
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise PolicyError(f"{path}:{pos(raw, 'description')}: description must be a string")
    kind = raw.get("kind", "route")
    if kind not in KINDS:
        raise PolicyError(
            f"{path}:{pos(raw, 'kind')}: kind {kind!r} is not one of {', '.join(KINDS)}"
        )
    outcomes = KINDS[kind]
    if kind != "route" and "review" in raw:
        raise PolicyError(f"{path}:{pos(raw, 'review', of_key=True)}: a {kind} has no review")

    inputs = _parse_inputs(path, raw)
    params = _parse_params(path, raw)
    env = environment(inputs, params)

    rules_raw = raw["rules"]
    if not isinstance(rules_raw, list) or not rules_raw:
        raise PolicyError(f"{path}:{pos(raw, 'rules')}: rules must be a non-empty list")
    rules: list[Rule] = []
    programs: list[Any] = []
    comments = _comments_above(data)
    for i, entry in enumerate(rules_raw):
        rule = _parse_rule(path, i, entry, {r.id for r in rules}, outcomes, params, inputs)
        programs.append(_compile(path, env, rule, entry))
        if not rule.description:
            rule = replace(rule, description=_described(rule, entry, raw, comments))
        rules.append(rule)
    total = sum(r.cost for r in rules)
    if total > MAX_POLICY_COST:
        raise PolicyError(
            f"{path}: estimated evaluation cost of all rules is {total}, over the bound "
            f"{MAX_POLICY_COST}: split the policy or simplify its rules"
        )

    review, priority = parse_review(path, raw, env)
    default = raw["default"]
    if not isinstance(default, MarkedMapping) or set(default) != {"outcome"}:
        raise PolicyError(f"{path}:{pos(raw, 'default')}: default must be {{outcome: ...}}")
    if default["outcome"] not in outcomes:
        raise PolicyError(
            f"{path}:{pos(default, 'outcome')}: default outcome {default['outcome']!r} is not "
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
        review=review,
        kind=kind,
        priority_program=priority,
        default_description=comments.get(raw.key_marks["default"].line, ""),
    )


def _described(
    rule: Rule, entry: MarkedMapping, raw: MarkedMapping, comments: Mapping[int, str]
) -> str:
    """A rule without `description`: the comment above it, then those above the params its
    `when` reads (where a threshold says why it is what it is)."""
    params = raw.get("params")
    marks = params.key_marks if isinstance(params, MarkedMapping) else {}
    parts = [comments.get(entry.start.line, "") if entry.start is not None else ""]
    for name in dict.fromkeys(re.findall(r"params\.([A-Za-z_]\w*)", rule.when)):
        mark = marks.get(name)
        parts.append(comments.get(mark.line, "") if mark is not None else "")
    return " ".join(p for p in dict.fromkeys(parts) if p)


def _comments_above(data: bytes) -> dict[int, str]:
    """0-based line -> the comment block right above it (joined, without the '#')."""
    out: dict[int, str] = {}
    block: list[str] = []
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines()):
        text = line.strip()
        if text.startswith("#"):
            block.append(text.lstrip("#").strip())
            continue
        if text and block:
            out[n] = " ".join(b for b in block if b)
        block = []
    return out


def _parse_inputs(path: Path, raw: MarkedMapping) -> dict[str, str]:
    inputs = raw["inputs"]
    if not isinstance(inputs, MarkedMapping) or not inputs:
        raise PolicyError(f"{path}:{pos(raw, 'inputs')}: inputs must map names to CEL types")
    out: dict[str, str] = {}
    for name, type_name in inputs.items():
        where = f"{path}:{pos(inputs, name, of_key=True)}"
        if not isinstance(name, str) or not _INPUT_NAME_RE.fullmatch(name):
            raise PolicyError(f"{where}: input name {name!r} must be a dotted identifier")
        if name.startswith("params."):
            raise PolicyError(f"{where}: input '{name}': 'params.' is reserved for params")
        if not isinstance(type_name, str) or cel_type(type_name) is None:
            raise PolicyError(
                f"{where}: input '{name}' has type {type_name!r}; expected one of "
                f"{', '.join(SCALAR_TYPES)}, list<T> or map<string,T> (T one of those)"
            )
        out[name] = type_name
    return out


def _parse_params(path: Path, raw: MarkedMapping) -> dict[str, float | int | str | bool]:
    params = raw.get("params", None)
    if params is None:
        return {}
    if not isinstance(params, MarkedMapping):
        raise PolicyError(f"{path}:{pos(raw, 'params')}: params must be a mapping")
    out: dict[str, float | int | str | bool] = {}
    for name, value in params.items():
        where = f"{path}:{pos(params, name, of_key=True)}"
        if not isinstance(name, str) or not _PARAM_NAME_RE.fullmatch(name):
            raise PolicyError(f"{where}: param name {name!r} must be an identifier")
        if not isinstance(value, bool | int | float | str):
            raise PolicyError(f"{where}: param '{name}' must be a number, string or bool")
        problem = param_problem(value)
        if problem:
            raise PolicyError(f"{where}: param '{name}' {problem}")
        out[name] = value
    return out


def _parse_rule(
    path: Path,
    i: int,
    entry: object,
    seen: set[str],
    outcomes: tuple[str, ...],
    params: Mapping[str, float | int | str | bool],
    inputs: Mapping[str, str],
) -> Rule:
    if not isinstance(entry, MarkedMapping):
        raise PolicyError(f"{path}: rules[{i}] must be a mapping with id, when and outcome")
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not _ID_RE.fullmatch(rule_id):
        raise PolicyError(
            f"{path}:{pos(entry, 'id')}: rules[{i}]: id must be letters, digits, '_' or '-', "
            f"got {rule_id!r}"
        )
    if rule_id in seen or rule_id in (DEFAULT_RULE_ID, INPUTS_RULE_ID):
        raise PolicyError(f"{path}:{pos(entry, 'id')}: rule '{rule_id}': duplicate or reserved id")
    for key in entry:
        if key not in _RULE_KEYS:
            raise PolicyError(
                f"{path}:{pos(entry, key, of_key=True)}: rule '{rule_id}': unknown field "
                f"'{key}'; expected: {', '.join(_RULE_KEYS)}"
            )
    for key in _REQUIRED_RULE_KEYS:
        if key not in entry:
            raise PolicyError(f"{path}:{pos(entry)}: rule '{rule_id}': missing field '{key}'")
    when, outcome = entry["when"], entry["outcome"]
    if not isinstance(when, str) or not when.strip():
        raise PolicyError(
            f"{path}:{pos(entry, 'when')}: rule '{rule_id}': when must be a CEL expression "
            f"string, got {when!r} (quote it)"
        )
    if outcome not in outcomes:
        raise PolicyError(
            f"{path}:{pos(entry, 'outcome')}: rule '{rule_id}': outcome {outcome!r} is not one "
            f"of {', '.join(outcomes)}"
        )
    if len(when) > MAX_WHEN_CHARS:
        raise PolicyError(
            f"{path}:{pos(entry, 'when')}: rule '{rule_id}': when is {len(when)} characters, "
            f"over the bound {MAX_WHEN_CHARS}"
        )
    pluses = plus_count(when)
    if pluses > MAX_PLUS:
        raise PolicyError(
            f"{path}:{pos(entry, 'when')}: rule '{rule_id}': {pluses} '+' operators, over "
            f"the bound {MAX_PLUS} (each may double a string or list)"
        )
    cost = estimate_cost(when)
    if cost > MAX_RULE_COST:
        raise PolicyError(
            f"{path}:{pos(entry, 'when')}: rule '{rule_id}': estimated evaluation cost {cost} "
            f"is over the bound {MAX_RULE_COST} (a comprehension costs its body x "
            f"{MAX_ENTRIES} entries; nested ones multiply)"
        )
    reads = tuple(
        name for name in inputs if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", when)
    )
    own = _parse_rule_params(path, rule_id, entry, params)
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise PolicyError(
            f"{path}:{pos(entry, 'description')}: rule '{rule_id}': description must be text"
        )
    return Rule(id=rule_id, when=when.strip(), outcome=outcome, params=own, reads=reads,
                cost=cost, description=" ".join(description.split()))  # fmt: skip


def _parse_rule_params(
    path: Path, rule_id: str, entry: MarkedMapping, params: Mapping[str, float | int | str | bool]
) -> dict[str, float | int | str | bool]:
    """A rule's own values of declared params; same names and types as the policy's, so a
    misspelled name or a threshold given as text fails here rather than silently not apply."""
    own = entry.get("params")
    if own is None:
        return {}
    if not isinstance(own, MarkedMapping) or not own:
        raise PolicyError(
            f"{path}:{pos(entry, 'params')}: rule '{rule_id}': params must be a non-empty "
            "mapping of declared param names to values"
        )
    out: dict[str, float | int | str | bool] = {}
    for name, value in own.items():
        where = f"{path}:{pos(own, name, of_key=True)}: rule '{rule_id}'"
        if name not in params:
            known = ", ".join(params) or "(none)"
            raise PolicyError(f"{where}: param '{name}' is not declared; declared: {known}")
        declared = params[name]
        if isinstance(declared, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(declared) or param_problem(value):
            raise PolicyError(
                f"{where}: param '{name}' must be {type(declared).__name__} like the policy's "
                f"({declared!r}), got {value!r}"
            )
        out[name] = value
    return out


def _compile(path: Path, env: Any, rule: Rule, entry: MarkedMapping) -> Any:
    try:
        return compile_when(env, rule.when)
    except CompileError as exc:
        # Caused by CEL's own error (if any), as the CompileError is.
        where = f"{path}:{pos(entry, 'when')}: rule '{rule.id}'"
        raise PolicyError(f"{where}: {exc}") from exc.__cause__
