"""`labelfabric calibrate` and `labelfabric agent train`: measuring and versioning the agents.

Calibration runs the task's agents in this process over a gold slice (the same code path as
`label_chunk`), picks the aggregator that labels the slice best, finds the lowest confidence
threshold whose auto-accepted labels show the target accuracy with 95 % confidence (or none:
then the version auto-accepts nothing), and writes it as a new version of a policy
(`route_calibrated` by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli import group
from worker.cli.console import console, fail, temporal
from worker.cli.tables import JSON_HELP, line

if TYPE_CHECKING:
    from agents.base import Vote
    from agents.calibrate import Calibration
    from agents.pipeline import Combined
    from agents.tasks import TaskSpec
    from worker.settings import Settings


commands = group()  # top-level commands: labelfabric calibrate
app = group("The task's agents: train and store them.")


def vote_on(
    settings: Settings, task: TaskSpec, texts: list[str]
) -> tuple[list[str], list[list[Vote]]]:
    """Every agent's votes on `texts` (agent keys, votes per agent), as in a job."""

    import asyncio

    from agents.pipeline import agent_inputs, agent_keys, timed_predict
    from agents.tasks import build_agents

    agents = build_agents(task, None, models_dir=settings.models_dir)
    _, inputs = agent_inputs(task, agents, texts)  # PII rewritten per agent, as in a job

    async def predict_all() -> list[list[Vote]]:  # with each agent's timeout, as in a job
        return [await timed_predict(a, task, read) for a, read in zip(agents, inputs, strict=True)]

    return agent_keys(agents), asyncio.run(predict_all())


def calibrated_params(cal: Calibration, record_aggregator: bool) -> dict[str, float | str]:
    """What a calibration changes in the policy: the threshold (ACCEPT_NOTHING when the target
    was not shown), the aggregator chosen (when the policy declares the param) and, for
    Dawid–Skene, the model whose posteriors it was chosen on (jobs aggregate with exactly it)."""
    model = cal.combined.model
    params: dict[str, float | str] = {
        "min_confidence": cal.threshold,
        "reliability": model.version if model else "",
    }
    if record_aggregator:
        params["aggregator"] = cal.aggregator
    return params


def declares_aggregator(settings: Settings, policy: str) -> bool:
    """Whether the newest version of `policy` has an `aggregator` param to record a choice."""
    from policy_rules.engine import Policy

    return "aggregator" in Policy.load(settings.policies_dir, policy).params


