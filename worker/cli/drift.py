"""`labelfabric drift …`: drift checks on a schedule.

`schedule` creates (or updates) the Temporal Schedule `drift:{dataset}`, whose every run is a
`DriftCheck` workflow; `list`, `pause`, `resume` and `run` (trigger now) operate it, as
`temporal schedule list/toggle/trigger` do; `checks` reads the recorded checks and `report`
draws them over time.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli import group
from worker.cli.console import console, fail, temporal

if TYPE_CHECKING:
    from temporalio.client import Client

    from worker.settings import Settings

app = group("Drift checks of a dataset, on a Temporal Schedule.")
_EVERY = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_every(text: str) -> timedelta:
    m = _EVERY.fullmatch(text.strip())
    if m is None or int(m[1]) < 1:
        raise fail(f"--every {text!r}: give a number and a unit, e.g. 30s, 15m, 6h or 1d")
    every = timedelta(**{_UNITS[m[2]]: int(m[1])})
    if every < timedelta(seconds=10):
        raise fail(f"--every {text!r}: at least 10s between checks")
    return every


async def _client(settings: Settings) -> Client:
    return await temporal(settings)


@app.command("schedule")
def drift_schedule(
    dataset: Annotated[str, typer.Argument(help="The dataset to watch for drift.")],
    every: Annotated[str, typer.Option(help="How often: 30s, 15m, 6h, 1d.")] = "6h",
    policy: Annotated[str, typer.Option(help="The drift policy (kind: drift).")] = (
        "drift_default"
    ),
    window: Annotated[int, typer.Option(min=1, max=100_000, help="Recent items compared.")] = 1000,
) -> None:
    """Check DATASET for drift every EVERY (a Temporal Schedule, drift:DATASET)."""
    import asyncio

    from worker.settings import Settings

    asyncio.run(_schedule(Settings(), dataset, parse_every(every), policy, window))


async def _schedule(
    settings: Settings, dataset: str, every: timedelta, policy: str, window: int
) -> None:
    from rich.markup import escape
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleUpdate,
        ScheduleUpdateInput,
    )
    from temporalio.service import RPCError

    from activities import ids
    from activities.payloads import DriftCheckInput, dataset_attributes
    from policy_rules.engine import Policy, PolicyError

    try:
        found = Policy.load(settings.policies_dir, policy)
    except PolicyError as err:
        raise fail(escape(str(err))) from err
    if found.kind != "drift":
        raise fail(f"{found.ref} is a {found.kind} policy; a drift check needs kind: drift")
    client = await _client(settings)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ids.DRIFT_CHECK_WORKFLOW,
            DriftCheckInput(dataset=dataset, policy=str(found.ref.id), window=window),
            id=ids.drift_check_id(dataset),
            task_queue=settings.task_queue,
            typed_search_attributes=dataset_attributes(dataset),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A run asked for while one is under way waits for it, rather than being dropped.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE),
    )
    schedule_id = ids.drift_schedule_id(dataset)
    try:
        await client.create_schedule(schedule_id, schedule)
        verb = "created"
    except Exception as err:  # already there: the new settings replace the old
        if "already" not in str(err).lower():
            raise fail(escape(f"cannot create {schedule_id}: {err}")) from err

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        try:
            await client.get_schedule_handle(schedule_id).update(replace)
        except RPCError as inner:
            raise fail(escape(f"cannot update {schedule_id}: {inner}")) from inner
        verb = "updated"
    console.print(
        f"{verb} schedule {schedule_id}: a drift check of {dataset} every {every} "
        f"({found.ref}, window {window}); `temporal schedule describe --schedule-id "
        f"{schedule_id}` shows it"
    )


@app.command("list")
def drift_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")] = False,
) -> None:
    """The drift schedules: dataset, interval, paused, last and next run."""
    import asyncio

    from worker.settings import Settings

    asyncio.run(_list(Settings(), as_json))


async def _list(settings: Settings, as_json: bool = False) -> None:
    from worker.cli.tables import Col, emit_json, show

    client = await _client(settings)
    rows = []
    async for entry in await client.list_schedules():
        if not entry.id.startswith("drift:"):
            continue
        handle = client.get_schedule_handle(entry.id)
        desc = await handle.describe()
        last = desc.info.recent_actions[-1].started_at if desc.info.recent_actions else None
        rows.append({
            "schedule": entry.id,
            "every": [str(i.every) for i in desc.schedule.spec.intervals],
            "paused": desc.schedule.state.paused,
            "last": last,
            "next": desc.info.next_action_times[0] if desc.info.next_action_times else None,
        })  # fmt: skip
    if as_json:
        emit_json({"schedules": rows})
        return
    when = lambda v: f"{v:%Y-%m-%d %H:%M:%S}" if v else "-"  # noqa: E731
    cols = [Col("schedule"), Col("every", wrap=True), Col("paused", "state",
            fmt=lambda v: "paused" if v else "active"), Col("last", fmt=when),
            Col("next", fmt=when)]  # fmt: skip
    show("drift schedules", cols, rows,
         empty="no drift schedules: labelfabric drift schedule DATASET --every 6h")  # fmt: skip


def _operate(dataset: str, what: str) -> None:
    import asyncio

    from worker.settings import Settings

    async def go(settings: Settings) -> None:
        from temporalio.service import RPCError

        from activities import ids

        client = await _client(settings)
        handle = client.get_schedule_handle(ids.drift_schedule_id(dataset))
        try:
            if what == "pause":
                await handle.pause(note="labelfabric drift pause")
            elif what == "resume":
                await handle.unpause(note="labelfabric drift resume")
            else:
                await handle.trigger()
        except RPCError as err:
            raise fail(
                f"no drift schedule for {dataset} ({err.message}): "
                f"labelfabric drift schedule {dataset} --every 6h"
            ) from err
        done = {"pause": "paused", "resume": "resumed", "run": "triggered (a check runs now)"}
        console.print(f"{ids.drift_schedule_id(dataset)} {done[what]}")

    asyncio.run(go(Settings()))


@app.command("pause")
def drift_pause(dataset: Annotated[str, typer.Argument()]) -> None:
    """Pause DATASET's drift checks."""
    _operate(dataset, "pause")


