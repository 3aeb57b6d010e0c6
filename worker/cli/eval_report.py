"""What `labelfabric eval` does after its job: score the job's recorded votes and decisions
against the held-out labels, print and plot the report, and withdraw the job's reviews (an
evaluation asks nobody to label anything). The command is in `worker.cli.eval`."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.cli.console import in_catalog

if TYPE_CHECKING:
    from agents.tasks import TaskSpec
    from worker.settings import Settings


async def score(
    settings: Settings, task: TaskSpec, job_id: str, truth: dict[str, str]
) -> dict[str, Any]:
    from activities.ids import AUTO_ACCEPT, HUMAN_REVIEW
    from agents.aggregate import DawidSkene, krippendorff_alpha, majority_vote, weighted_vote
    from agents.base import Vote
    from agents.calibrate import curve
    from catalog import db

    engine = db.make_engine(settings.catalog_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            votes, decisions = await db.job_votes_and_decisions(conn, job_id)
    finally:
        await engine.dispose()
    agents = sorted({v.agent for v in votes})
    by_item: dict[str, dict[str, Vote]] = {}
    for v in votes:
        vote = Vote(label=v.label, confidence=v.confidence, rationale="")
        by_item.setdefault(v.item_id, {})[v.agent] = vote
    ids = sorted(i for i in by_item if i in truth)
    rows = [[by_item[i][a] for a in agents] for i in ids]
    n = len(ids)
    per_agent = {}
    for j, a in enumerate(agents):
        voted = [(row[j].label, truth[i]) for i, row in zip(ids, rows, strict=True) if row[j].label]
        per_agent[a] = {
            "coverage": len(voted) / n if n else 0.0,
            "accuracy": sum(x == y for x, y in voted) / len(voted) if voted else 0.0,
        }
    matrix = [[v.label for v in row] for row in rows]
    ds = DawidSkene.fit(task.labels, agents, matrix)
    aggregators = {
        "majority_vote": [majority_vote(r).label for r in rows],
        "weighted_vote": [weighted_vote(r).label for r in rows],
        "dawid_skene": [ds.ensemble(r).label for r in rows],
    }
    accuracy = {
        k: sum(lbl == truth[i] for lbl, i in zip(v, ids, strict=True)) / n
        for k, v in aggregators.items()
    }
    dec = {d.item_id: d for d in decisions if d.item_id in truth}
    auto = [d for d in dec.values() if d.outcome == AUTO_ACCEPT]
    points = curve(
        [dec[i].ensemble_confidence for i in ids],
        [dec[i].ensemble_label == truth[i] for i in ids],
    )
    alpha = krippendorff_alpha(matrix)
    return {
        "items": n,
        "agents": per_agent,
        "aggregator_accuracy": accuracy,
        "aggregator": task.aggregator,
        "auto_accept_rate": len(auto) / n if n else 0.0,
        "auto_accept_accuracy": (
            sum(d.ensemble_label == truth[d.item_id] for d in auto) / len(auto) if auto else 0.0
        ),
        "review_rate": sum(d.outcome == HUMAN_REVIEW for d in dec.values()) / n if n else 0.0,
        "alpha": None if math.isnan(alpha) else alpha,
        "curve": [[p.rate, p.accuracy, p.threshold] for p in points],
    }


def print_report(r: dict[str, Any]) -> None:
    from worker.cli.tables import pairs

    rows: list[tuple[str, str]] = []
    for agent, m in r["agents"].items():
        rows.append((f"agent {agent}", f"{m['accuracy']:.1%} on {m['coverage']:.0%} covered"))
    for agg, acc in r["aggregator_accuracy"].items():
        on_cal = r["aggregator_accuracy_on_calibration"].get(agg)
        cal = f" ({on_cal:.1%} on calibration)" if on_cal is not None else ""
        rows.append((f"aggregator {agg}", f"{acc:.1%}{cal}"))
    reached = (
        " (shown on calibration, 95 % confidence)"
        if r["target_reached_on_calibration"]
        else " (not shown on calibration: nothing auto-accepted)"
    )
    alpha = r["alpha"]
    rows += [
        ("routing aggregator", f"{r['aggregator']} (chosen on calibration)"),
        ("calibrated threshold", f"{r['threshold']:.4f} ({r['policy']})"),
        ("auto-accepted", f"{r['auto_accept_rate']:.1%}"),
        ("accuracy of auto-accepted", f"{r['auto_accept_accuracy']:.1%}"),
        ("target", f"{r['target']:.0%}{reached}"),
        ("sent to review", f"{r['review_rate']:.1%}"),
        ("Krippendorff's alpha", "n/a" if alpha is None else f"{alpha:.3f}"),
    ]
    pairs(f"eval {r['dataset']} (task {r['task']}, {r['items']} test items)", rows)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    # Thresholds accepting fewer than 20 items say little; leave them out of the picture.
    shown = [p for p in r["curve"] if p[0] * r["items"] >= 20]
    xs = [p[0] for p in shown]
    ys = [p[1] for p in shown]
    ax.plot(xs, ys, label=f"{r['aggregator']} confidence threshold")
    ax.axhline(r["target"], linestyle="--", color="grey", label=f"target {r['target']:.0%}")
    ax.scatter(
        [r["auto_accept_rate"]],
        [r["auto_accept_accuracy"]],
        color="red",
        zorder=3,
        label="calibrated policy",
    )
    ax.set_xlabel("auto-accept rate")
    ax.set_ylabel("accuracy of auto-accepted labels")
    ax.set_xlim(0, 1)
    ax.set_ylim(min(ys + [r["target"]]) - 0.05 if ys else 0, 1.0)
    ax.set_title(f"{r['dataset']}: accuracy vs auto-accept rate")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def withdraw_reviews(settings: Settings, client: Any, dataset: str, job_id: str) -> int:
    """Close the job's review tasks as superseded (waiting ones never open) and tell each open
    ReviewItem, which checks the catalog and ends; one audit event. How many were closed."""
    from temporalio.service import RPCError

    from catalog import db, job_report, kinds

    async def close(conn: Any) -> tuple[list[str], list[str]]:
        items = await job_report.unclosed_review_items(conn, job_id)
        workflows = await db.supersede_reviews(conn, dataset, items, job_id, by="eval")
        if items:
            await db.append_audit(
                conn,
                key=f"{job_id}:eval-withdrawn",
                actor="labelfabric eval",
                kind=kinds.REVIEWS_SUPERSEDED,
                subject=f"dataset:{dataset}",
                payload={"job": job_id, "withdrawn": len(items), "workflows": workflows},
            )
        return items, workflows

    items, workflows = await in_catalog(settings, close, begin=True)
    for workflow_id in workflows:
        with contextlib.suppress(RPCError):  # already closed: nothing to tell
            await client.get_workflow_handle(workflow_id).signal("supersede")
    return len(items)
