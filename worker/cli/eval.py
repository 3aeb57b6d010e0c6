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
from worker.cli.tables import line, status

if TYPE_CHECKING:
    from agents.tasks import TaskSpec
    from worker.settings import Settings


BUILT_IN = {"rotten_tomatoes": "sentiment", "digits": "digits"}
# The policy id eval writes its calibrated versions under, in the state dir (eval_policies_dir).
EVAL_POLICY = "route_calibrated_eval"


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
    from worker.cli.eval_report import plot, print_report
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
    with status(f"calibrating on {len(cal)} items…"):
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
        # In the state dir, as a policy of its own: an evaluation changes nothing released
        # (only `labelfabric calibrate` writes to policies_dir, to be committed).
        ref, _ = with_params(
            settings.policies_dir,
            "route_calibrated",
            calibrated_params(calibration, choose),
            note=f"labelfabric eval {name} ({calibration.aggregator}): {shown} on {len(cal)} "
            f"calibration items (target {target:.0%})",
            into=settings.eval_policies_dir,
            as_id=EVAL_POLICY,
        )
    except PolicyError as err:
        raise fail(escape(str(err))) from err
    policy_file = settings.eval_policies_dir / ref.id / f"v{ref.version}.yaml"

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
    from worker.metrics import command  # exports only when asked (README: Observability)

    with command(settings, "eval"):
        result = asyncio.run(start_job(settings, workflow_id, inp, wait=True))
    assert result is not None
    truth = {r.item_id: str(r.label) for r in test}
    with status("scoring the job against the held-out labels…"):
        report, withdrawn = asyncio.run(
            _after_job(settings, spec, eval_dataset, result.job_id, truth)
        )
    report |= {
        "dataset": name,
        "task": spec.name,
        "job": result.job_id,
        "policy": f"{ref.id}@{ref.version}",
        "policy_file": str(policy_file),
        "reviews_withdrawn": withdrawn,
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
    plot(report, out / "accuracy_vs_auto_accept.png")
    print_report(report)
    line(f"report: {out / 'report.json'}")
    line(f"plot:   {out / 'accuracy_vs_auto_accept.png'}")
    line(f"policy: {ref} in {policy_file} (state dir; not a released version)")
    if withdrawn:
        console.print(f"the job's {withdrawn} review(s) were withdrawn: an evaluation asks no one")


async def _after_job(
    settings: Settings, spec: TaskSpec, dataset: str, job_id: str, truth: dict[str, str]
) -> tuple[dict[str, Any], int]:
    """The job's scores, and its reviews withdrawn (how many)."""
    from worker.cli.console import temporal
    from worker.cli.eval_report import score, withdraw_reviews

    client = await temporal(settings)
    withdrawn = await withdraw_reviews(settings, client, dataset, job_id)
    return await score(settings, spec, job_id, truth), withdrawn


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
