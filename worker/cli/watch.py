"""`labelfabric watch s3://BUCKET/PREFIX --dataset D --task T [--every 1m]`: new data as events.

A Temporal Schedule (`watch:{dataset}`) runs a `WatchPrefix` workflow every EVERY: each object
version under the prefix that no job has labeled gets exactly one LabelDataset job (its id
comes from the bucket, key and version id), followed by a drift check. `watch list` and
`watch stop DATASET` operate the schedules; so do `temporal schedule …`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from worker.cli.console import console, fail

if TYPE_CHECKING:
    from worker.settings import Settings


class WatchGroup(TyperGroup):
    """`watch s3://…` starts a watcher; `watch list` and `watch stop` are its other commands."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0].startswith("s3://"):
            args = ["start", *args]
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=WatchGroup,
    help="Watch an S3 prefix: one labeling job per new object version.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("start", hidden=True)
def watch_start(
    uri: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX to watch.")],
    dataset: Annotated[str, typer.Option(help="Label new objects into this dataset.")],
    task: Annotated[str, typer.Option(help="The task their items are labeled for.")],
    every: Annotated[str, typer.Option(help="How often to look: 30s, 1m, 1h.")] = "1m",
    policy: Annotated[str, typer.Option(help="The routing policy of the jobs.")] = (
        "route_default"
    ),
    drift_policy: Annotated[str, typer.Option(help="The drift check after each job.")] = (
        "drift_default"
    ),
) -> None:
    """Watch s3://BUCKET/PREFIX (a Temporal Schedule, watch:DATASET)."""
    import asyncio

    from worker.cli.drift import parse_every
    from worker.settings import Settings

    if not uri.startswith("s3://") or "/" not in uri.removeprefix("s3://"):
        raise fail(f"{uri!r}: give s3://BUCKET/PREFIX")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    asyncio.run(
        _start(Settings(), bucket, prefix, dataset, task, parse_every(every), policy, drift_policy)
    )


async def _start(
    settings: Settings,
    bucket: str,
    prefix: str,
    dataset: str,
    task: str,
    every: Any,
    policy: str,
    drift_policy: str,
) -> None:
    from rich.markup import escape
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
    )

    from activities import ids
    from activities.payloads import LabelDatasetInput, WatchInput, dataset_attributes
    from agents.tasks import TaskError, load_task
    from worker.cli.drift import _client

    try:
        load_task(settings.tasks_dir, task)
        LabelDatasetInput(dataset=dataset, source=f"s3://{bucket}/x.jsonl", task=task)
    except (TaskError, ValueError) as err:
        raise fail(escape(str(err))) from err
    client = await _client(settings)
    schedule_id = ids.watch_schedule_id(dataset)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ids.WATCH_WORKFLOW,
            WatchInput(
                bucket=bucket,
                prefix=prefix,
                dataset=dataset,
                task=task,
                policy=policy,
                drift_policy=drift_policy,
            ),
            id=f"watch-run:{dataset}",
            task_queue=settings.task_queue,
            typed_search_attributes=dataset_attributes(dataset),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # One look at a time: a look still labeling when the next is due makes it wait.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
    except Exception as err:
        raise fail(
            escape(
                f"cannot create {schedule_id} ({err}); `labelfabric watch stop {dataset}` first "
                "to replace a watcher"
            )
        ) from err
    console.print(
        f"watching s3://{bucket}/{prefix} every {every} into {dataset} ({schedule_id}); "
        f"`temporal schedule trigger --schedule-id {schedule_id}` looks now"
    )


@app.command("list")
def watch_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")] = False,
) -> None:
    """The watchers: dataset, prefix, interval, active or paused."""
    import asyncio

    from worker.settings import Settings

    async def go(settings: Settings) -> None:
        from worker.cli.drift import _client
        from worker.cli.tables import emit_json, line

        client = await _client(settings)
        found = 0
        rows = []
        async for entry in await client.list_schedules():
            if not entry.id.startswith("watch:"):
                continue
            found += 1
            desc = await client.get_schedule_handle(entry.id).describe()
            args = getattr(desc.schedule.action, "args", None) or []
            raw = args[0] if args else None
            where = "?"
            if raw is not None:  # a raw payload: decrypted and decoded by our converter
                [inp] = await client.data_converter.decode([raw], [dict])
                where = f"s3://{inp.get('bucket')}/{inp.get('prefix')} -> {inp.get('dataset')}"
            every = ", ".join(str(i.every) for i in desc.schedule.spec.intervals) or "-"
            state = "paused" if desc.schedule.state.paused else "active"
            rows.append({"schedule": entry.id, "source": where, "every": every, "state": state})
            if not as_json:
                line(f"{entry.id}  {where}  every {every}  {state}")
        if as_json:
            emit_json({"watchers": rows})
        elif not found:
            console.print("no watchers: labelfabric watch s3://BUCKET/PREFIX --dataset D --task T")

    asyncio.run(go(Settings()))


@app.command("stop")
def watch_stop(dataset: Annotated[str, typer.Argument()]) -> None:
    """Stop watching for DATASET (deletes its schedule; labeled data stays)."""
    import asyncio

    from worker.settings import Settings

    async def go(settings: Settings) -> None:
        from temporalio.service import RPCError

        from activities import ids
        from worker.cli.drift import _client

        client = await _client(settings)
        try:
            await client.get_schedule_handle(ids.watch_schedule_id(dataset)).delete()
        except RPCError as err:
            raise fail(f"no watcher for {dataset} ({err.message})") from err
        console.print(f"{ids.watch_schedule_id(dataset)} stopped")

    asyncio.run(go(Settings()))
