"""`labelfabric job start`: start a LabelDataset workflow and, with --wait, follow it."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli import group
from worker.cli.console import console, fail, temporal
from worker.cli.tables import JSON_HELP, interactive, line

if TYPE_CHECKING:
    from temporalio.client import Client

    from activities.payloads import LabelDatasetInput, LabelDatasetResult
    from worker.settings import Settings

app = group("Start and follow labeling jobs.")


def new_job_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def ui_link(settings: Settings, workflow_id: str) -> str:
    return (
        f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}"
        f"/workflows/{workflow_id}"
    )


@app.command("start")
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
    """Start a LabelDataset workflow (id label:DATASET:JOB); task, policy, agents and
    source are checked first, so a typo fails here and not in the worker."""

    import asyncio

    from activities.ids import label_workflow_id
    from activities.payloads import LabelDatasetInput
    from worker.cli import checks
    from worker.settings import Settings

    settings = Settings()
    source = checks.source(source)
    spec = checks.task(settings, task)
    checks.agents(spec, agents)
    checks.policy(settings, policy, kind="route")
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
    from worker.metrics import command  # exports only when asked (README: Observability)

    with command(settings, "job start --wait" if wait else "job start"):
        asyncio.run(start_job(settings, label_workflow_id(dataset, job or new_job_id()), inp, wait))


@app.command("show")
def job_show(
    job: Annotated[str, typer.Argument(help="label:DATASET:JOB as `job start` prints it, or JOB.")],
    dataset: Annotated[str | None, typer.Option(help="The dataset of a short JOB.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="Refused records to list.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """One job: status, counts, phases and their timings, the records refused at ingest
    (line and reason), its reviews."""

    import asyncio

    from worker.cli.job_show import run
    from worker.settings import Settings

    asyncio.run(run(Settings(), job, dataset, limit, as_json))


async def start_job(
    settings: Settings, workflow_id: str, inp: LabelDatasetInput, wait: bool
) -> LabelDatasetResult | None:
    """Start the job's workflow; with `wait`, follow its progress and return its result."""
    from rich.markup import escape

    from activities.ids import LABEL_DATASET_WORKFLOW
    from activities.payloads import LabelDatasetResult, dataset_attributes

    client = await temporal(settings, "; is the stack up? (labelfabric up)")
    handle = await client.start_workflow(
        LABEL_DATASET_WORKFLOW,
        inp,
        id=workflow_id,
        task_queue=settings.task_queue,
        result_type=LabelDatasetResult,
        search_attributes=dataset_attributes(inp.dataset, job=workflow_id),
    )
    console.print(f"started [bold]{escape(workflow_id)}[/]")
    line(ui_link(settings, workflow_id))
    if not await has_pollers(client, settings.task_queue):
        console.print(
            f"[yellow]no worker is polling task queue {settings.task_queue!r} yet: the job "
            "waits until one starts (labelfabric worker, or labelfabric up --worker)[/]"
        )
    if not wait:
        return None
    started = time.monotonic()
    result = await follow(handle, workflow_id)
    print_summary(result, time.monotonic() - started, settings)
    return result


async def follow(handle: Any, workflow_id: str) -> LabelDatasetResult:
    """The job's result; on a terminal, a progress bar from its `progress` query meanwhile
    (piped, nothing is printed until the result)."""

    import asyncio
    from contextlib import nullcontext
    from dataclasses import asdict

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import FailureError

    from activities.payloads import Progress as JobProgress

    shown = interactive()
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console.real,
    )
    with bar if shown else nullcontext():
        tid = bar.add_task("preparing", total=None, counts="")
        result_task = asyncio.ensure_future(handle.result())
        while not result_task.done():
            if shown:
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
        return result_task.result()
    except WorkflowFailureError as err:
        cause: BaseException = err.cause
        while isinstance(cause, FailureError) and cause.cause is not None:
            cause = cause.cause
        raise fail(
            f"job {workflow_id} failed: {cause} (labelfabric job show {workflow_id})"
        ) from err


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
    from worker.cli.tables import pairs

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
        ("training-ready", ready_text(result.snapshot.training_ready, result.snapshot.item_count)),
        ("S3 object", f"s3://{settings.s3_bucket}/{result.snapshot.s3_key}"),
        ("S3 version id", result.snapshot.s3_version_id),
        ("wall time", f"{seconds:.1f} s"),
        ("items/s", f"{result.items / seconds:.0f}" if seconds > 0 else "-"),
    ]
    pairs(f"job {result.job_id}", rows)
    if result.quarantined:
        line(f"refused records (line and reason): labelfabric job show {result.job_id}")
    line(f"Web UI: {ui_link(settings, result.job_id)}")


def ready_text(verdict: bool | None, items: int) -> str:
    if items == 0:
        why = "no: the snapshot is empty, nothing to train on"
        return why if verdict is not None else f"- (the task names no gate; {why[4:]})"
    if verdict is None:
        return "- (the task names no gate)"
    return "yes" if verdict else "no: failed its quality gate (verdict in the manifest)"
