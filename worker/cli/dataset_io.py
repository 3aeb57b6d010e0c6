"""What `labelfabric dataset …` does outside its own command functions: S3 reads and writes,
verified snapshot content, waiting for the dataset workflow's next version, streaming an
export, and the import's one catalog transaction. No Typer commands here; the commands in
`worker.cli.dataset` import this module when they run.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from worker.cli.console import anchor, console, fail, in_catalog, temporal
from worker.cli.tables import status

if TYPE_CHECKING:
    from formats import export as exporting
    from formats.labelstudio import Parsed
    from worker.settings import Settings


def s3_client(settings: Settings) -> Any:
    from activities.s3 import make_s3_client
    from worker.stack import s3_target

    return make_s3_client(s3_target(settings))


def download(settings: Settings, key: str, version_id: str, fh: Any) -> None:
    """A snapshot object version into `fh`, in clear (a sealed one opened with the ring)."""
    from activities.s3 import read_plain

    keys = snapshot_keys(settings)
    read_plain(s3_client(settings), settings.s3_bucket, key, version_id, fh, keys)


def snapshot_keys(settings: Settings) -> dict[str, bytes]:
    """Every key of the payload key ring, which seals snapshots; none when there is no ring
    (objects stored in clear still read)."""
    from worker.codec import KeyRing

    path = settings.codec_keys_path
    return dict(KeyRing.load(path).keys) if path.exists() else {}


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


def labels_of(fh: Any, expected: str, where: str) -> dict[str, str]:
    """item id -> label of a version's content (JSON lines), refused unless its sha256 is
    `expected`."""
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


def await_version(settings: Settings, name: str, latest: int, wait_s: float) -> Any:
    """Ask the dataset's workflow for a snapshot and wait for the version after `latest`."""

    import asyncio

    new = asyncio.run(_snapshot_after(settings, name, latest, wait_s))
    if new is None:
        console.print(
            f"no new version within {wait_s:g} s (is a worker running?); it is written when "
            "one picks up the dataset's workflow"
        )
        raise typer.Exit(code=1)
    return new


