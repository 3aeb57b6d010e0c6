"""`labelfabric audit …` and `labelfabric db …`: verify the audit chain; the app's role."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape
from sqlalchemy import select

from activities.s3 import make_s3_client
from catalog import audit, db
from worker.settings import Settings
from worker.ui import console, fail, in_catalog

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
db_app = typer.Typer(help="The catalog database.", no_args_is_help=True)
ANCHORS = 10  # newest snapshot manifests whose recorded chain head must be in the chain


@audit_app.command("verify")
def verify(
    anchors: Annotated[
        bool, typer.Option(help="Also check the chain heads recorded in snapshot manifests (S3).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Walk the audit hash chain; report the first broken link. Exit 1 if anything is wrong."""
    settings = Settings()
    verdict = asyncio.run(in_catalog(settings, _verify, settings, anchors, as_json))
    if as_json:
        console.print_json(data={"ok": verdict.ok, **verdict.__dict__})
    elif verdict.ok:
        console.print(
            f"ok: {verdict.events} events, chain intact, head {verdict.head[:16]}; "
            f"{verdict.anchors} manifest anchor(s) found in it; decisions and votes of "
            f"{verdict.rows_checked} chunk(s) match their digests"
        )
    else:
        if verdict.broken:
            console.print(escape(f"BROKEN at {verdict.broken}"))
        for what in verdict.altered_rows:
            console.print(escape(f"ALTERED: {what}"))
        for where in verdict.missing_anchors:
            console.print(
                escape(f"MISSING: the chain head recorded in {where} is not in the chain "
                       "(events were removed from its end)")
            )  # fmt: skip
    if not verdict.ok:
        raise typer.Exit(code=1)


async def _verify(conn: Any, settings: Settings, with_anchors: bool, quiet: bool) -> audit.Verdict:
    found = await _anchors(settings, conn) if with_anchors else {}
    return await audit.verify(
        conn,
        anchors=found,
        progress=(lambda n: None)
        if quiet
        else lambda n: console.print(f"[dim]{n} events checked[/]"),
    )


async def _anchors(settings: Settings, conn: Any) -> dict[str, str]:
    """Chain heads recorded in the newest snapshot manifests, read back from their S3
    versions. Heads only grow, so the newest anchors cover the older ones."""
    snap = db.T_SNAPSHOT.c
    rows = await conn.execute(
        select(snap.dataset, snap.version, snap.manifest_key, snap.manifest_version_id)
        .order_by(snap.created_at.desc())
        .limit(ANCHORS)
    )
    from worker.main import s3_target

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
    return out


@db_app.command("app-role")
def app_role(
    role: Annotated[str, typer.Argument(help="Role name, e.g. labelfabric_app.")],
    password: Annotated[str | None, typer.Option(help="Login password (default: none).")] = None,
) -> None:
    """Create or update the application's login role: it may use every catalog table but only
    INSERT and SELECT audit events. Run as the catalog's owner, after migrating."""
    settings = Settings()
    try:
        statements = audit.app_role_grants(role)
    except ValueError as err:
        raise fail(str(err)) from err
    asyncio.run(in_catalog(settings, audit.create_app_role, role, password, begin=True))
    console.print(f"role {role}: tables granted, audit_event INSERT and SELECT only")
    console.print(
        "[dim]run the app as it: LABELFABRIC_DATABASE_URL="
        f"postgresql+asyncpg://{role}{':…' if password else ''}@HOST:PORT/DB "
        f"({len(statements)} grants applied)[/]"
    )
