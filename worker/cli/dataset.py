"""`labelfabric dataset …`: list, versions, show, diff, rollback, export, check, holdout,
import, verify.

`NAME@V` resolves through the catalog to the S3 object version ids of that snapshot's data
and manifest, so a training run can pin exactly what it used. Every export re-hashes the
stored bytes and refuses a mismatch with the catalog's content sha256. The commands' S3,
Temporal and export helpers are in `worker.cli.dataset_io`; their catalog transactions
(a rollback's labels, an import) in `catalog.datasets` and `catalog.imports`.
"""

from __future__ import annotations

import getpass
import hashlib
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli import group
from worker.cli.console import console, fail, in_catalog
from worker.cli.tables import JSON_HELP

app = group("Dataset versions (snapshots) and exports.")


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
        if not known:
            from worker.cli.dataset_views import unknown_dataset

            raise fail(await unknown_dataset(conn, name))
        raise fail(f"dataset {name} has no version {number}; versions: {', '.join(known)}")
    return row


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Datasets with snapshots: versions, newest version, items, gate verdict."""

    import asyncio

    from catalog import datasets
    from worker.cli.dataset_views import DATASET_COLS, dataset_rows
    from worker.cli.tables import emit_json, show
    from worker.settings import Settings

    rows = dataset_rows(asyncio.run(in_catalog(Settings(), datasets.datasets)))
    if as_json:
        emit_json({"datasets": rows})
        return
    show("datasets", DATASET_COLS, rows, empty="no dataset has a snapshot yet")


@app.command("versions")
def versions(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Every version of a dataset: time, items, label distribution, gate, S3 version id."""

    import asyncio

    from worker.cli.dataset_views import VERSION_COLS, version_rows
    from worker.cli.tables import emit_json, show
    from worker.settings import Settings

    rows = version_rows(asyncio.run(in_catalog(Settings(), _versions, name)))
    if as_json:
        emit_json({"dataset": name, "versions": rows})
        return
    show(f"{name}: versions", VERSION_COLS, rows)


async def _versions(conn: Any, name: str) -> list[Any]:
    from catalog import datasets
    from worker.cli.dataset_views import unknown_dataset

    rows = await datasets.versions(conn, name)
    if not rows:
        raise fail(await unknown_dataset(conn, name))
    return rows


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME: the newest).")]) -> None:
    """One version's manifest, read back from its S3 version and checked against the catalog."""

    import asyncio

    from worker.cli.dataset_io import s3_client, s3_problem
    from worker.settings import Settings

    settings = Settings()
    name, number = parse_ref(ref, version_required=False)
    row = asyncio.run(in_catalog(settings, _resolve, name, number))
    try:
        body = (
            s3_client(settings)
            .get_object(
                Bucket=settings.s3_bucket, Key=row.manifest_key, VersionId=row.manifest_version_id
            )["Body"]
            .read()
        )
    except Exception as err:  # botocore's, or a connection error: the innermost S3 answer
        why = s3_problem(err)
        raise fail(f"{name}@{row.version}: its manifest cannot be read ({why})") from err
    if hashlib.sha256(body).hexdigest() != row.manifest_sha256:
        raise fail(f"{name}@{row.version}: the stored manifest does not match its sha256")
    console.print_json(body.decode())


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="NAME@A")],
    b: Annotated[str, typer.Argument(help="NAME@B")],
    limit: Annotated[int, typer.Option(help="Rows to print (all with --json).")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document: changes, counts.")
    ] = False,
) -> None:
    """Items added, removed and relabelled from A to B, with old → new label and who/what."""

    import asyncio

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
    from worker.cli.dataset_views import diff_report

    for v in (va, vb):
        await _resolve(conn, name, v)
    return await diff_report(conn, name, va, vb, limit, as_json)


