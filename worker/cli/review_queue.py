"""What `labelfabric review list` prints: the queue (or, with `--reviewers`, the roster with
each reviewer's record), as a table at any width or as JSON; and when a `--reviewer` filter
leaves nothing, why (not on the roster, not on the items' tasks, clearance below their
sensitivity). The queue itself is read by `worker.reviews.queue`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.cli.console import console, fail, in_catalog, temporal
from worker.cli.tables import Col, emit_json, show

if TYPE_CHECKING:
    from agents.roster import Reviewer
    from worker.settings import Settings

QUEUE_COLS = [
    Col("item_id", "item", fmt=lambda v: v[:12]),
    Col("dataset"),
    Col("state"),
    Col("since", fmt=lambda v: f"{v:%Y-%m-%d %H:%M}"),
    Col("reviewers", wrap=True),
]

REVIEWER_COLS = [
    Col("reviewer"),
    Col("tasks", wrap=True, fmt=lambda v: ", ".join(v) if v is not None else "(not on roster)"),
    Col("clearance"),
    Col("groups", wrap=True),
    Col("accepted", right=True),
    Col("refused", right=True),
    Col("gold", right=True),  # gold checks answered
    Col("accuracy", right=True, cell=lambda r: _accuracy(r["correct"], r["gold"])),
]


def _accuracy(right: int, gold: int) -> str:
    return f"{right / gold:.0%} ({right}/{gold})" if gold else "-"


def roster_of(settings: Settings) -> dict[str, Reviewer]:
    from rich.markup import escape

    from agents.roster import load_roster
    from agents.tasks import TaskError

    try:
        found = load_roster(settings.roster_path, simulated=settings.simulated_reviewers)
    except TaskError as err:
        raise fail(escape(str(err))) from err
    return {r.id: r for r in found}


async def reviewers(settings: Settings, as_json: bool) -> None:
    from catalog import db

    roster = roster_of(settings)
    stats = await in_catalog(settings, db.reviewer_stats)
    rows = []
    for rid in sorted(roster.keys() | stats.keys()):
        r = roster.get(rid)
        st = stats.get(rid, {})
        gold, right = st.get("gold", 0), st.get("correct", 0)
        rows.append(
            {
                "reviewer": rid,
                "on_roster": r is not None,
                "tasks": list(r.tasks) if r else None,
                "clearance": r.clearance if r else None,
                "groups": list(r.groups) if r else [],
                "role": r.role if r else None,
                "accepted": st.get("accepted", 0),
                "refused": st.get("refused", 0),
                "gold": gold,
                "correct": right,
                "accuracy": right / gold if gold else None,
            }
        )
    if as_json:
        emit_json({"roster": str(settings.roster_path), "reviewers": rows})
        return
    show(f"reviewers ({settings.roster_path})", REVIEWER_COLS, rows)


async def queue(
    settings: Settings, dataset: str | None, reviewer: str | None, limit: int, as_json: bool
) -> None:
    from catalog import db
    from worker import reviews

    client = await temporal(settings)
    found, count = await reviews.queue_for(
        settings, client, dataset=dataset, reviewer=reviewer, limit=limit
    )
    rows = [
        {
            "workflow_id": r.workflow_id,
            "item_id": r.item_id,
            "dataset": r.dataset,
            "state": r.state,
            "since": r.since,
            "reviewers": list(r.reviewers),
        }
        for r in found
    ]
    frontier = await in_catalog(settings, db.frontier_counts, dataset)
    why = ""
    if dataset and not count:
        why = await in_catalog(settings, _no_dataset, dataset)
    if reviewer and not count and not why:
        why = await nothing_for(settings, client, dataset, reviewer)
    if as_json:
        emit_json(
            {
                "items": rows,
                "count": count,
                "limit": limit,
                "frontier": {n: {"open": c.open, "queued": c.queued} for n, c in frontier.items()},
                **({"why_none": why} if why else {}),
            }
        )
        return
    if rows:
        show("review queue", QUEUE_COLS, rows)
    shown = f" ({limit} shown; --limit for more)" if count > limit else ""
    who = f" to {reviewer}" if reviewer else ""
    console.print(f"{count} item(s) open for review{who}{shown}")
    if why:
        console.print(why)
    for name, c in sorted(frontier.items()):
        console.print(
            f"frontier {name}: {c.open} open, {c.queued} waiting "
            "(they open as reviews close, highest priority first)"
        )


async def _no_dataset(conn: Any, dataset: str) -> str:
    """Why nothing is open in `dataset`, when the catalog has no such dataset ('' if it has)."""
    from catalog import job_report
    from worker.cli.checks import did_you_mean

    known = await job_report.known_datasets(conn)
    if dataset in known:
        return ""
    return f"why none: no dataset {dataset!r} in the catalog{did_you_mean(dataset, known)}"


async def nothing_for(settings: Settings, client: Any, dataset: str | None, reviewer: str) -> str:
    """Why no open item is open to `reviewer` ('' when none is open at all)."""
    from agents.roster import CLEARANCE, cleared
    from catalog import job_report
    from worker import reviews
    from worker.cli.checks import did_you_mean

    _, everything = await reviews.queue_for(
        settings, client, dataset=dataset, reviewer=None, limit=1
    )
    if not everything:
        return ""
    roster = roster_of(settings)
    entry = roster.get(reviewer)
    if entry is None:
        return (
            f"why none: {reviewer!r} is not on the roster ({settings.roster_path})"
            f"{did_you_mean(reviewer, roster)}; {everything} item(s) are open to others"
        )
    groups = await in_catalog(settings, job_report.open_review_groups, dataset)
    other_task = sum(g.items for g in groups if g.task not in entry.tasks)
    above = [
        g for g in groups if g.task in entry.tasks and not cleared(entry.clearance, g.sensitivity)
    ]
    parts = []
    if other_task:
        tasks = ", ".join(sorted({str(g.task) for g in groups if g.task not in entry.tasks}))
        parts.append(
            f"{other_task} are of tasks {reviewer} is not on ({tasks}; on the roster: "
            f"{', '.join(entry.tasks) or 'none'})"
        )
    if above:
        levels = sorted({g.sensitivity for g in above}, key=lambda s: (s not in CLEARANCE, s))
        parts.append(
            f"{sum(g.items for g in above)} are {', '.join(levels)}, above {reviewer}'s "
            f"clearance {entry.clearance} (levels, lowest first: {', '.join(CLEARANCE)})"
        )
    if not parts:
        parts.append(
            "they do not list them (opened before a roster change, or in another reviewer group)"
        )
    return f"why none for {reviewer}: of {everything} open item(s), " + "; ".join(parts)
