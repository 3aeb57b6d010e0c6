"""`labelfabric audit …` and `labelfabric db …`: verify the audit chain; the app's role."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli import group
from worker.cli.console import console, in_catalog

if TYPE_CHECKING:
    from catalog import audit
    from worker.settings import Settings


app = group("The tamper-evident audit log.")
ANCHORS = 10  # newest snapshot manifests whose recorded chain head must be in the chain


@app.command("verify")
def verify(
    anchors: Annotated[
        bool, typer.Option(help="Also check the chain heads recorded in snapshot manifests (S3).")
    ] = True,
    deep: Annotated[
        bool, typer.Option(help="Re-hash every snapshot version (default: newest per dataset).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Walk the audit hash chain; report the first broken link; check that every snapshot
    version the catalog names is still in S3 with its bytes. Exit 1 if anything is wrong."""

    import asyncio

    from rich.markup import escape

    from worker.settings import Settings

    settings = Settings()
    verdict = asyncio.run(in_catalog(settings, _verify, settings, anchors, as_json, deep))
    if as_json:
        console.print_json(data={"ok": verdict.ok, **verdict.__dict__})
    elif verdict.ok:
        console.print(
            f"ok: {verdict.events} events, chain intact, head {verdict.head[:16]}; "
            f"{verdict.anchors} manifest anchor(s) found in it; decisions and votes of "
            f"{verdict.rows_checked} chunk(s) match their digests; {verdict.items_checked} "
            f"item texts, {verdict.labels_checked} human labels and {verdict.reviews_checked} "
            "reviews match; "
            f"{verdict.snapshots_checked} snapshot version(s) present in S3"
        )
    else:
        if verdict.broken:
            console.print(escape(f"BROKEN at {verdict.broken}"))
        for what in verdict.altered_rows:
            console.print(escape(f"ALTERED: {what}"))
        for what in verdict.bad_snapshots:
            console.print(escape(f"SNAPSHOT: {what}"))
        for where in verdict.missing_anchors:
            console.print(
                escape(f"MISSING: the chain head recorded in {where} is not in the chain "
                       "(events were removed from its end)")
            )  # fmt: skip
    if not verdict.ok:
        raise typer.Exit(code=1)


async def _verify(
    conn: Any, settings: Settings, with_anchors: bool, quiet: bool, deep: bool = False
) -> audit.Verdict:
    from catalog import audit

    found = await _anchors(settings, conn) if with_anchors else {}
    verdict = await audit.verify(
        conn,
        anchors=found,
        progress=(lambda n: None)
        if quiet
        else lambda n: console.print(f"[dim]{n} events checked[/]"),
    )
    if with_anchors:
        await _snapshots(settings, conn, verdict, deep)
    return verdict


async def _snapshots(settings: Settings, conn: Any, verdict: audit.Verdict, deep: bool) -> None:
    """Every snapshot version the catalog names must still be in S3 (a HEAD each); the
    newest of each dataset (all with `deep`) is read back and re-hashed."""

    import asyncio

    from botocore.exceptions import BotoCoreError, ClientError

    from activities.s3 import make_s3_client, read_plain
    from catalog import db
    from formats.sealed import SealError, Sha256Sink
    from worker.cli.dataset_io import snapshot_keys
    from worker.stack import s3_target

    rows = await db.all_versions(conn)
    s3 = make_s3_client(s3_target(settings))
    keys = snapshot_keys(settings)  # sealed snapshots are opened, then hashed in clear
    newest_seen: set[str] = set()
    for dataset, version, key, version_id, sha in rows:
        where = f"{dataset}@{version} (s3://{settings.s3_bucket}/{key} version {version_id})"
        rehash = deep or dataset not in newest_seen
        newest_seen.add(dataset)
        try:
            if not rehash:
                await asyncio.to_thread(
                    s3.head_object, Bucket=settings.s3_bucket, Key=key, VersionId=version_id
                )
            else:
                sink = Sha256Sink()
                await asyncio.to_thread(
                    read_plain, s3, settings.s3_bucket, key, version_id, sink, keys
                )
                if sink.digest.hexdigest() != sha:
                    verdict.bad_snapshots.append(f"{where} does not match its sha256 {sha[:16]}")
                    continue
        except (ClientError, BotoCoreError) as err:
            verdict.bad_snapshots.append(f"{where} cannot be read from S3: {err}")
            continue
        except SealError as err:
            verdict.bad_snapshots.append(f"{where} cannot be opened: {err}")
            continue
        verdict.snapshots_checked += 1


async def _anchors(settings: Settings, conn: Any) -> dict[str, str]:
    """Chain heads recorded in the newest snapshot manifests, read back from their S3
    versions. Heads only grow, so the newest anchors cover the older ones."""

    import asyncio

    from botocore.exceptions import BotoCoreError, ClientError

    from activities.anchor import AUDIT_HEAD_KEY
    from activities.s3 import make_s3_client
    from catalog import db
    from worker.stack import s3_target

    rows = await db.newest_manifests(conn, ANCHORS)

    s3 = make_s3_client(s3_target(settings))
    out: dict[str, str] = {}
    for dataset, version, key, version_id in rows:
        try:
            got = await asyncio.to_thread(
                s3.get_object, Bucket=settings.s3_bucket, Key=key, VersionId=version_id
            )
            head = json.loads(got["Body"].read()).get("audit_head")
        except (ClientError, BotoCoreError, ValueError) as err:
            # A manifest that cannot be read is a finding, not a crash: no anchor matches it.
            head = f"unreadable: {err}"
        if head:
            out[f"the manifest of {dataset}@{version}"] = head
    # The heads activities anchored (activities/anchor.py), newest versions first. Anchors
    # written at the same time may land out of order, so the newest few are all checked.
    try:
        listed = await asyncio.to_thread(
            s3.list_object_versions, Bucket=settings.s3_bucket, Prefix=AUDIT_HEAD_KEY,
            MaxKeys=ANCHORS,
        )  # fmt: skip
        versions = [v for v in listed.get("Versions", []) if v["Key"] == AUDIT_HEAD_KEY]
        for v in versions[:ANCHORS]:  # S3 lists a key's versions newest first
            got = await asyncio.to_thread(
                s3.get_object, Bucket=settings.s3_bucket, Key=AUDIT_HEAD_KEY,
                VersionId=v["VersionId"],
            )  # fmt: skip
            anchor = json.loads(got["Body"].read())
            out[f"the audit head anchored in S3 at {anchor.get('at', '?')}"] = str(anchor["head"])
    except (ClientError, BotoCoreError, ValueError, KeyError, TypeError) as err:
        out["the audit heads anchored in S3"] = f"unreadable: {err}"
    return out
