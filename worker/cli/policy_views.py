"""What `labelfabric policy diff` and `policy shadow-report` show, computed from policies and
catalog rows. No Typer commands here; the commands in `worker.cli.policy` import this module
when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.cli.console import console

if TYPE_CHECKING:
    from catalog.rows import ShadowExampleRow
    from policy_rules.engine import Policy

Cells = list[tuple[str, str, int]]  # (decided outcome, candidate outcome, items)


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
    if old.review != new.review:
        lines.append(f"review: {old.review} -> {new.review}")
    return lines


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
