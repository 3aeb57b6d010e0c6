"""`labelfabric db app-role`: the catalog's application login role."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli import group
from worker.cli.console import console, fail, in_catalog

app = group("The catalog database.")


@app.command("app-role")
def app_role(
    role: Annotated[str, typer.Argument(help="Role name, e.g. labelfabric_app.")],
    password: Annotated[str | None, typer.Option(help="Login password (default: none).")] = None,
) -> None:
    """Create or update the application's login role: it may use every catalog table but only
    INSERT and SELECT audit events. Run as the catalog's owner, after migrating."""

    import asyncio

    from catalog import audit
    from worker.settings import Settings

    settings = Settings()
    try:
        statements = audit.app_role_grants(role)
    except ValueError as err:
        raise fail(str(err)) from err
    asyncio.run(
        in_catalog(settings, audit.create_app_role, role, password, begin=True, as_owner=True)
    )
    console.print(f"role {role}: tables granted, audit_event INSERT and SELECT only")
    console.print(
        "[dim]run the app as it: LABELFABRIC_DATABASE_URL="
        f"postgresql+asyncpg://{role}{':…' if password else ''}@HOST:PORT/DB "
        f"({len(statements)} grants applied)[/]"
    )