async def _snapshot_after(settings: Settings, name: str, latest: int, wait_s: float) -> Any:
    import asyncio

    from activities.ids import DATASET_WORKFLOW, dataset_workflow_id
    from activities.payloads import DatasetInput, LabelsChanged, dataset_attributes
    from catalog import datasets

    client = await temporal(settings)
    await client.start_workflow(
        DATASET_WORKFLOW,
        DatasetInput(name=name, debounce_s=settings.snapshot_debounce_s),
        id=dataset_workflow_id(name),
        task_queue=settings.task_queue,
        search_attributes=dataset_attributes(name),
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


async def import_parsed(
    conn: Any, dataset: str, task: str, job_id: str, sha: str, uri: str, parsed: Parsed
) -> tuple[int, bool]:
    """(newest version before, imported before?) of importing a parsed Label Studio file, in
    the caller's one transaction: unless its job exists, the tasks whose content would leak
    are refused (into `parsed.refused`) and the rest recorded (`catalog.imports`)."""
    from catalog import db
    from formats import labelstudio

    check = await db.import_check(conn, dataset, job_id, [i["id"] for i in parsed.items])
    if check.done:
        return check.latest, True
    labelstudio.drop_leaks(parsed, check.placements, dataset)
    await db.record_import(
        conn, dataset=dataset, task=task, job_id=job_id, sha256=sha, source=uri,
        items=parsed.items, votes=parsed.votes, reviews=parsed.reviews, labels=parsed.labels,
        refused=parsed.refused, agents=parsed.agents, actor=getpass.getuser(),
    )  # fmt: skip
    return check.latest, False


async def export_version(
    settings: Settings, row: Any, fmt: str, split: str | None, target: str
) -> exporting.ExportResult:
    """Write snapshot `row` as `fmt` to `target` (a path or s3://), verified, audited."""

    import asyncio

    from catalog import db, kinds
    from formats import export as exporting
    from formats.sources import parse_s3_uri

    engine = db.make_engine(settings.catalog_url, pool_size=2)
    loop = asyncio.get_running_loop()
    mode, rewrite = await _export_pii(settings, engine, row.dataset)

    def votes(keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
        return asyncio.run_coroutine_threadsafe(_votes(engine, row.dataset, keys), loop).result()

    def people(keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
        found = _annotations(engine, row.dataset, keys)
        return asyncio.run_coroutine_threadsafe(found, loop).result()

    ref = f"{row.dataset}@{row.version}"
    try:
        with tempfile.TemporaryDirectory() as tmp, status(f"{ref}: reading it from S3…") as say:
            local = Path(tmp) / "out" if target.startswith("s3://") else Path(target)
            with tempfile.TemporaryFile() as src:
                try:
                    await asyncio.to_thread(download, settings, row.s3_key, row.s3_version_id, src)
                except Exception as err:
                    raise fail(
                        f"{ref}: its S3 version {row.s3_version_id} cannot be read "
                        f"({s3_problem(err)}); `labelfabric audit verify` checks every version"
                    ) from err
                src.seek(0)
                say(f"{ref}: exporting as {fmt}…")

                def progress(n: int) -> None:
                    say(f"{ref}: exporting as {fmt}… {n} items")

                try:
                    result = await asyncio.to_thread(
                        exporting.export, src, expected_sha256=row.content_sha256, fmt=fmt,
                        out=local, split=split, votes=votes, rewrite=rewrite, annotations=people,
                        progress=progress, allow_empty=False,
                    )  # fmt: skip
                except exporting.ExportError as err:
                    raise fail(f"{ref}: {err}") from err
            if target.startswith("s3://"):
                bucket, key = parse_s3_uri(target)
                say(f"{ref}: uploading to {target}…")
                try:
                    await asyncio.to_thread(
                        s3_client(settings).upload_file, str(local), bucket, key
                    )
                except Exception as err:
                    raise fail(f"cannot write {target}: {s3_problem(err)}") from err
        async with engine.begin() as conn:
            await db.append_audit(
                conn,
                key=f"export:{row.dataset}@{row.version}:{fmt}:{split}:{time.time_ns()}",
                actor=getpass.getuser(),
                kind=kinds.EXPORT,
                subject=f"{row.dataset}@{row.version}",
                payload={"format": fmt, "split": split, "out": target, "items": result.items,
                         "content_sha256": row.content_sha256, "out_sha256": result.out_sha256,
                         **({"pii": mode} if mode != "off" else {})},
            )  # fmt: skip
        await anchor(settings, engine)
        return result
    finally:
        await engine.dispose()


async def _export_pii(settings: Settings, engine: Any, dataset: str) -> tuple[str, Any]:
    """The dataset's task's `exports` PII mode and the text rewrite it makes (None for `off`
    or a task without `pii:`). A task that cannot be read exports nothing: its mode is
    unknown, and a guess could publish what it was meant to hide."""
    from agents import pii
    from agents.tasks import TaskError, load_task
    from catalog import db

    async with engine.connect() as conn:
        name = await db.dataset_task(conn, dataset)
    if name is None:
        return "off", None
    try:
        spec = load_task(settings.tasks_dir, name).pii
    except TaskError as err:
        raise fail(
            f"{dataset}: its task cannot be read, so its PII export mode is unknown; nothing "
            f"was exported ({err})"
        ) from err
    if spec is None or spec.mode("exports") == "off":
        return "off", None
    return spec.mode("exports"), lambda text: pii.view(text, pii.scan(text, spec), spec, "exports")


async def _votes(
    engine: Any, dataset: str, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], list[Any]]:
    from catalog import exports

    async with engine.connect() as conn:
        return dict(await exports.agent_votes(conn, dataset, keys))


async def _annotations(
    engine: Any, dataset: str, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], list[Any]]:
    from catalog import exports

    async with engine.connect() as conn:
        return dict(await exports.human_annotations(conn, dataset, keys))


async def verify(settings: Settings, dataset: str, folds: int) -> None:
    """Run a VerifyLabels workflow and say what it flagged and sent to review."""
    from rich.markup import escape
    from temporalio.client import WorkflowFailureError

    from activities import ids
    from activities.payloads import VerifyInput, VerifyResult, dataset_attributes

    client = await temporal(settings)
    workflow_id = ids.verify_workflow_id(dataset, time.strftime("%Y%m%dT%H%M%S"))
    with console.status(f"{workflow_id}: fitting out-of-fold models on the current labels…"):
        try:
            result = await client.execute_workflow(
                ids.VERIFY_WORKFLOW,
                VerifyInput(dataset=dataset, folds=folds),
                id=workflow_id,
                task_queue=settings.task_queue,
                result_type=VerifyResult,
                search_attributes=dataset_attributes(dataset),
            )
        except WorkflowFailureError as err:
            cause = err.cause
            raise fail(escape(f"{workflow_id} failed: {getattr(cause, 'message', cause)}")) from err
    if result.note:
        console.print(f"{dataset}: {escape(result.note)}")
        return
    console.print(
        f"{dataset}: {result.checked} current labels checked, {result.flagged} likely wrong; "
        f"{result.new} not flagged before, {result.queued} sent to review (rule label_issue)"
    )
