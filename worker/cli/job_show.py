"""`labelfabric job show JOB`: one job from the catalog and its workflow.

The catalog gives the job row (task, source, policy, agents, counts, times), its outcomes,
its review tasks and the records refused at ingest (`rejected_record`: line and reason);
the workflow gives its status, its failure, its progress while it runs, and its phases:
each activity type of its history with how many ran and from when to when. A workflow
Temporal no longer keeps (past retention) or cannot reach leaves the catalog's part.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from worker.cli.console import console, fail, in_catalog
from worker.cli.tables import Col, emit_json, line, pairs, show

if TYPE_CHECKING:
    from worker.settings import Settings


async def show_job(settings: Settings, name: str, dataset: str | None, limit: int) -> Any:
    """The report `job show` prints (a dict of JSON values)."""
    job_id, wanted, problem = await in_catalog(settings, _resolve, name, dataset)
    if job_id is None:
        # Refused before the catalog recorded it (an unknown task in a raw start): the
        # workflow alone says what happened, if Temporal has it.
        workflow, phases = await _workflow_part(settings, wanted) if ":" in wanted else (None, [])
        if workflow is None:
            raise fail(problem)
        return _workflow_only(wanted, workflow, phases)
    report = await in_catalog(settings, _catalog_part, job_id, limit)
    report["workflow"], report["phases"] = await _workflow_part(settings, job_id)
    return report


def _workflow_only(
    job_id: str, workflow: dict[str, Any], phases: list[dict[str, Any]]
) -> dict[str, Any]:
    counts = ("items", "duplicates", "refused", "auto_accept", "human_review", "quarantine",
              "reject")  # fmt: skip
    return {
        "job_id": job_id, "dataset": job_id.split(":")[1] if job_id.count(":") >= 2 else None,
        "task": None, "source": None, "status": "not in the catalog", "reason": None,
        "policy": None, "agents": [], "started_at": None, "finished_at": None, "seconds": None,
        "counts": dict.fromkeys(counts, 0), "reviews": {}, "refused_total": 0, "refused": [],
        "workflow": workflow, "phases": phases,
    }  # fmt: skip


async def run(
    settings: Settings, name: str, dataset: str | None, limit: int, as_json: bool
) -> None:
    report = await show_job(settings, name, dataset, limit)
    if as_json:
        emit_json(report)
        return
    _print(report, settings)


async def _resolve(conn: Any, name: str, dataset: str | None) -> tuple[str | None, str, str]:
    """(the job id `name` means, or None; the id asked for; why none): `name` is a full id,
    or `JOB` of `label:{dataset}:JOB`."""
    from catalog import job_report
    from worker.cli.checks import did_you_mean

    if dataset is not None and not name.count(":"):
        name = f"label:{dataset}:{name}"
    found = await job_report.jobs_named(conn, name, dataset)
    if name in found:
        return name, name, ""
    if len(found) == 1:
        return found[0], name, ""
    if len(found) > 1:
        raise fail(f"job {name!r} is in several datasets ({', '.join(found[:5])}): add --dataset")
    recent = await job_report.recent_jobs(conn)
    short = {j.rsplit(":", 1)[-1]: j for j in recent}
    hint = did_you_mean(name, recent) or did_you_mean(name.rsplit(":", 1)[-1], short)
    where = f" in dataset {dataset}" if dataset else ""
    return (
        None,
        name,
        f"no job {name!r}{where}{hint}; a job is named as `job start` prints it "
        "(label:DATASET:JOB), or JOB with --dataset",
    )


async def _catalog_part(conn: Any, job_id: str, limit: int) -> dict[str, Any]:
    from catalog import db, job_report

    job = await db.job(conn, job_id)
    assert job is not None
    total, refused = await job_report.refused(conn, job_id, limit)
    outcomes = await job_report.outcome_counts(conn, job_id)
    end = job.finished_at
    return {
        "job_id": job.id,
        "dataset": job.dataset,
        "task": job.task,
        "source": job.source,
        "status": job.status,
        "reason": job.reason,
        "policy": {"id": job.policy_id, "version": job.policy_version, "sha256": job.policy_sha256},
        "agents": list(job.agents),
        "started_at": job.started_at,
        "finished_at": end,
        "seconds": (end - job.started_at).total_seconds() if end else None,
        "counts": {
            "items": job.items,
            "duplicates": job.duplicates,
            "refused": job.quarantined,
            **{
                o: outcomes.get(o, 0)
                for o in ("auto_accept", "human_review", "quarantine", "reject")
            },
        },
        "reviews": await job_report.review_states(conn, job_id),
        "refused_total": total,
        "refused": [{"line": r.line, "reason": r.reason} for r in refused],
    }


async def _workflow_part(
    settings: Settings, job_id: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The workflow's status, failure and progress, and its phases; (None, []) when
    Temporal cannot say (unreachable, or the workflow is past retention)."""
    from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
    from temporalio.exceptions import FailureError
    from temporalio.service import RPCError

    from activities.payloads import Progress
    from worker.temporal_client import TemporalUnreachable, connect

    try:
        client = await connect(settings)
        handle = client.get_workflow_handle(job_id)
        desc = await handle.describe()
    except (TemporalUnreachable, RPCError):
        return None, []
    status = desc.status.name.lower() if desc.status else "unknown"
    info: dict[str, Any] = {
        "status": status,
        "run_id": desc.run_id,
        "failure": None,
        "progress": None,
    }
    if desc.status == WorkflowExecutionStatus.FAILED:
        try:
            await handle.result(follow_runs=False)
        except WorkflowFailureError as err:
            cause: BaseException = err.cause
            while isinstance(cause, FailureError) and cause.cause is not None:
                cause = cause.cause
            info["failure"] = str(cause)
        except Exception as err:  # noqa: BLE001 - what cannot be read is said, not raised
            info["failure"] = f"(not readable: {err})"
    if desc.status == WorkflowExecutionStatus.RUNNING:
        try:
            p = await handle.query("progress", result_type=Progress)
            info["progress"] = {
                "phase": p.phase,
                "chunks_done": p.chunks_done,
                "chunks_total": p.chunks_total,
            }
        except RPCError:
            pass
    return info, await _phases(handle)


