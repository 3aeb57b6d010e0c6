"""`labelfabric reviewer …`: reviewers' standing on the review page.

Signing in (`login-link`, `password`) is the catalog's `reviewer_account` (hashes only,
catalog/accounts.py); what a person may do (`role`, with tasks and clearance) is the
roster's, so `role` edits the roster file in place (that entry's `role:` line, nothing
else). Each change is an audit event naming the OS user who made it, never a secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli import group
from worker.cli.console import console, fail, in_catalog

if TYPE_CHECKING:
    from agents.roster import Reviewer
    from worker.settings import Settings

app = group("Reviewers: sign-in to the review page, roles, signed identity.")


def _entry(settings: Settings, reviewer: str, *, people_only: bool = True) -> Reviewer:
    from rich.markup import escape

    from agents.base import TaskError
    from agents.roster import load_roster

    try:
        roster = {r.id: r for r in load_roster(settings.roster_path, simulated=True)}
    except TaskError as err:
        raise fail(escape(str(err))) from err
    entry = roster.get(reviewer)
    if entry is None:
        raise fail(escape(f"{reviewer!r} is not on the roster ({settings.roster_path})"))
    if people_only and entry.simulated:
        raise fail(escape(f"{reviewer!r} is a simulated reviewer: it never signs in"))
    return entry


@app.command("login-link")
def login_link(
    reviewer: Annotated[str, typer.Argument(help="A reviewer id on the roster.")],
    hours: Annotated[
        float, typer.Option(min=0.1, max=168, help="How long the link works (hours).")
    ] = 24.0,
    base_url: Annotated[
        str | None, typer.Option(help="The review page's address (default: this host's).")
    ] = None,
) -> None:
    """Print a one-time login link for REVIEWER (any earlier link of theirs stops working)."""
    import asyncio
    import getpass
    from datetime import UTC, datetime, timedelta

    from catalog import accounts
    from worker.settings import Settings
    from worker.web import auth

    settings = Settings()
    entry = _entry(settings, reviewer)
    token, digest = auth.new_link_token()
    expires = datetime.now(UTC) + timedelta(hours=hours)
    actor = getpass.getuser()

    async def work(conn: Any) -> None:
        await accounts.issue_link(conn, entry.id, digest, expires, actor=actor)

    asyncio.run(in_catalog(settings, work, begin=True))
    base = base_url or f"http://{settings.host}:{settings.review_port}"
    console.print(
        f"one-time login link for {entry.id} ({entry.role}), until {expires:%Y-%m-%d %H:%M} UTC;"
        " hand it over privately:",
        highlight=False,
    )
    typer.echo(auth.link_url(base, token))  # one line, never wrapped


@app.command("password")
def password(
    reviewer: Annotated[str, typer.Argument(help="A reviewer id on the roster.")],
) -> None:
    """Set REVIEWER's password: asked twice at a terminal, else one line from stdin.

    Every session REVIEWER had ends."""
    import asyncio
    import getpass
    import sys

    from catalog import accounts
    from worker.settings import Settings
    from worker.web import auth

    settings = Settings()
    entry = _entry(settings, reviewer)
    if sys.stdin.isatty():
        secret = getpass.getpass(f"new password for {entry.id}: ")
        again: str | None = getpass.getpass("again: ")
    else:
        secret, again = sys.stdin.readline().rstrip("\r\n"), None
    problem = auth.password_problem(secret, again)
    if problem:
        raise fail(problem)
    hashed = auth.hash_password(secret)
    actor = getpass.getuser()

    async def work(conn: Any) -> int:
        return await accounts.set_password(conn, entry.id, hashed, actor=actor)

    asyncio.run(in_catalog(settings, work, begin=True))
    console.print(f"password set for {entry.id}; their other sessions have ended")


@app.command("role")
def role(
    reviewer: Annotated[str, typer.Argument(help="A reviewer id on the roster.")],
    new_role: Annotated[str, typer.Argument(metavar="ROLE", help="reviewer, lead or admin.")],
) -> None:
    """Set REVIEWER's role in the roster file (their sessions end: they sign in again)."""
    import asyncio
    import getpass
    import os
    import shutil

    from rich.markup import escape

    from agents.base import TaskError
    from agents.roster import ROLES, load_roster, with_role
    from catalog import accounts
    from worker.settings import Settings

    if new_role not in ROLES:
        raise fail(f"role must be one of {', '.join(ROLES)}")
    settings = Settings()
    entry = _entry(settings, reviewer)
    path = settings.roster_path
    if entry.role == new_role:
        console.print(escape(f"{entry.id} is {new_role} already; {path} unchanged"))
        return
    try:
        text = with_role(path.read_text(), entry.id, new_role)
    except (OSError, ValueError) as err:
        raise fail(escape(f"{path}: {err}")) from err
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        shutil.copymode(path, tmp)
        check = {r.id: r for r in load_roster(tmp, simulated=True)}
        if check.get(entry.id) is None or check[entry.id].role != new_role:
            raise TaskError("the edit did not give the expected role")
        actor = getpass.getuser()

        async def work(conn: Any) -> None:
            await accounts.record_event(
                conn, entry.id, actor, "role_set", old=entry.role, new=new_role, roster=str(path)
            )

        asyncio.run(in_catalog(settings, work, begin=True))
        os.replace(tmp, path)
    except (OSError, TaskError) as err:
        raise fail(escape(f"{path} left as it was: {err}")) from err
    finally:
        tmp.unlink(missing_ok=True)
    console.print(escape(f"{entry.id}: {entry.role} -> {new_role} in {path}"))


