"""The CEL side of policies: type environment, compiling `when`, cost bound, input conversion.

Role: the only module that knows the CEL engine (Google's `cel_expr_python`); it knows nothing
of policy files (the loader turns its errors into `PolicyError`s with the file's line:column).

Invariants:
- Evaluation cost is bounded before a rule is accepted: every operand and operator costs 1, a
  comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) costs its body times
  MAX_ENTRIES (the most entries a collection input may have), nested ones multiply, and a rule
  over MAX_RULE_COST or a policy over MAX_POLICY_COST is refused (`policy_rules.loader`).
  Inputs are scalars or collections of at most MAX_ENTRIES scalars, so the bound holds for
  every item.
- Inputs are the caller's dict keyed by the declared flat names; int values are accepted for
  double inputs (converted), keys the policy does not declare are ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from cel_expr_python import cel

MAX_ENTRIES = 64  # most entries in a list or map input
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
_CEL_TYPES: dict[str, Any] = {
    "int": cel.Type.INT,
    "double": cel.Type.DOUBLE,
    "string": cel.Type.STRING,
    "bool": cel.Type.BOOL,
}
SCALAR_TYPES = tuple(_CEL_TYPES)  # the declarable scalar input types; also list<T>, map<string,T>
_COLLECTION_RE = re.compile(r"^(?:list<(?P<item>\w+)>|map<string,\s*(?P<value>\w+)>)$")
_CEL_POS_RE = re.compile(r"(?P<line>\d+):(?P<col>\d+): ")
_INT64 = (-(2**63), 2**63 - 1)


class CompileError(ValueError):
    """A `when` CEL refuses; the message is what a policy author needs, without the place."""


def environment(inputs: Mapping[str, str], params: Mapping[str, float | int | str | bool]) -> Any:
    """The CEL environment declaring the inputs (by their types) and `params.<name>`."""
    variables = {name: cel_type(t) for name, t in inputs.items()}
    variables.update({f"params.{name}": _cel_type_of(value) for name, value in params.items()})
    return cel.NewEnv(variables=variables)


def compile_when(env: Any, when: str, *, numeric: bool = False) -> Any:
    """`when` compiled in `env`: a bool expression (a number when `numeric`) whose
    `matches()` regexes compile.

    Raises CompileError, caused by CEL's own error when CEL refused the expression."""
    try:
        program = env.compile(when)
    except RuntimeError as exc:
        message = str(exc)
        detail = _clean(message)
        m = _CEL_POS_RE.match(detail)
        at = ""
        if m:
            # Headline position; further errors, if any, keep their own "line:col:" prefix.
            at = f" at {m['line']}:{m['col']} of the expression"
            detail = detail[m.end() :]
        what = "" if numeric else "when "
        raise CompileError(f"{what}does not compile{at}: {detail}") from exc
    return_type = program.return_type()
    if numeric and return_type not in (cel.Type.DOUBLE, cel.Type.INT):
        raise CompileError(f"must be a number (double or int), got {return_type.name().lower()}")
    if not numeric and return_type != cel.Type.BOOL:
        raise CompileError(f"when must be a bool expression, got {return_type.name().lower()}")
    for literal in _regex_literals(when):
        problem = _regex_problem(env, literal)
        if problem:
            raise CompileError(f"regex {literal} in matches() does not compile: {problem}")
    return program


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


def plus_count(when: str) -> int:
    """The `+` operators of a CEL expression (outside string literals); see MAX_PLUS."""
    return sum(1 for t in _TOKEN_RE.findall(when) if t == "+")


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


def cel_type(type_name: str) -> Any:
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


def param_problem(value: object) -> str:
    """Why a param value cannot be used by CEL, or ""."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be finite"
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        return "is outside CEL's 64-bit integer range"
    if isinstance(value, str) and (len(value) > MAX_STRING_CHARS or "\x00" in value):
        return f"must be at most {MAX_STRING_CHARS} characters, without NUL"
    return ""


def misfit(name: str, type_name: str, value: object) -> str:
    """Why an input value was refused by `coerce`, for the decision's error."""
    if isinstance(value, list | tuple | dict) and len(value) > MAX_ENTRIES:
        return f"input '{name}' has {len(value)} entries, more than {MAX_ENTRIES}"
    return f"input '{name}' must be {type_name}, got {type(value).__name__}"


def coerce(value: object, type_name: str) -> object | None:
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
        items = [coerce(v, item) for v in value]
        return None if any(v is None for v in items) else items
    if element is not None and isinstance(value, Mapping) and len(value) <= MAX_ENTRIES:
        entries = {k: coerce(v, element) for k, v in value.items()}
        if any(not isinstance(k, str) or v is None for k, v in entries.items()):
            return None
        return entries
    return None