async def _phases(handle: Any) -> list[dict[str, Any]]:
    """Per activity type, in the order it first ran: runs, first start, last end, failures."""
    from temporalio.api.enums.v1 import EventType

    scheduled: dict[int, str] = {}
    phases: dict[str, dict[str, Any]] = {}
    closing = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
    }
    async for event in handle.fetch_history_events():
        at = event.event_time.ToDatetime(tzinfo=UTC)
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = name
            phase = phases.setdefault(
                name,
                {
                    "activity": name,
                    "runs": 0,
                    "failed": 0,
                    "started_at": at,
                    "finished_at": None,
                    "seconds": None,
                },
            )
            phase["runs"] += 1
        elif event.event_type in closing:
            attrs = getattr(event, closing[event.event_type])
            name = scheduled.get(attrs.scheduled_event_id, "")
            if name in phases:
                phase = phases[name]
                phase["finished_at"] = at
                phase["seconds"] = (at - phase["started_at"]).total_seconds()
                if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                    phase["failed"] += 1
    return list(phases.values())


def _when(value: datetime | None) -> str:
    return f"{value.astimezone():%Y-%m-%d %H:%M:%S}" if value else "-"


def _print(r: dict[str, Any], settings: Settings) -> None:
    from rich.markup import escape

    from worker.cli.job import ui_link

    wf = r["workflow"] or {}
    status = r["status"] + (f" (workflow {wf['status']})" if wf.get("status") else "")
    took = f" ({r['seconds']:.1f} s)" if r["seconds"] is not None else ""
    c = r["counts"]
    p = r["policy"] or {"id": "-", "version": "-", "sha256": "-"}
    rows: list[tuple[str, object]] = [
        ("status", status),
        ("dataset", r["dataset"]),
        ("task", r["task"]),
        ("source", r["source"]),
        ("policy", f"{p['id']}@{p['version']} ({p['sha256'][:12]})"),
        ("agents", ", ".join(r["agents"])),
        ("started", _when(r["started_at"])),
        ("finished", _when(r["finished_at"]) + took),
        ("items", c["items"]),
        ("duplicates in source", c["duplicates"]),
        ("refused at ingest", c["refused"]),
        *((o, c[o]) for o in ("auto_accept", "human_review", "quarantine", "reject")),
    ]
    if r["reason"]:
        rows.insert(1, ("why", r["reason"]))
    if r["reviews"]:
        rows.append(("reviews", ", ".join(f"{s} {n}" for s, n in sorted(r["reviews"].items()))))
    if wf.get("progress"):
        g = wf["progress"]
        rows.insert(
            1, ("phase now", f"{g['phase']} ({g['chunks_done']}/{g['chunks_total']} chunks)")
        )
    if r["policy"] is None:  # the workflow alone: the catalog never recorded the job
        rows = [("status", status), ("dataset", r["dataset"])]
    pairs(f"job {r['job_id']}", rows)
    if wf.get("failure"):
        console.print(f"[red]failed:[/] {escape(wf['failure'])}")
    if r["workflow"] is None:
        console.print("[dim]the workflow is not readable in Temporal (down, or past retention)[/]")
    if r["phases"]:
        show(
            "phases (activities of the workflow's current run)",
            [
                Col("activity"),
                Col("runs", right=True),
                Col("failed", right=True, fmt=lambda v: str(v or "")),
                Col("started_at", "started", fmt=_when),
                Col("seconds", "took", right=True, fmt=lambda v: "" if v is None else f"{v:.1f} s"),
            ],
            r["phases"],
        )
    if r["refused_total"]:
        shown = len(r["refused"])
        more = f", first {shown} shown (--limit)" if shown < r["refused_total"] else ""
        show(
            f"refused at ingest: {r['refused_total']} record(s){more}",
            [Col("line", right=True), Col("reason", wrap=True)],
            r["refused"],
        )
    elif r["policy"] is not None:
        console.print("no record was refused at ingest")
    line(f"Web UI: {ui_link(settings, r['job_id'])}")
