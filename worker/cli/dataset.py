"""`labelfabric dataset …`: list, versions, show, diff, rollback, export, check, holdout.

`NAME@V` resolves through the catalog to the S3 object version ids of that snapshot's data
and manifest, so a training run can pin exactly what it used. Every export re-hashes the
stored bytes and refuses a mismatch with the catalog's content sha256.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from worker.cli.console import anchor, console, fail, in_catalog

if TYPE_CHECKING:
    from formats import export as exporting
    from worker.settings import Settings


app = typer.Typer(help="Dataset versions (snapshots) and exports.", no_args_is_help=True)


def parse_ref(ref: str, *, version_required: bool = True) -> tuple[str, int | None]:
    name, at, number = ref.partition("@")
    if not name or (at and not number.isdigit()) or (version_required and not at):
        raise fail(f"bad dataset ref {ref!r}: expected NAME@VERSION (e.g. reviews@3)")
    return name, int(number) if at else None


async def _resolve(conn: Any, name: str, number: int | None) -> Any:
    from catalog import datasets

    if number is None:
        rows = await datasets.versions(conn, name)
        row = rows[-1] if rows else None
    else:
        row = await datasets.version(conn, name, number)
    if row is None:
        known = [str(r.version) for r in await datasets.versions(conn, name)]
        raise fail(
            f"dataset {name} has no version {number}; versions: {', '.join(known) or '(none)'}"
        )
    return row


def _verdict(row: Any) -> str:
    if row.training_ready is None:
        return "-"
    gate = row.gate or {}
    return ("ready" if row.training_ready else "NOT ready") + (
        f" ({gate.get('policy')}@{gate.get('version')} {gate.get('rule')})" if gate else ""
    )


@app.command("list")
def list_() -> None:
    """Datasets with snapshots: versions, newest version, items, gate verdict."""
    from catalog import datasets
    from worker.settings import Settings

    settings = Settings()
    rows = asyncio.run(in_catalog(settings, datasets.datasets))
    table = Table(title="datasets")
    for col in ("dataset", "versions", "newest", "items", "at", "gate"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.dataset, str(r.versions), f"v{r.version}", str(r.item_count),
                      f"{r.created_at:%Y-%m-%d %H:%M}", _verdict(r))  # fmt: skip
    console.print(table)


@app.command("versions")
def versions(name: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """Every version of a dataset: time, items, label distribution, gate, S3 version id."""
    from catalog import datasets
    from worker.settings import Settings

    settings = Settings()
    rows = asyncio.run(in_catalog(settings, datasets.versions, name))
    if not rows:
        raise fail(f"dataset {name} has no snapshot versions")
    table = Table(title=f"{name}: versions")
    for col in ("version", "at", "items", "labels", "gate", "S3 version id", "by"):
        table.add_column(col, overflow="fold")
    for r in rows:
        dist = ", ".join(f"{k} {v}" for k, v in (r.label_distribution or {}).items())
        table.add_row(str(r.version), f"{r.created_at:%Y-%m-%d %H:%M:%S}", str(r.item_count),
                      dist, _verdict(r), r.s3_version_id, r.job_id)  # fmt: skip
    console.print(table)


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME: the newest).")]) -> None:
    """One version's manifest, read back from its S3 version and checked against the catalog."""
    from worker.settings import Settings

    settings = Settings()
    name, number = parse_ref(ref, version_required=False)
    row = asyncio.run(in_catalog(settings, _resolve, name, number))
    body = (
        _s3(settings)
        .get_object(
            Bucket=settings.s3_bucket, Key=row.manifest_key, VersionId=row.manifest_version_id
        )["Body"]
        .read()
    )
    if hashlib.sha256(body).hexdigest() != row.manifest_sha256:
        raise fail(f"{name}@{row.version}: the stored manifest does not match its sha256")
    console.print_json(body.decode())


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="NAME@A")],
    b: Annotated[str, typer.Argument(help="NAME@B")],
    limit: Annotated[int, typer.Option(help="Rows to print (all with --json).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Items added, removed and relabelled from A to B, with old → new label and who/what."""
    from worker.settings import Settings

    settings = Settings()
    name, va = parse_ref(a)
    other, vb = parse_ref(b)
    if other != name:
        raise fail(f"diff compares two versions of one dataset, not {name} and {other}")
    assert va is not None and vb is not None
    summary = asyncio.run(in_catalog(settings, _diff, name, va, vb, limit, as_json))
    if not as_json:
        console.print(
            f"{name}@{va} -> {name}@{vb}: {summary['added']} added, {summary['removed']} "
            f"removed, {summary['relabelled']} relabelled"
        )


async def _diff(
    conn: Any, name: str, va: int, vb: int, limit: int, as_json: bool
) -> dict[str, int]:
    from catalog import datasets

    for v in (va, vb):
        await _resolve(conn, name, v)
    counts = {"added": 0, "removed": 0, "relabelled": 0}
    shown: list[tuple[str, str, str | None, str | None, str, str | None]] = []
    async for item_id, before, after, source, job_id in datasets.net_changes(conn, name, va, vb):
        kind = "added" if before is None else "removed" if after is None else "relabelled"
        counts[kind] += 1
        if as_json:
            line = {"item_id": item_id, "change": kind, "old": before, "new": after,
                    "source": source, "job_id": job_id}  # fmt: skip
            sys.stdout.write(json.dumps(line) + "\n")
        elif len(shown) < limit:
            shown.append((item_id, kind, before, after, source or "", job_id))
    if shown:
        who = await datasets.reviewers_of(
            conn, name, [(i, j) for i, _, _, _, s, j in shown if s == "human" and j]
        )
        table = Table(title=f"{name}@{va} -> {name}@{vb}")
        for col in ("item", "change", "old -> new", "by"):
            table.add_column(col, overflow="fold")
        for item_id, kind, before, after, source, job_id in shown:
            by = f"{source} {job_id or ''}".strip()
            if (item_id, job_id or "") in who:
                by += f" ({', '.join(who[(item_id, job_id or '')])})"
            table.add_row(item_id[:12], kind, f"{before or '-'} -> {after or '-'}", escape(by))
        console.print(table)
    return counts


@app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    to: Annotated[int, typer.Option("--to", help="The version whose content to restore.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
    actor: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the new version.")] = 120,
) -> None:
    """Make V's labels current again and write them as a new version (S3 keeps every one)."""
    from worker.settings import Settings

    settings = Settings()
    who = actor or getpass.getuser()
    row = asyncio.run(in_catalog(settings, _resolve, name, to))
    with tempfile.TemporaryFile() as fh:
        _download(settings, row.s3_key, row.s3_version_id, fh)
        target = _labels_of(fh, row.content_sha256, f"{name}@{to}")
    stamp = f"{time.time_ns()}"
    before = asyncio.run(in_catalog(settings, _rollback_labels, name, to, target, who, reason,
                                    stamp, begin=True))  # fmt: skip
    console.print(
        f"{name}: labels set to those of v{to} ({before['set']} changed, {before['unset']} "
        "removed); waiting for the new snapshot version …"
    )
    new = _await_version(settings, name, before["latest"], timeout)
    console.print(f"{name}@{new.version}: {new.item_count} items, content of v{to} "
                  f"(S3 version {new.s3_version_id})")  # fmt: skip


def _labels_of(fh: Any, expected: str, where: str) -> dict[str, str]:
    digest = hashlib.sha256()
    labels: dict[str, str] = {}
    fh.seek(0)
    for line in fh:
        digest.update(line)
        if line.strip():
            row = json.loads(line)
            labels[row["id"]] = row["label"]
    if digest.hexdigest() != expected:
        raise fail(f"{where}: stored content does not match its sha256: refusing to restore it")
    return labels


async def _rollback_labels(
    conn: Any, name: str, to: int, target: dict[str, str], actor: str, reason: str, stamp: str
) -> dict[str, Any]:
    # The lock set_labels takes, taken first: no chunk or review changes a label between
    # reading the current ones and replacing them (re-entrant within this transaction).
    from catalog import datasets, db

    await db.lock_labels(conn, name)
    latest = (await datasets.versions(conn, name))[-1].version
    current = await datasets.current_label_map(conn, name)
    changed = {i: lbl for i, lbl in target.items() if current.get(i) != lbl}
    gone = sorted(i for i in current if i not in target)
    job_id = f"rollback:{name}:{to}:{stamp}"
    await db.set_labels(conn, dataset=name, job_id=job_id, labels=changed, source="rollback",
                        reviewers=[actor])  # fmt: skip
    await datasets.unset_labels(conn, name, gone)
    await db.append_audit(
        conn,
        key=job_id,
        actor=actor,
        kind="dataset_rollback",
        subject=f"dataset:{name}",
        payload={"to": to, "from": latest, "set": len(changed), "unset": len(gone),
                 "reason": reason},
    )  # fmt: skip
    return {"latest": latest, "set": len(changed), "unset": len(gone)}


def _await_version(settings: Settings, name: str, latest: int, wait_s: float) -> Any:
    """Ask the dataset's workflow for a snapshot and wait for the version after `latest`."""
    new = asyncio.run(_snapshot_after(settings, name, latest, wait_s))
    if new is None:
        console.print(
            f"no new version within {wait_s:g} s (is a worker running?); it is written when "
            "one picks up the dataset's workflow"
        )
        raise typer.Exit(code=1)
    return new


async def _snapshot_after(settings: Settings, name: str, latest: int, wait_s: float) -> Any:
    from temporalio.client import Client

    from activities.ids import DATASET_WORKFLOW, dataset_workflow_id
    from activities.payloads import DatasetInput, LabelsChanged
    from catalog import datasets

    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    await client.start_workflow(
        DATASET_WORKFLOW,
        DatasetInput(name=name, debounce_s=settings.snapshot_debounce_s),
        id=dataset_workflow_id(name),
        task_queue=settings.task_queue,
        start_signal="labels_changed",
        start_signal_args=[LabelsChanged(source="labelfabric dataset rollback")],
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        rows = await in_catalog(settings, datasets.versions, name)
        if rows and rows[-1].version > latest:
            return rows[-1]
        await asyncio.sleep(0.5)
    return None


@app.command("export")
def export(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME: the newest).")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | parquet | label-studio")] = "jsonl",
    split: Annotated[
        str | None, typer.Option(help="Only this split (train, validation, test, pool).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="A path or s3://bucket/key.")] = None,
) -> None:
    """Write one version, verified against its content sha256, streaming (bounded memory)."""
    from formats import export as exporting
    from formats import snapshot_files
    from worker.settings import Settings

    settings = Settings()
    if fmt not in exporting.FORMATS:
        raise fail(f"--format {fmt!r}: expected one of {', '.join(exporting.FORMATS)}")
    if split is not None and split not in (*snapshot_files.SPLITS, "pool"):
        raise fail(f"--split {split!r}: expected one of {', '.join(snapshot_files.SPLITS)}, pool")
    name, number = parse_ref(ref, version_required=False)
    row = asyncio.run(in_catalog(settings, _resolve, name, number))
    ext = {"jsonl": "jsonl", "parquet": "parquet", "label-studio": "json"}[fmt]
    target = out or f"{name}@{row.version}{'.' + split if split else ''}.{ext}"
    result = asyncio.run(_export(settings, row, fmt, split, target))
    console.print(
        f"{name}@{row.version} -> {target}: {result.items} of {result.read} items ({fmt}), "
        f"content sha256 verified, output sha256 {result.out_sha256[:16]}"
    )


async def _export(
    settings: Settings, row: Any, fmt: str, split: str | None, target: str
) -> exporting.ExportResult:
    from catalog import db
    from formats import export as exporting
    from formats.sources import parse_s3_uri

    engine = db.make_engine(settings.catalog_url, pool_size=2)
    loop = asyncio.get_running_loop()

    def votes(keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
        return asyncio.run_coroutine_threadsafe(_votes(engine, keys), loop).result()

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "out" if target.startswith("s3://") else Path(target)
            with tempfile.TemporaryFile() as src:
                try:
                    await asyncio.to_thread(_download, settings, row.s3_key, row.s3_version_id, src)
                except Exception as err:
                    raise fail(
                        f"{row.dataset}@{row.version}: its S3 version {row.s3_version_id} "
                        f"cannot be read ({s3_problem(err)}); `labelfabric audit verify` "
                        "checks every version"
                    ) from err
                src.seek(0)
                try:
                    result = await asyncio.to_thread(
                        exporting.export, src, expected_sha256=row.content_sha256, fmt=fmt,
                        out=local, split=split, votes=votes,
                    )  # fmt: skip
                except exporting.ExportError as err:
                    raise fail(f"{row.dataset}@{row.version}: {err}") from err
            if target.startswith("s3://"):
                bucket, key = parse_s3_uri(target)
                try:
                    await asyncio.to_thread(_s3(settings).upload_file, str(local), bucket, key)
                except Exception as err:
                    raise fail(f"cannot write {target}: {s3_problem(err)}") from err
        async with engine.begin() as conn:
            await db.append_audit(
                conn,
                key=f"export:{row.dataset}@{row.version}:{fmt}:{split}:{time.time_ns()}",
                actor=getpass.getuser(),
                kind="export",
                subject=f"{row.dataset}@{row.version}",
                payload={"format": fmt, "split": split, "out": target, "items": result.items,
                         "content_sha256": row.content_sha256, "out_sha256": result.out_sha256},
            )  # fmt: skip
        await anchor(settings, engine)
        return result
    finally:
        await engine.dispose()


def s3_problem(err: BaseException) -> str:
    """The innermost S3 answer behind `err` (boto3 wraps it), e.g. 'NoSuchBucket: ...'."""
    from botocore.exceptions import BotoCoreError, ClientError

    seen: BaseException | None = err
    best = f"{type(err).__name__}: {err}"
    while seen is not None:
        if isinstance(seen, ClientError):
            error = seen.response.get("Error", {})
            best = f"{error.get('Code', '?')}: {error.get('Message', '') or seen}"
        elif isinstance(seen, BotoCoreError):
            best = str(seen)
        seen = seen.__cause__ or seen.__context__
    return best[:300]


async def _votes(engine: Any, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[Any]]:
    from sqlalchemy import select

    from catalog import db

    v = db.T_VOTE.c
    out: dict[tuple[str, str], list[Any]] = {}
    by_job: dict[str, list[str]] = {}
    for item_id, job_id in keys:
        by_job.setdefault(job_id, []).append(item_id)
    async with engine.connect() as conn:
        for job_id, ids in by_job.items():
            rows = await conn.execute(
                select(v.item_id, v.agent, v.agent_version, v.label, v.confidence)
                .where(v.job_id == job_id, v.item_id.in_(ids))
                .order_by(v.item_id, v.agent)
            )
            for r in rows:
                out.setdefault((r[0], job_id), []).append((r[1], r[2], r[3], r[4]))
    return out


@app.command("holdout")
def holdout(
    name: Annotated[str, typer.Argument(help="The held-out dataset.")],
    of: Annotated[str, typer.Option("--of", help="The dataset it is held out for.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
) -> None:
    """Declare NAME the held-out set of another dataset: ingest refuses shared content."""
    from catalog import datasets
    from worker.settings import Settings

    if name == of:
        raise fail("a dataset cannot be its own held-out set")
    settings = Settings()
    asyncio.run(in_catalog(settings, datasets.declare_heldout, name, of, getpass.getuser(),
                           reason, begin=True))  # fmt: skip
    console.print(f"{name} is held out for {of}: content in both is leakage")


@app.command("check")
def check(name: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """Report content shared with held-out-related datasets (exit 1 if any)."""
    from catalog import datasets
    from worker.settings import Settings

    settings = Settings()
    found = asyncio.run(in_catalog(settings, datasets.leaks, name))
    if not found:
        console.print(f"{name}: no leaks")
        return
    table = Table(title=f"{name}: {len(found)} leak(s)")
    for col in ("kind", "item", "here", "also in"):
        table.add_column(col)
    for kind, item_id, here, there in found:
        table.add_row(kind, item_id[:12], here, there)
    console.print(table)
    raise typer.Exit(code=1)


def _s3(settings: Settings) -> Any:
    from activities.s3 import make_s3_client
    from worker.stack import s3_target

    return make_s3_client(s3_target(settings))


def _download(settings: Settings, key: str, version_id: str, fh: Any) -> None:
    _s3(settings).download_fileobj(settings.s3_bucket, key, fh, ExtraArgs={"VersionId": version_id})


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A Label Studio JSON export (task list).")],
    dataset: Annotated[str, typer.Option(help="Dataset to import into.")],
    task: Annotated[str, typer.Option(help="Task whose label set the choices must be in.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the new version.")] = 120,
) -> None:
    """Import Label Studio tasks: predictions become votes, annotations reviews (with who and
    when), the labels current; a new snapshot version follows."""
    from agents.tasks import TaskError, load_task
    from formats import labelstudio
    from worker.settings import Settings

    settings = Settings()
    try:
        spec = load_task(settings.tasks_dir, task)
    except TaskError as err:
        raise fail(str(err)) from err
    if not path.is_file():
        raise fail(f"{path} does not exist")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    job_id = f"import:{dataset}:{sha[:16]}"
    try:
        parsed = labelstudio.parse(path, dataset=dataset, job_id=job_id, labels=spec.labels,
                                   text_field=spec.text_field)  # fmt: skip
    except ValueError as err:
        raise fail(str(err)) from err
    latest = asyncio.run(in_catalog(settings, _import, dataset, spec.name, job_id, sha, str(path),
                                    parsed, begin=True))  # fmt: skip
    for r in parsed.refused:
        console.print(escape(f"refused {r['reason']}"))
    console.print(
        f"{dataset}: {len(parsed.items)} tasks imported ({len(parsed.votes)} predictions, "
        f"{len(parsed.reviews)} annotations, {len(parsed.labels)} labels), "
        f"{len(parsed.refused)} refused; job {job_id}"
    )
    if not parsed.labels:
        return
    new = _await_version(settings, dataset, latest, timeout)
    console.print(f"{dataset}@{new.version}: {new.item_count} items")


async def _import(
    conn: Any, dataset: str, task: str, job_id: str, sha: str, uri: str, parsed: Any
) -> int:
    from catalog import datasets, db
    from formats import labelstudio

    rows = await datasets.versions(conn, dataset)
    if await db.job(conn, job_id) is not None:
        console.print(f"{uri} was imported into {dataset} before (job {job_id}): nothing to do")
        parsed.labels.clear()
        return rows[-1].version if rows else 0
    guarded = [dataset, *await datasets.related(conn, dataset)]
    labelstudio.drop_leaks(
        parsed, await datasets.placements(conn, guarded, [i["id"] for i in parsed.items]), dataset
    )
    for r in parsed.refused:
        r["job_id"] = job_id
    await db.create_job(conn, {
        "id": job_id, "dataset": dataset, "task": task, "source": uri,
        "policy_id": "label_studio_import", "policy_version": 0, "policy_sha256": sha,
        "agents": sorted(parsed.agents), "status": "completed", "items": len(parsed.items),
        "duplicates": 0, "quarantined": len(parsed.refused),
    })  # fmt: skip
    job_items = [{"job_id": job_id, "ordinal": n, "item_id": item["id"]}
                 for n, item in enumerate(parsed.items)]  # fmt: skip
    await db.record_ingest(conn, job_id=job_id, items=parsed.items, job_items=job_items,
                           rejected=parsed.refused)  # fmt: skip
    await db.record_chunk(conn, dataset=dataset, job_id=job_id, votes=parsed.votes,
                          decisions=[], accepted={})  # fmt: skip
    await db.record_reviews(conn, parsed.reviews)
    await db.assign_splits(conn, dataset, {i["id"]: i["split"] for i in parsed.items if i["split"]})
    groups: dict[tuple[str, ...], dict[str, str]] = {}
    for item_id, (label, who) in parsed.labels.items():
        groups.setdefault(tuple(who), {})[item_id] = label
    for who, labels in groups.items():
        await db.set_labels(conn, dataset=dataset, job_id=job_id, labels=labels,
                            source="import", reviewers=list(who))  # fmt: skip
    await db.append_audit(
        conn, key=f"{job_id}:imported", actor=getpass.getuser(), kind="import",
        subject=f"dataset:{dataset}",
        payload={"source": uri, "sha256": sha, "items": len(parsed.items),
                 "labels": len(parsed.labels), "refused": len(parsed.refused)},
    )  # fmt: skip
    return rows[-1].version if rows else 0