@app.command("resume")
def drift_resume(dataset: Annotated[str, typer.Argument()]) -> None:
    """Resume DATASET's drift checks."""
    _operate(dataset, "resume")


@app.command("run")
def drift_run(dataset: Annotated[str, typer.Argument()]) -> None:
    """Run a drift check of DATASET now (triggers its schedule)."""
    _operate(dataset, "run")


@app.command("checks")
def drift_checks(
    dataset: Annotated[str, typer.Argument()],
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")] = False,
) -> None:
    """DATASET's recorded drift checks, newest first: metrics, rule and action."""
    import asyncio

    from worker.cli.console import in_catalog
    from worker.settings import Settings

    async def read(conn: Any, dataset: str, limit: int) -> list[Any]:
        from catalog import db

        return await db.drift_checks(conn, dataset, limit)

    rows = asyncio.run(in_catalog(Settings(), read, dataset, limit))
    if as_json:
        from worker.cli.tables import emit_json

        emit_json({"dataset": dataset, "checks": [r._asdict() for r in rows]})
        return
    if not rows:
        console.print(f"no drift checks of {dataset} yet")
        return
    for r in rows:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in r.metrics.items() if isinstance(v, float))
        console.print(
            f"{r.checked_at:%Y-%m-%d %H:%M:%S} {r.id}: {r.action} by {r.policy_id}@"
            f"{r.policy_version} rule {r.rule_id}; {r.window_items} items; {shown}"
        )
        if r.detail:
            console.print(f"    {r.detail}")


@app.command("report")
def drift_report(
    dataset: Annotated[str, typer.Argument()],
    out: Annotated[
        Path | None, typer.Option(help="Where the PNG goes (default: the state dir).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="The newest checks shown.")] = 200,
) -> None:
    """DATASET's drift checks over time: a table of metrics and actions, and a PNG of each
    metric with its policy threshold (params.max_<metric>) and the actions taken."""
    import asyncio

    from worker.cli.console import in_catalog
    from worker.settings import Settings

    async def read(conn: Any, dataset: str, limit: int) -> list[Any]:
        from catalog import db

        return await db.drift_checks(conn, dataset, limit)

    settings = Settings()
    rows = list(reversed(asyncio.run(in_catalog(settings, read, dataset, limit))))
    if not rows:
        raise fail(f"no drift checks of {dataset} yet: labelfabric drift run {dataset}")
    metrics = sorted({k for r in rows for k, v in r.metrics.items() if isinstance(v, float)})
    shown = [m for m in metrics if m not in ("window.items", "reference.items")]
    for r in rows:
        values = ", ".join(
            f"{m} {r.metrics[m]:.3f}" for m in shown if isinstance(r.metrics.get(m), float)
        )
        console.print(
            f"{r.checked_at:%Y-%m-%d %H:%M:%S}  {r.action:<13} {r.rule_id:<28} "
            f"{r.window_items:>6} items  {values}"
        )
    path = out or settings.home_dir / "drift" / f"{dataset}.png"
    _plot(dataset, rows, shown, path, settings)
    console.print(f"plot: {path}")


def _plot(dataset: str, rows: list[Any], metrics: list[str], path: Path, settings: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from policy_rules.engine import Policy, PolicyError

    thresholds: dict[str, float] = {}
    try:  # the newest check's policy version draws the lines
        last = rows[-1]
        policy = Policy.load(settings.policies_dir, f"{last.policy_id}@{last.policy_version}")
        for m in metrics:
            value = policy.params.get(f"max_{m.split('.', 1)[-1]}")
            if isinstance(value, int | float) and not isinstance(value, bool):
                thresholds[m] = float(value)
    except PolicyError:
        pass
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 2.2 * len(metrics)), dpi=100,
                             sharex=True, squeeze=False)  # fmt: skip
    times = [r.checked_at for r in rows]
    for ax, m in zip(axes[:, 0], metrics, strict=True):
        ys = [r.metrics.get(m) if isinstance(r.metrics.get(m), float) else None for r in rows]
        ax.plot(times, [y if y is not None else float("nan") for y in ys], marker="o")
        if m in thresholds:
            ax.axhline(thresholds[m], linestyle="--", color="grey", label="threshold")
        for t, y, r in zip(times, ys, rows, strict=True):
            if r.action != "none" and y is not None:
                ax.annotate(r.action, (t, y), textcoords="offset points", xytext=(0, 6),
                            fontsize=7, ha="center", color="red")  # fmt: skip
        ax.set_ylabel(m, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(f"{dataset}: drift checks")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
