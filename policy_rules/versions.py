"""New policy versions from old ones: the newest version's text with some params changed.

Released versions are immutable (jobs pin version + sha256), so a change is always a new
file `v{N+1}.yaml`. The text is edited, not re-serialised, so comments and layout survive.
A new version must parse and pass the policy's cases before it is kept; a version whose
rules and params equal an existing version's is not written again (that one is returned).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from policy_rules.cases import check_cases
from policy_rules.loader import version_files
from policy_rules.model import Policy, PolicyError, PolicyRef


def with_params(
    policies_dir: Path,
    policy_id: str,
    params: Mapping[str, float | str],
    *,
    note: str,
    into: Path | None = None,
    as_id: str | None = None,
) -> tuple[PolicyRef, bool]:
    """The version of `policy_id` with these params: (ref, True) when newly written.

    With `into` and `as_id`, the version is written as a policy of its own, `as_id` under
    `into` (numbered on its own, with the same cases), from `policy_id`'s newest version:
    what `labelfabric eval` keeps in the state dir, away from the released versions."""
    source = Path(policies_dir) / policy_id
    versions = version_files(source)
    if not versions:
        raise PolicyError(f"unknown policy '{policy_id}': no {source}/v<N>.yaml")
    newest = max(versions)
    text = versions[newest].read_text(encoding="utf-8")
    for name, value in params.items():
        pattern = re.compile(rf"^(\s+{re.escape(name)}:\s*)([^#\n]*?)(\s*(#.*)?)$", re.M)
        if len(pattern.findall(text)) != 1:
            raise PolicyError(f"{versions[newest]}: no single param line '{name}:' to change")
        scalar = _yaml_scalar(value).replace("\\", "\\\\")
        text = pattern.sub(rf"\g<1>{scalar}\g<3>", text)
    root, target_id = Path(into or policies_dir), as_id or policy_id
    folder = root / target_id
    if target_id != policy_id:
        text = re.sub(r"^id:\s*\S+", f"id: {target_id}", text, count=1, flags=re.M)
    wanted = Policy.load(policies_dir, f"{policy_id}@{newest}")  # for the comparison below
    made = version_files(folder)
    for version in sorted(made):
        existing = Policy.load(root, f"{target_id}@{version}")
        if existing.params == {**wanted.params, **params} and _rules(existing) == _rules(wanted):
            return existing.ref, False
    new = max(made, default=0) + 1
    text = re.sub(r"^version:\s*\d+", f"version: {new}", text, count=1, flags=re.M)
    data = f"# v{new}: {note}\n{text}"
    cases = source / "cases.yaml"
    # Checked in a scratch copy first, so no job can pick up a version that fails its cases.
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / target_id
        scratch.mkdir()
        (scratch / f"v{new}.yaml").write_text(data, encoding="utf-8")
        policy = Policy.load(Path(tmp), f"{target_id}@{new}")
        failures = check_cases(policy, cases) if cases.is_file() else []
        if failures:
            raise PolicyError(f"v{new} fails its cases: " + "; ".join(failures[:3]))
    if folder != source:
        folder.mkdir(parents=True, exist_ok=True)
        if cases.is_file():  # a policy folder ships with its cases
            (folder / "cases.yaml").write_bytes(cases.read_bytes())
    try:
        # "x": a concurrent calibration that took this number first is never overwritten.
        with (folder / f"v{new}.yaml").open("x", encoding="utf-8") as fh:
            fh.write(data)
    except FileExistsError as err:
        raise PolicyError(
            f"{folder}/v{new}.yaml appeared while this version was prepared: run again"
        ) from err
    policy = Policy.load(root, f"{target_id}@{new}")
    return policy.ref, True


def _rules(policy: Policy) -> list[tuple[str, str, str]]:
    return [(r.id, r.when, r.outcome) for r in policy.rules]


def _yaml_scalar(value: float | str) -> str:
    """A YAML 1.1 scalar PyYAML reads back as the same type: floats in fixed notation (PyYAML
    reads `3e-05` as a string), strings double-quoted."""
    if isinstance(value, str):
        return json.dumps(value)
    fixed = format(Decimal(repr(float(value))), "f")  # the shortest round-trip digits
    return fixed if "." in fixed else fixed + ".0"
