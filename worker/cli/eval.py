"""`labelfabric eval`: how many items the fabric labels on its own, and how accurately, measured
through real workflows on labeled data whose labels the agents never see.

1. The labeled records are split by a salted hash of the item id: a calibration slice
   (`--calibration-share`, default 30 %) and a test slice.
2. `calibrate` finds the confidence threshold for the target accuracy on the calibration
   slice and writes it as a `route_calibrated` version.
3. The test slice's texts (without labels) run as a `LabelDataset` job on the stack's worker.
4. The job's recorded votes and decisions are read back from the catalog and scored against
   the held-out labels: per agent, per aggregator, and the routing itself.

Writes `report.json` and `accuracy_vs_auto_accept.png` to `<home>/eval/<name>/`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli import group
from worker.cli.console import console, fail

if TYPE_CHECKING:
    from agents.base import Vote
    from agents.tasks import TaskSpec
    from worker.settings import Settings


BUILT_IN = {"rotten_tomatoes": "sentiment", "digits": "digits"}


commands = group()  # top-level commands: labelfabric eval


@commands.command("eval")
def evaluate(
    dataset: Annotated[
        str | None, typer.Option(help=f"A built-in labeled dataset: {', '.join(BUILT_IN)}.")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Your own labeled JSONL/CSV file.")] = None,
    task: Annotated[str | None, typer.Option(help="Task for --data (its agents vote).")] = None,
    text_field: Annotated[str | None, typer.Option(help="Text field of --data.")] = None,
    label_field: Annotated[str, typer.Option(help="Label field of --data.")] = "label",
    feature_fields: Annotated[
        str | None,
        typer.Option(help="Tabular --data: comma-separated numeric fields, in feature order."),
    ] = None,
    target: Annotated[float, typer.Option(help="Accuracy auto-accepted labels must reach.")] = 0.95,
    calibration_share: Annotated[float, typer.Option(help="Share used to calibrate.")] = 0.3,
) -> None:
    """Evaluate the fabric on labeled data through real workflows; table, JSON and PNG plot."""

    import asyncio

    from rich.markup import escape

    from activities.payloads import LabelDatasetInput
    from agents.calibrate import calibrate as calibrate_on
    from agents.tasks import TaskError, load_task
    from formats.gold import GoldError, read_gold
    from policy_rules.engine import PolicyError
    from policy_rules.versions import with_params
    from worker.cli.agent import (
        calibrated_params,
        declares_aggregator,
        store_reliability,
        vote_on,
    )
    from worker.settings import Settings

    settings = Settings()
    if not 0 < calibration_share < 1:
        raise fail(f"--calibration-share must be between 0 and 1, got {calibration_share}")
    if (dataset is None) == (data is None):
        raise fail("give either --dataset (built in) or --data FILE with --task")
    if dataset is not None:
        if dataset not in BUILT_IN:
            raise fail(f"unknown dataset {dataset!r}: built in are {', '.join(BUILT_IN)}")
        name, task_name = dataset, BUILT_IN[dataset]
    else:
        assert data is not None
        if task is None:
            raise fail("--data needs --task (the task whose agents label it)")
        name, task_name = data.stem, task
    out = settings.home_dir / "eval" / name
    out.mkdir(parents=True, exist_ok=True)
    try:
        own = load_task(settings.tasks_dir, task_name)
        spec = replace(own, text_field=text_field) if text_field else own
        source = data if data is not None else _built_in(name, out)
        if feature_fields:
            if data is None:
                raise fail("--feature-fields goes with --data")
            fields = [f.strip() for f in feature_fields.split(",") if f.strip()]
            source = _features_as_text(data, fields, label_field, out / "features.jsonl")
            spec = replace(own, text_field="text")
        labeled = read_gold(spec, source, label_field=label_field)
    except (TaskError, GoldError, ValueError) as err:
        raise fail(escape(str(err))) from err
    if labeled.refused:
        r = labeled.refused[0]
        raise fail(escape(f"{source}:{r.line}: {r.reason} ({len(labeled.refused)} bad line(s))"))
    records = labeled.records
    cal = [r for r in records if _calibration(r.item_id, calibration_share)]
    test = [r for r in records if not _calibration(r.item_id, calibration_share)]
    console.print(f"{name}: {len(records)} labeled items, {len(cal)} calibrate, {len(test)} test")
    if len(cal) < 20 or not test:
        raise fail(
            f"too few labeled items to evaluate: {len(cal)} to calibrate (20 at least) and "
            f"{len(test)} to test; give more data or another --calibration-share"
        )

    try:
        choose = declares_aggregator(settings, "route_calibrated")
    except PolicyError as err:
        raise fail(escape(str(err))) from err
    with console.status(f"calibrating on {len(cal)} items…"):
        keys, per_agent = vote_on(settings, spec, [r.text for r in cal])
    calibration = calibrate_on(
        spec, keys, per_agent, [str(r.label) for r in cal], target=target, choose=choose
    )
    point = calibration.point
    if point is None:
        # Never over-promise: no threshold shows the target, so this version accepts nothing.
        console.print(f"[yellow]{escape(calibration.reason)}; auto-accepting nothing[/]")
    shown = (
        f"{point.accuracy:.1%} accurate at {point.rate:.1%} auto-accepted"
        if point
        else "target not shown, auto-accepts nothing"
    )
    cal_ids = hashlib.sha256("".join(r.item_id for r in cal).encode()).hexdigest()
    try:
        store_reliability(settings, spec, calibration.combined, cal_ids)
        ref, _ = with_params(
            settings.policies_dir,
            "route_calibrated",
            calibrated_params(calibration, choose),
            note=f"labelfabric eval {name} ({calibration.aggregator}): {shown} on {len(cal)} "
            f"calibration items (target {target:.0%})",
        )
    except PolicyError as err:
        raise fail(escape(str(err))) from err

    items = out / "test_items.jsonl"
    # The job reads the task's own text field, whatever the labeled file called it.
    items.write_text("".join(json.dumps({own.text_field: r.text}) + "\n" for r in test))
    from activities.ids import label_workflow_id
    from worker.cli.job import new_job_id, start_job

    eval_dataset = f"eval-{name}"
    workflow_id = label_workflow_id(eval_dataset, new_job_id())
    inp = LabelDatasetInput(
        dataset=eval_dataset,
        source=str(items.resolve()),
        task=spec.name,
        policy=f"{ref.id}@{ref.version}",
    )
    result = asyncio.run(start_job(settings, workflow_id, inp, wait=True))
    assert result is not None
    truth = {r.item_id: str(r.label) for r in test}
    report = asyncio.run(_score(settings, spec, result.job_id, truth))
    report |= {
        "dataset": name,
        "task": spec.name,
        "job": result.job_id,
        "policy": f"{ref.id}@{ref.version}",
        "threshold": calibration.threshold,
        "target": target,
        "target_reached_on_calibration": point is not None,
        "calibration_items": len(cal),
        "calibration_accuracy_auto": point.accuracy if point else None,
        "calibration_accuracy_auto_lower_bound": point.lower() if point else None,
        "calibration_auto_rate": point.rate if point else 0.0,
        # The job routed with the policy version, which names the chosen aggregator when
        # route_calibrated declares the param (else the task's, which was then the only one).
        "aggregator": calibration.aggregator,
        "aggregator_chosen": calibration.aggregator,
        "aggregator_accuracy_on_calibration": calibration.accuracy,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    _plot(report, out / "accuracy_vs_auto_accept.png")
    _print(report)
    console.print(f"report: {out / 'report.json'}\nplot:   {out / 'accuracy_vs_auto_accept.png'}")


def _features_as_text(data: Path, fields: list[str], label_field: str, out: Path) -> Path:
    """A tabular file as items whose text is their feature values joined by spaces (the form
    `tabular` agents read), with the label kept; a row without a numeric value is refused."""
    from formats.gold import GoldError

    if not data.is_file():
        raise GoldError(f"data file {data} does not exist")
    if data.suffix.lower() == ".csv":
        with data.open(newline="", encoding="utf-8") as fh:
            rows: list[tuple[int, dict[str, Any]]] = [
                (i, dict(r)) for i, r in enumerate(csv.DictReader(fh), start=2)
            ]
    else:
        rows = []
        for i, line in enumerate(data.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise GoldError(f"{data}:{i}: bad JSON: {err.msg}") from err
    with out.open("w", encoding="utf-8") as fh:
        for lineno, row in rows:
            if not isinstance(row, dict):
                raise GoldError(f"{data}:{lineno}: expected a JSON object")
            try:
                values = [float(row[f]) for f in fields]
            except KeyError as err:
                raise GoldError(f"{data}:{lineno}: no field {err.args[0]!r}") from err
            except (TypeError, ValueError) as err:
                raise GoldError(f"{data}:{lineno}: a feature is not a number ({err})") from err
            if not all(math.isfinite(v) for v in values):
                raise GoldError(f"{data}:{lineno}: a feature is not a finite number")
            text = " ".join(f"{v:g}" for v in values)
            raw = row.get(label_field)
            label = None if raw is None else str(raw)  # JSON class ids may be numbers
            fh.write(json.dumps({"text": text, label_field: label}) + "\n")
    return out


def _calibration(item_id: str, share: float) -> bool:
    digest = hashlib.sha256(f"eval-calibration:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


def _built_in(name: str, out: Path) -> Path:
    if name == "rotten_tomatoes":
        from agents.samples import write_sample

        return write_sample(out / "sample").gold
    from agents.digits import write_digits_sample

    return write_digits_sample(out / "sample").gold


async def _score(
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


def _print(r: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"eval {r['dataset']} (task {r['task']}, {r['items']} test items)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for agent, m in r["agents"].items():
        table.add_row(f"agent {agent}", f"{m['accuracy']:.1%} on {m['coverage']:.0%} covered")
    for agg, acc in r["aggregator_accuracy"].items():
        on_cal = r["aggregator_accuracy_on_calibration"].get(agg)
        cal = f" ({on_cal:.1%} on calibration)" if on_cal is not None else ""
        table.add_row(f"aggregator {agg}", f"{acc:.1%}{cal}")
    table.add_row("routing aggregator", f"{r['aggregator']} (chosen on calibration)")
    table.add_row("calibrated threshold", f"{r['threshold']:.4f} ({r['policy']})")
    table.add_row("auto-accepted", f"{r['auto_accept_rate']:.1%}")
    table.add_row("accuracy of auto-accepted", f"{r['auto_accept_accuracy']:.1%}")
    reached = (
        " (shown on calibration, 95 % confidence)"
        if r["target_reached_on_calibration"]
        else " (not shown on calibration: nothing auto-accepted)"
    )
    table.add_row("target", f"{r['target']:.0%}{reached}")
    table.add_row("sent to review", f"{r['review_rate']:.1%}")
    alpha = r["alpha"]
    table.add_row("Krippendorff's alpha", "n/a" if alpha is None else f"{alpha:.3f}")
    console.print(table)


def _plot(r: dict[str, Any], path: Path) -> None:
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