def store_reliability(settings: Settings, task: TaskSpec, combined: Combined, source: str) -> None:
    """Keep a calibration's Dawid–Skene fit in the catalog: jobs of this task that start
    afterwards aggregate with it, so the threshold chosen on its posteriors holds for them."""

    import asyncio

    from catalog import db

    model = combined.model
    if model is None:
        return

    async def store() -> None:
        engine = db.make_engine(settings.catalog_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await db.store_reliability(
                    conn,
                    task=task.name,
                    version=model.version,
                    agents=model.agents,
                    model=model.to_dict(),
                    fitted_on=f"calibrate:{source}",
                    items=model.items,
                    alpha=combined.alpha_or(None),
                )
        finally:
            await engine.dispose()

    try:
        asyncio.run(store())
    except OSError as err:
        raise fail(
            f"cannot store the calibrated reliability model in the catalog at "
            f"{settings.where(settings.catalog_url)} ({err}); is the stack up? (labelfabric up)"
        ) from err


@commands.command("calibrate")
def calibrate(
    task: Annotated[str, typer.Option(help="The task whose agents are calibrated.")],
    gold: Annotated[Path, typer.Option(help="JSONL/CSV gold slice: text and label.")],
    target: Annotated[float, typer.Option(help="Accuracy auto-accepted labels must reach.")] = 0.95,
    policy: Annotated[str, typer.Option(help="Policy that gets the new version.")] = (
        "route_calibrated"
    ),
    min_accepted: Annotated[int, typer.Option(help="Fewest gold items a threshold accepts.")] = 20,
) -> None:
    """Find the confidence threshold that meets TARGET on a gold slice; write a policy version."""

    from rich.markup import escape

    from agents.calibrate import calibrate as calibrate_on
    from agents.tasks import TaskError, load_task
    from formats.gold import GoldError, read_gold
    from policy_rules.engine import PolicyError
    from policy_rules.versions import with_params
    from worker.settings import Settings

    settings = Settings()
    try:
        spec = load_task(settings.tasks_dir, task)
        slice_ = read_gold(spec, gold)
    except (TaskError, GoldError, ValueError) as err:
        raise fail(escape(str(err))) from err
    if slice_.refused:
        r = slice_.refused[0]
        raise fail(escape(f"{gold}:{r.line}: {r.reason} ({len(slice_.refused)} bad line(s))"))
    texts = [r.text for r in slice_.records]
    truth = [str(r.label) for r in slice_.records]
    try:
        choose = declares_aggregator(settings, policy)
    except PolicyError as err:
        raise fail(escape(str(err))) from err
    with console.status(f"{len(texts)} gold items through {len(spec.agents)} agents…"):
        try:
            keys, per_agent = vote_on(settings, spec, texts)
        except TaskError as err:
            raise fail(escape(str(err))) from err
    try:
        cal = calibrate_on(
            spec, keys, per_agent, truth, target=target, min_accepted=min_accepted, choose=choose
        )
    except ValueError as err:
        raise fail(escape(str(err))) from err
    shown = (
        f"{cal.point.accuracy:.1%} accurate at {cal.point.rate:.1%} auto-accepted"
        if cal.point
        else "target not shown: auto-accepts nothing"
    )
    note = (
        f"labelfabric calibrate, task {spec.name} ({cal.aggregator}), gold {gold.name} "
        f"sha256 {slice_.sha256[:12]}: {shown} (target {target:.0%})"
    )
    try:
        # The model first: a policy version never names a model the catalog lacks.
        store_reliability(settings, spec, cal.combined, slice_.sha256)
        ref, created = with_params(
            settings.policies_dir, policy, calibrated_params(cal, choose), note=note
        )
    except PolicyError as err:
        raise fail(escape(str(err))) from err
    overall = sum(e.label == t for e, t in zip(cal.combined.ensembles, truth, strict=True))
    print_calibration(spec, cal, overall / max(1, len(truth)), target)
    file = settings.policies_dir / ref.id / f"v{ref.version}.yaml"
    if created:
        console.print(f"wrote policy {ref}: start jobs with --policy {ref}")
        line(f"  {file}: a released version; commit it (git add {file})")
    else:
        console.print(f"already have policy {ref} ({file}): start jobs with --policy {ref}")
    if not cal.point:
        console.print(f"[yellow]{escape(cal.reason)}; this version auto-accepts nothing[/]")


def print_calibration(task: TaskSpec, cal: Calibration, overall: float, target: float) -> None:
    from worker.cli.tables import pairs

    rows = [
        ("aggregator", f"{cal.combined.method} (chosen by accuracy on the slice)"),
        *(
            (f"  accuracy, {m}", f"{a:.1%}")
            for m, a in sorted(cal.accuracy.items(), key=lambda kv: -kv[1])
        ),
        ("Krippendorff's alpha", f"{cal.combined.alpha:.3f}"),
        ("target", f"{target:.1%} (shown with 95 % confidence: Wilson lower bound)"),
    ]
    if cal.point:
        p = cal.point
        rows += [
            ("gold items", str(p.items)),
            ("accuracy, all items", f"{overall:.1%}"),
            ("threshold (min_confidence)", f"{p.threshold:.6f}"),
            ("auto-accepted", f"{p.accepted} ({p.rate:.1%})"),
            ("accuracy, auto-accepted", f"{p.accuracy:.1%} (lower bound {p.lower():.1%})"),
        ]
    else:
        rows += [
            ("accuracy, all items", f"{overall:.1%}"),
            ("threshold (min_confidence)", f"{cal.threshold:g}: auto-accept nothing"),
        ]
    pairs(f"calibration of {task.name}", rows)


@app.command("train")
def agent_train(
    task: Annotated[str, typer.Option(help="Train this task's model agents.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Train the task's agents from its seed and store each artifact in S3 by its version."""

    import asyncio

    from worker.settings import Settings

    asyncio.run(_train(Settings(), task, as_json))


async def _train(settings: Settings, task_name: str, as_json: bool) -> None:
    import asyncio
    import hashlib

    from rich.markup import escape

    from activities.s3 import make_s3_client, put_once
    from agents.tasks import TaskError, build_agents
    from worker.cli import checks
    from worker.cli.dataset_io import s3_problem
    from worker.cli.tables import Col, emit_json, show, status
    from worker.stack import s3_target

    spec = checks.task(settings, task_name)
    with status(f"training the agents of {spec.name} on its seed…") as say:
        try:
            agents = await asyncio.to_thread(
                build_agents, spec, None, models_dir=settings.models_dir
            )
        except TaskError as err:
            raise fail(escape(str(err))) from err
        s3 = make_s3_client(s3_target(settings))
        rows = []
        for agent, agent_spec in zip(agents, spec.agents, strict=True):
            artifact = settings.models_dir / f"{agent.name}-{agent.version}.pkl"
            row = {"agent": agent.name, "kind": agent_spec.kind, "version": agent.version,
                   "s3_uri": None, "s3_version_id": None}  # fmt: skip
            if artifact.is_file():
                key = f"models/{spec.name}/{agent.name}/{agent.version}.pkl"
                say(f"storing {key} in S3…")
                body = artifact.read_bytes()
                try:
                    found, resp = await asyncio.to_thread(
                        put_once, s3, settings.s3_bucket, key, body,
                        writer=f"agent-train:{spec.name}", sha=hashlib.sha256(body).hexdigest(),
                    )  # fmt: skip
                except Exception as err:
                    raise fail(
                        f"cannot store {key} in S3 at {settings.s3_url}: {s3_problem(err)}"
                    ) from err
                row["s3_uri"] = f"s3://{settings.s3_bucket}/{key}"
                row["s3_version_id"] = found or str(resp.get("VersionId"))
            rows.append(row)
    if as_json:
        emit_json({"task": spec.name, "agents": rows})
        return
    cols = [
        Col("agent"),
        Col("kind"),
        Col("version"),
        Col("s3_uri", "artifact", fmt=lambda v: v or "(configuration only)"),
        Col("s3_version_id", "S3 version", fmt=lambda v: (v or "")[:12]),
    ]
    show(f"agents of {spec.name}", cols, rows)


@app.command("retrain")
def agent_retrain(
    task: Annotated[str, typer.Option(help="Retrain this task's trainable agents.")],
    wait: Annotated[bool, typer.Option(help="Wait for the round and show the verdicts.")] = True,
) -> None:
    """Retrain the task's trainable agents on their seed plus the accepted human labels; each
    new version is promoted only if the task's gate policy (learn.gate) passes."""

    import asyncio

    from worker.settings import Settings

    asyncio.run(_retrain(Settings(), task, wait))


async def _retrain(settings: Settings, task_name: str, wait: bool) -> None:
    import asyncio

    from rich.markup import escape
    from temporalio.service import RPCError

    from activities import ids
    from activities.handoff import tell_retrain
    from activities.payloads import RetrainStatus
    from agents.tasks import TaskError, load_task
    from worker.cli.tables import Col, show

    try:
        spec = load_task(settings.tasks_dir, task_name)
    except TaskError as err:
        raise fail(escape(str(err))) from err
    client = await temporal(settings)
    workflow_id = ids.retrain_workflow_id(spec.name)
    handle = client.get_workflow_handle(workflow_id)

    async def status() -> RetrainStatus | None:
        try:
            return await handle.query("status", result_type=RetrainStatus)
        except RPCError:
            return None  # not started yet

    before = await status()
    # A round under way when we ask does not include our request: wait for the one after.
    target = before.rounds + (1 if before.running else 0) if before else 0
    await tell_retrain(client, settings.task_queue, spec, "retrain")
    if not wait:
        console.print(f"asked {workflow_id} for a round: `labelfabric agent retrain` shows it")
        return
    with console.status(f"{workflow_id}: retraining on the human labels…"):
        for _ in range(3600):
            now = await status()
            if now is not None and now.rounds > target and now.last is not None:
                break
            await asyncio.sleep(1)
        else:
            raise fail(f"{workflow_id} did not finish a round within an hour; is a worker up?")
    result = now.last
    if result.note:
        console.print(f"{spec.name}: {escape(result.note)}")
        return
    rows = [
        {"agent": a.agent, "version": a.version, "verdict": a.state, "rule": a.rule or "-",
         "new": f"{a.candidate_accuracy:.1%}", "in use": f"{a.incumbent_accuracy:.1%}",
         "held-out": a.items}
        for a in result.agents
    ]  # fmt: skip
    cols = [Col(k, right=k in ("new", "in use", "held-out")) for k in rows[0]] if rows else []
    show(f"retrain {spec.name} on {result.examples} human labels", cols, rows)