@app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    to: Annotated[int, typer.Option("--to", help="The version whose content to restore.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
    actor: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the new version.")] = 120,
) -> None:
    """Make V's labels current again and write them as a new version (S3 keeps every one)."""

    import asyncio

    from catalog import db
    from worker.cli.dataset_io import await_version, download, labels_of
    from worker.settings import Settings

    settings = Settings()
    who = actor or getpass.getuser()
    row = asyncio.run(in_catalog(settings, _resolve, name, to))
    with tempfile.TemporaryFile() as fh:
        download(settings, row.s3_key, row.s3_version_id, fh)
        target = labels_of(fh, row.content_sha256, f"{name}@{to}")
    restore = partial(db.restore_labels, actor=who, reason=reason, stamp=f"{time.time_ns()}")
    done = asyncio.run(in_catalog(settings, restore, name, to, target, begin=True))
    console.print(
        f"{name}: labels set to those of v{to} ({done.changed} changed, {done.removed} "
        "removed); waiting for the new snapshot version …"
    )
    new = await_version(settings, name, done.latest, timeout)
    console.print(f"{name}@{new.version}: {new.item_count} items, content of v{to} "
                  f"(S3 version {new.s3_version_id})")  # fmt: skip


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

    import asyncio

    from formats import export as exporting
    from formats import snapshot_files
    from worker.cli.dataset_io import export_version
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
    result = asyncio.run(export_version(settings, row, fmt, split, target))
    console.print(
        f"{name}@{row.version} -> {target}: {result.items} of {result.read} items ({fmt}), "
        f"content sha256 verified, output sha256 {result.out_sha256[:16]}"
    )


@app.command("holdout")
def holdout(
    name: Annotated[str, typer.Argument(help="The held-out dataset.")],
    of: Annotated[str, typer.Option("--of", help="The dataset it is held out for.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
) -> None:
    """Declare NAME the held-out set of another dataset: ingest refuses shared content."""

    import asyncio

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

    import asyncio

    from catalog import datasets
    from worker.cli.tables import Col, show
    from worker.settings import Settings

    settings = Settings()
    found = asyncio.run(in_catalog(settings, datasets.leaks, name))
    if not found:
        console.print(f"{name}: no leaks")
        return
    rows = [{"kind": k, "item": i[:12], "here": h, "there": t} for k, i, h, t in found]
    cols = [Col("kind"), Col("item"), Col("here", wrap=True), Col("there", "also in", wrap=True)]
    show(f"{name}: {len(found)} leak(s)", cols, rows)
    raise typer.Exit(code=1)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A Label Studio JSON export (task list).")],
    dataset: Annotated[str, typer.Option(help="Dataset to import into.")],
    task: Annotated[str, typer.Option(help="Task whose label set the choices must be in.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the new version.")] = 120,
) -> None:
    """Import Label Studio tasks: predictions become votes, annotations reviews (with who and
    when), the labels current; a new snapshot version follows."""

    import asyncio

    from rich.markup import escape

    from agents.tasks import TaskError, load_task
    from formats import labelstudio
    from worker.cli.dataset_io import await_version, import_parsed
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
    from agents import pii

    pii_spec = spec.pii
    mark = None if pii_spec is None else (lambda text: pii.mark(text, pii_spec))
    try:
        parsed = labelstudio.parse(path, dataset=dataset, job_id=job_id, labels=spec.labels,
                                   text_field=spec.text_field, mark=mark)  # fmt: skip
    except ValueError as err:
        raise fail(str(err)) from err
    latest, before = asyncio.run(in_catalog(settings, import_parsed, dataset, spec.name, job_id,
                                            sha, str(path), parsed, begin=True))  # fmt: skip
    if before:
        console.print(f"{path} was imported into {dataset} before (job {job_id}): nothing to do")
        parsed.labels.clear()
    for r in parsed.refused:
        console.print(escape(f"refused {r['reason']}"))
    console.print(
        f"{dataset}: {len(parsed.items)} tasks imported ({len(parsed.votes)} predictions, "
        f"{len(parsed.reviews)} annotations, {len(parsed.labels)} labels), "
        f"{len(parsed.refused)} refused; job {job_id}"
    )
    if not parsed.labels:
        return
    new = await_version(settings, dataset, latest, timeout)
    console.print(f"{dataset}@{new.version}: {new.item_count} items")


@app.command("verify")
def dataset_verify(
    dataset: Annotated[str, typer.Argument(help="Dataset whose current labels are checked.")],
    folds: Annotated[int, typer.Option(min=2, max=20, help="Out-of-fold model folds.")] = 5,
) -> None:
    """Flag likely wrong current labels (confident learning) and send each to review once."""

    import asyncio

    from worker.cli.dataset_io import verify
    from worker.settings import Settings

    asyncio.run(verify(Settings(), dataset, folds))
