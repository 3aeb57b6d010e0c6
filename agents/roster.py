"""The reviewer roster: configuration (`config/roster.yaml`), not code.

A ReviewItem workflow receives the roster entries of its task when it starts, so its update
validator decides deterministically, without I/O; a roster edit applies to items routed after.

Simulated reviewers (`simulated: true`, ids starting `sim:`) answer from a gold file
(`labelfabric review bot`) to drive the learning loop in benchmarks and tests. They are on the
roster only where `LABELFABRIC_SIMULATED_REVIEWERS=1` is set (never by `make demo`), and their
id marks every record they leave: reviews, labels' reviewers, audit events.

An entry's `role` (default `reviewer`; `lead`, `admin`) is what the person may do on the
review page beyond reviewing (worker/web/auth.py). It lives here, with tasks and clearance,
so one reviewed file says who may do what, and removing an entry revokes all of it at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from agents.base import TaskError

CLEARANCE = ("public", "normal", "confidential", "restricted")
# What a person may do on the review page beyond reviewing (worker/web/): a `lead` corrects
# closed reviews and sees reviewer statistics, an `admin` manages logins and tokens.
ROLES = ("reviewer", "lead", "admin")


@dataclass(frozen=True, kw_only=True, slots=True)
class Reviewer:
    id: str
    tasks: tuple[str, ...]
    clearance: str
    groups: tuple[str, ...]
    simulated: bool = False
    role: str = "reviewer"


def cleared(clearance: str, sensitivity: str) -> bool:
    """Whether a reviewer's clearance covers an item's sensitivity (unknown levels: no)."""
    if clearance not in CLEARANCE or sensitivity not in CLEARANCE:
        return False
    return CLEARANCE.index(clearance) >= CLEARANCE.index(sensitivity)


SIMULATED_PREFIX = "sim:"


def load_roster(path: Path, *, simulated: bool = False) -> list[Reviewer]:
    """The roster; simulated reviewers only when `simulated` (the setting) allows them."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise TaskError(f"roster not found: {path}") from err
    except yaml.YAMLError as err:
        raise TaskError(f"{path}: not valid YAML: {err}") from err
    entries = raw.get("reviewers") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise TaskError(f"{path}: expected a list under 'reviewers'")
    roster: list[Reviewer] = []
    for i, entry in enumerate(entries):
        where = f"{path}: reviewers[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise TaskError(f"{where}: each reviewer needs a string 'id'")
        if entry.get("clearance", "normal") not in CLEARANCE:
            raise TaskError(f"{where} ({entry['id']}): clearance must be one of {CLEARANCE}")
        if entry.get("role", "reviewer") not in ROLES:
            raise TaskError(f"{where} ({entry['id']}): role must be one of {ROLES}")
        is_sim = entry.get("simulated", False)
        if not isinstance(is_sim, bool) or is_sim != entry["id"].startswith(SIMULATED_PREFIX):
            raise TaskError(
                f"{where} ({entry['id']}): a simulated reviewer (simulated: true) has an id "
                f"starting {SIMULATED_PREFIX!r}, and only a simulated one does"
            )
        roster.append(
            Reviewer(
                id=entry["id"],
                tasks=tuple(entry.get("tasks") or ()),
                clearance=entry.get("clearance", "normal"),
                groups=tuple(entry.get("groups") or ("primary",)),
                simulated=is_sim,
                role=entry.get("role", "reviewer"),
            )
        )
    ids = [r.id for r in roster]
    if len(ids) != len(set(ids)):
        raise TaskError(f"{path}: reviewer ids must be unique")
    return [r for r in roster if simulated or not r.simulated]


def with_role(text: str, reviewer: str, role: str) -> str:
    """The roster file's text with `reviewer`'s role set to `role`, every other line as it
    was (comments, order, quoting). Only block-style entries (`- id: …` then one key per
    line) are edited; anything else raises ValueError, to be edited by hand."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)-(\s+)id:\s*(.+?)\s*(#.*)?$", line.rstrip("\r\n"))
        if m is None or _scalar(m.group(3)) != reviewer:
            continue
        dash, key_col = len(m.group(1)), len(m.group(1)) + 1 + len(m.group(2))
        end = i + 1
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > dash
        ):
            end += 1
        newline = "\r\n" if line.endswith("\r\n") else "\n"
        for j in range(i + 1, end):
            if re.match(rf"^ {{{key_col}}}role:", lines[j]):
                lines[j] = f"{' ' * key_col}role: {role}{newline}"
                return "".join(lines)
        lines.insert(i + 1, f"{' ' * key_col}role: {role}{newline}")
        return "".join(lines)
    raise ValueError(f"no block-style roster entry `- id: {reviewer}`: edit the file by hand")


def _scalar(raw: str) -> object:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return None
