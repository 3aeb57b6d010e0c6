"""What `labelfabric policy diff` and `policy shadow-report` show, computed from policies and
catalog rows. No Typer commands here; the commands in `worker.cli.policy` import this module
when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.cli.console import console
from worker.cli.tables import Col

if TYPE_CHECKING:
    from catalog.rows import ShadowExampleRow
    from policy_rules.engine import Policy
    from worker.settings import Settings

Cells = list[tuple[str, str, int]]  # (decided outcome, candidate outcome, items)

POLICY_COLS = [
    Col("policy"),
    Col("versions", wrap=True),
    Col("active", fmt=lambda v: f"v{v}" if v else "-"),
    Col("shadow", wrap=True, fmt=lambda v: ", ".join(f"v{n}" for n in v)),
    Col("since"),
    Col("by", wrap=True),
    Col("reason", wrap=True),
]


def policy_rows(settings: Settings, active: list[Any], shadows: list[Any]) -> list[dict[str, Any]]:
    """`policy list`'s rows: the released policies, then eval's (in the state dir)."""
    from policy_rules.engine import list_policies
    from policy_rules.loader import version_files

    current = {row.policy_id: row for row in active}
    shadowed: dict[str, list[int]] = {}
    for sh in shadows:
        shadowed.setdefault(sh.policy_id, []).append(sh.candidate_version)
    rows = []
    for folder in (settings.policies_dir, settings.eval_policies_dir):
        for policy_id in list_policies(folder):
            versions = sorted(version_files(folder / policy_id))
            row = current.get(policy_id)
            rows.append({"policy": policy_id, "folder": str(folder), "versions": versions,
                         "active": row.version if row else None, "newest": versions[-1],
                         "shadow": shadowed.get(policy_id, []),
                         "since": row.at if row else None, "by": row.actor if row else None,
                         "reason": row.reason if row else None})  # fmt: skip
    return rows


def diff_lines(old: Policy, new: Policy) -> list[str]:
    """What changed from `old` to `new`: params, rules (and their order), default, review."""
    lines = []
    for name in sorted(old.params.keys() | new.params.keys()):
        before, after = old.params.get(name), new.params.get(name)
        if before != after:
            lines.append(f"param {name}: {before!r} -> {after!r}")
    old_rules = {r.id: r for r in old.rules}
    new_rules = {r.id: r for r in new.rules}
    for rid in old_rules.keys() - new_rules.keys():
        lines.append(f"rule {rid}: removed")
    for rule in new.rules:
        was = old_rules.get(rule.id)
        if was is None:
            lines.append(f"rule {rule.id}: added: when {rule.when} -> {rule.outcome}")
        elif (was.when, was.outcome) != (rule.when, rule.outcome):
            lines.append(
                f"rule {rule.id}: when {was.when} -> {was.outcome}  became  "
                f"when {rule.when} -> {rule.outcome}"
            )
        if was is not None and dict(was.params) != dict(rule.params):
            lines.append(f"rule {rule.id} params: {dict(was.params)} -> {dict(rule.params)}")
    order_old = [r.id for r in old.rules if r.id in new_rules]
    order_new = [r.id for r in new.rules if r.id in old_rules]
    if order_old != order_new:
        lines.append(f"rule order: {', '.join(order_old)} -> {', '.join(order_new)}")
    if old.default_outcome != new.default_outcome:
        lines.append(f"default: {old.default_outcome} -> {new.default_outcome}")
    for name, before, after in _review_changes(old, new):
        lines.append(f"review.{name}: {before} -> {after}")
    return lines


def _review_changes(old: Policy, new: Policy) -> list[tuple[str, str, str]]:
    a, b = review_fields(old), review_fields(new)
    return [(k, _value(a.get(k)), _value(b.get(k))) for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k)]  # fmt: skip


def review_fields(policy: Policy) -> dict[str, Any]:
    """A route policy's review rules as plain values ({} for other kinds)."""
    from dataclasses import asdict

    return asdict(policy.review) if policy.kind == "route" else {}


def _value(value: Any) -> str:
    """A param as it reads in YAML: strings quoted, numbers and booleans as written."""
    import json

    return json.dumps(value) if isinstance(value, str | bool) or value is None else str(value)


def policy_json(policy: Policy) -> dict[str, Any]:
    """What `policy show --json` prints."""
    return {
        "id": policy.ref.id,
        "version": policy.ref.version,
        "sha256": policy.ref.sha256,
        "kind": policy.kind,
        "file": str(policy.path),
        "description": policy.description,
        "cost": policy.cost,
        "params": dict(policy.params),
        "rules": [
            {"id": r.id, "when": r.when, "outcome": r.outcome, "params": dict(r.params),
             "description": r.description}
            for r in policy.rules
        ],
        "default": policy.default_outcome,
        "review": review_fields(policy) or None,
    }  # fmt: skip