# --- signed reviewer identity (worker/identity.py) ------------------------------------------


@app.command("token")
def token(
    reviewer: Annotated[str, typer.Argument(help="A reviewer id on the roster.")],
    task: Annotated[str, typer.Option(help="The task it is good for (default: any).")] = "*",
    hours: Annotated[float, typer.Option(min=0.01, max=24 * 30, help="Lifetime.")] = 8.0,
) -> None:
    """Print a signed reviewer claim for REVIEWER (admin: needs the state dir's identity ring).

    Give it to `review submit --token` or to raw `temporal workflow update/signal` as the
    submission's `token` field. Issuing is an audit event (the claim itself is not kept)."""
    import asyncio
    import getpass
    import sys

    from rich.markup import escape

    from catalog import accounts
    from worker.identity import IdentityRing, IdentityRingError
    from worker.settings import Settings

    settings = Settings()
    entry = _entry(settings, reviewer, people_only=False)
    if task != "*" and task not in entry.tasks:
        raise fail(escape(f"{entry.id!r} does not review task {task!r} ({settings.roster_path})"))
    try:
        ring = IdentityRing.load(settings.identity_keys_path)
    except IdentityRingError as err:
        raise fail(escape(str(err))) from err
    claim = ring.mint(entry.id, task=task, role=entry.role, ttl_s=int(hours * 3600))
    actor = getpass.getuser()

    async def work(conn: Any) -> None:
        await accounts.record_event(
            conn, entry.id, actor, "token_issued", task=task, hours=hours, key=ring.active
        )

    asyncio.run(in_catalog(settings, work, begin=True))
    sys.stdout.write(claim + "\n")  # alone on stdout: T=$(labelfabric reviewer token R)


@app.command("rotate-key")
def rotate_key() -> None:
    """Make a new signing key and retire the others: every claim signed before stops counting,
    on open items too (they are told the new public keys)."""
    import asyncio

    from rich.markup import escape

    from worker.identity import IdentityRingError, rotate_identity_ring
    from worker.settings import Settings

    settings = Settings()
    try:
        ring = rotate_identity_ring(settings.identity_keys_path)
    except IdentityRingError as err:
        raise fail(escape(str(err))) from err
    told, missed = asyncio.run(_announce_keys(settings))
    console.print(
        f"signing key {ring.active} now signs reviewer claims; older keys are retired. "
        f"{told} open review item(s) told the new keys"
        + (f", {missed} not reachable (they refuse new claims until told)" if missed else "")
    )
    if missed:
        raise typer.Exit(code=1)


async def _announce_keys(settings: Settings) -> tuple[int, int]:
    """Signal `identity_keys` to every open ReviewItem (each confirms with an activity)."""
    from sqlalchemy import select

    from activities.ids import OPEN_REVIEW_STATES
    from catalog import db
    from worker.cli.console import temporal

    t = db.T_REVIEW_TASK.c

    async def open_items(conn: Any) -> list[str]:
        query = select(t.workflow_id).where(t.closed_at.is_(None), t.state.in_(OPEN_REVIEW_STATES))
        return [str(r[0]) for r in await conn.execute(query)]

    workflow_ids = await in_catalog(settings, open_items)
    client = await temporal(settings)
    told = missed = 0
    for wid in workflow_ids:
        try:
            await client.get_workflow_handle(wid).signal("identity_keys")
            told += 1
        except Exception:  # closed since, or never started: it asks for no new claim
            missed += 1
    return told, missed