def print_policy(policy: Policy) -> None:
    """One version for a person: every rule's CEL whole, wrapped between words at the
    console's width; values as YAML writes them."""
    import textwrap

    from rich.text import Text

    from worker.cli.tables import line, pairs

    width = max(40, console.width)

    def wrapped(text: str, first: str, rest: str) -> None:
        filled = textwrap.fill(" ".join(text.split()), width=width, initial_indent=first,
                               subsequent_indent=rest, break_long_words=False,
                               break_on_hyphens=False)  # fmt: skip
        for out in filled.splitlines():
            console.print(Text(out), soft_wrap=True)

    line(f"{policy.ref} ({policy.kind} policy, cost <= {policy.cost})")
    line(f"file {policy.path}")
    line(f"sha256 {policy.ref.sha256}")
    if policy.description:
        wrapped(policy.description, "", "")
    if policy.params:
        pairs("params", [(name, _value(v)) for name, v in policy.params.items()])
    console.print(Text("rules (the first that matches decides)", style="italic"))
    for n, rule in enumerate(policy.rules, start=1):
        console.print(Text(f"{n}. {rule.id} -> {rule.outcome}", style="bold"), soft_wrap=True)
        wrapped(rule.when, "   when ", "        ")
        if rule.params:
            own = ", ".join(f"{k} = {_value(v)}" for k, v in rule.params.items())
            wrapped(own, "   params ", "          ")
    console.print(Text(f"otherwise -> {policy.default_outcome}", style="bold"))
    review = review_fields(policy)
    if review:
        pairs("review (how a routed item's review closes)",
              [(k, _value(v)) for k, v in review.items()])  # fmt: skip


async def shadow_rows(
    conn: Any, policy_id: str, version: int, examples: int, on: str | None
) -> tuple[Cells, list[ShadowExampleRow]]:
    """A candidate's confusion cells and up to `examples` differing items per cell."""
    from catalog import db

    cells = await db.shadow_confusion(conn, policy_id, version, on)
    rows = await db.shadow_examples(conn, policy_id, version, per_cell=examples, policy_id=on)
    return cells, rows


def shadow_report(ref: str, cells: Cells, rows: list[ShadowExampleRow]) -> dict[str, Any]:
    """The report `shadow-report --json` prints."""
    total = sum(n for _, _, n in cells)
    same = sum(n for a, c, n in cells if a == c)
    return {
        "candidate": ref,
        "items": total,
        "agree": same,
        "agreement": same / total if total else None,
        "confusion": [{"decided": a, "candidate": c, "items": n} for a, c, n in cells],
        "examples": [
            {
                "decided": r.active_outcome,
                "candidate": r.outcome,
                "decided_rule": r.active_rule,
                "candidate_rule": r.rule_id,
                "error": r.error,
                "item_id": r.item_id,
                "job_id": r.job_id,
                "ensemble_label": r.ensemble_label,
                "ensemble_confidence": r.ensemble_confidence,
                "text": r.text[:200],
            }
            for r in rows
        ],
    }


def print_shadow_report(ref: str, cells: Cells, rows: list[ShadowExampleRow]) -> None:
    """The report as tables: agreement, confusion (decided x candidate), examples."""

    from rich.markup import escape
    from rich.table import Table

    total = sum(n for _, _, n in cells)
    same = sum(n for a, c, n in cells if a == c)
    console.print(f"{ref}: {total} items, same outcome on {same} ({same / total:.1%})")
    outcomes = sorted({a for a, _, _ in cells} | {c for _, c, _ in cells})
    table = Table(title="decided (rows) vs candidate (columns)")
    table.add_column("decided / candidate")
    for o in outcomes:
        table.add_column(o, justify="right")
    counts = {(a, c): n for a, c, n in cells}
    for a in outcomes:
        table.add_row(a, *(str(counts.get((a, c), 0)) for c in outcomes))
    console.print(table)
    if rows:
        ex = Table(title="where they differ (examples)")
        for col in ("decided", "candidate", "item", "ensemble", "text"):
            ex.add_column(col)
        for r in rows:
            ex.add_row(
                f"{r.active_outcome} ({r.active_rule})",
                f"{r.outcome} ({r.rule_id})" + (f" error: {escape(r.error)}" if r.error else ""),
                r.item_id[:12],
                f"{r.ensemble_label or '-'} {r.ensemble_confidence:.2f}",
                escape(r.text[:80]),
            )
        console.print(ex)
