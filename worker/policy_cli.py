"""`labelfabric policy …`: validate, test, list, show, diff, activate and roll back policies.

Policy files are immutable versions (`policy_rules/<id>/vN.yaml`) with a `cases.yaml`; the
catalog says which version is active (`policy_activation`, append-only, each row an audit
event with actor and reason). A job that names a policy without a version takes the active
one when it starts (the newest when none was ever activated) and keeps it to the end.
"""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import text

from catalog import db
from policy_rules.engine import (
    Policy,
    PolicyError,
    _versions,
    check_cases,
    list_policies,
)
from worker.settings import Settings
from worker.ui import console, fail

policy_app = typer.Typer(help="Versioned routing policies.", no_args_is_help=True)
ACTIVATION_LOCK = 0x706F_6C69_6379  # "policy": one activation at a time


def _load(settings: Settings, ref: str) -> Policy:
    try:
        return Policy.load(settings.policies_dir, ref)
    except PolicyError as err:
        raise fail(escape(str(err))) from err


def _case_failures(policy: Policy) -> list[str]:
    cases = policy.path.parent / "cases.yaml"
    if not cases.is_file():
        return [f"{cases} is missing: a policy without cases cannot be activated"]
    return check_cases(policy, cases)


@policy_app.command("validate")
def validate(
    paths: Annotated[list[Path], typer.Argument(help="vN.yaml files or folders.")],
) -> None:
    """Compile and type-check each version, and run its policy's cases."""
    bad = 0
    for path in paths:
        folder, files = (
            (path, sorted(_versions(path).values()))
            if path.is_dir()
            else (
                path.parent,
                [path],
            )
        )
        if not files:
            console.print(escape(f"{path}: no vN.yaml version files"))
            bad += 1
        for file in files:
            ref = f"{folder.name}@{file.stem.removeprefix('v')}"
            try:
                policy = Policy.load(folder.parent, ref)
            except PolicyError as err:
                console.print(escape(str(err)))
                bad += 1
                continue
            versions = _versions(folder)
            newest = versions[max(versions)]  # by number: v10 is newer than v9
            failures = _case_failures(policy) if file == newest else []
            for failure in failures:
                console.print(escape(failure))
            bad += bool(failures)
            if not failures:
                console.print(
                    f"ok {policy.ref} ({len(policy.rules)} rules, sha256 {policy.ref.sha256[:12]})"
                )
    if bad:
        raise fail(f"{bad} version(s) failed validation")


@policy_app.command("test")
def test() -> None:
    """Run every policy's cases against its newest version (part of `make test`)."""
    settings = Settings()
    failed = 0
    for policy_id in list_policies(settings.policies_dir):
        policy = _load(settings, policy_id)
        failures = _case_failures(policy)
        for failure in failures:
            console.print(escape(failure))
        failed += bool(failures)
        console.print(f"{'FAIL' if failures else 'ok'} {policy.ref}")
    if failed:
        raise fail(f"{failed} polic(ies) failed their cases")


@policy_app.command("list")
def list_() -> None:
    """Policies, their versions and the active one."""
    settings = Settings()
    active = asyncio.run(_catalog(settings, db.activations))
    current: dict[str, Any] = {row.policy_id: row for row in active}
    table = Table(title=f"policies ({settings.policies_dir})")
    for col in ("policy", "versions", "active", "since", "by", "reason"):
        table.add_column(col)
    for policy_id in list_policies(settings.policies_dir):
        versions = sorted(_versions(settings.policies_dir / policy_id))
        row = current.get(policy_id)
        table.add_row(
            policy_id,
            ", ".join(map(str, versions)),
            f"v{row.version}" if row else f"(none: jobs take v{versions[-1]})",
            f"{row.at:%Y-%m-%d %H:%M}" if row else "",
            escape(row.actor) if row else "",
            escape(row.reason) if row else "",
        )
    console.print(table)


@policy_app.command("show")
def show(ref: Annotated[str, typer.Argument(help="ID or ID@VERSION.")]) -> None:
    """One version: parameters, rules, default, review rules."""
    settings = Settings()
    policy = _load(settings, ref)
    console.print(
        f"[bold]{policy.ref}[/]  sha256 {policy.ref.sha256}\n{escape(policy.description)}"
    )
    params = Table(title="params")
    params.add_column("name")
    params.add_column("value")
    for name, value in policy.params.items():
        params.add_row(name, escape(repr(value)))
    console.print(params)
    rules = Table(title="rules (first match wins)")
    for col in ("rule", "when", "outcome"):
        rules.add_column(col)
    for rule in policy.rules:
        rules.add_row(rule.id, escape(rule.when), rule.outcome)
    rules.add_row("(default)", "", policy.default_outcome)
    console.print(rules)
    console.print(escape(f"review: {policy.review}"))


@policy_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="ID@A")], b: Annotated[str, typer.Argument(help="ID@B")]
) -> None:
    """What changed between two versions: params, rules, default, review rules."""
    settings = Settings()
    old, new = _load(settings, a), _load(settings, b)
    lines = []
    for name in sorted(old.params.keys() | new.params.keys()):
        before, after = old.params.get(name), new.params.get(name)
        if before != after:
            lines.append(f"param {name}: {before!r} -> {after!r}")
    old_rules = {r.id: r for r in old.rules}
    new_rules = {r.id: r for r in new.rules}
    for rid in old_rules.keys() - new_rules.keys():
        lines.append(f"rule {rid}: removed")
    for rule in new.rules:
        was = old_rules.get(rule.id)
        if was is None:
            lines.append(f"rule {rule.id}: added: when {rule.when} -> {rule.outcome}")
        elif (was.when, was.outcome) != (rule.when, rule.outcome):
            lines.append(
                f"rule {rule.id}: when {was.when} -> {was.outcome}  became  "
                f"when {rule.when} -> {rule.outcome}"
            )
    order_old = [r.id for r in old.rules if r.id in new_rules]
    order_new = [r.id for r in new.rules if r.id in old_rules]
    if order_old != order_new:
        lines.append(f"rule order: {', '.join(order_old)} -> {', '.join(order_new)}")
    if old.default_outcome != new.default_outcome:
        lines.append(f"default: {old.default_outcome} -> {new.default_outcome}")
    if old.review != new.review:
        lines.append(f"review: {old.review} -> {new.review}")
    console.print(f"{old.ref} -> {new.ref}")
    for line in lines or ["no difference in params, rules, default or review rules"]:
        console.print(escape(line))


@policy_app.command("activate")
def activate(
    ref: Annotated[str, typer.Argument(help="ID@VERSION")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
    actor: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
) -> None:
    """Make ID@VERSION the version new jobs use; it must pass its policy's cases."""
    settings = Settings()
    if "@" not in ref:
        raise fail(f"activate names an exact version: {ref}@N")
    policy = _load(settings, ref)
    who = actor or getpass.getuser()
    asyncio.run(_activate(settings, policy, "activate", who, reason, cases=True))
    console.print(f"active: {policy.ref} (sha256 {policy.ref.sha256[:12]})")


@policy_app.command("rollback")
def rollback(
    policy_id: Annotated[str, typer.Argument(help="Policy id.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
    actor: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
) -> None:
    """Make the previously active version of POLICY_ID active again."""
    settings = Settings()
    rows = asyncio.run(_catalog(settings, db.activations, policy_id))
    if not rows:
        raise fail(f"policy {policy_id} was never activated: nothing to roll back to")
    current = rows[-1].version
    earlier = [r for r in rows[:-1] if r.version != current]
    if not earlier:
        raise fail(
            f"{policy_id}@{current} is the only version ever active: nothing to roll back to"
        )
    target = _load(settings, f"{policy_id}@{earlier[-1].version}")
    asyncio.run(_activate(settings, target, "rollback", actor or getpass.getuser(), reason))
    console.print(f"rolled back {policy_id}: v{current} -> active {target.ref}")


async def _activate(
    settings: Settings, policy: Policy, action: str, actor: str, reason: str, *, cases: bool = False
) -> None:
    """Record the activation, unless the version's bytes differ from an earlier activation of
    it (immutable once released) or, with `cases`, it fails its policy's cases."""
    engine = db.make_engine(settings.catalog_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ACTIVATION_LOCK})
            for row in await db.activations(conn, policy.ref.id):
                if row.version == policy.ref.version and row.sha256 != policy.ref.sha256:
                    raise fail(
                        f"{policy.path} changed since it was activated (sha256 "
                        f"{row.sha256[:12]} then, {policy.ref.sha256[:12]} now): released "
                        "versions are immutable; add a new version instead"
                    )
            failures = _case_failures(policy) if cases else []
            if failures:
                for failure in failures:
                    console.print(escape(failure))
                raise fail(f"{policy.ref} does not pass its cases: not activated")
            await db.record_activation(
                conn,
                {
                    "policy_id": policy.ref.id,
                    "version": policy.ref.version,
                    "sha256": policy.ref.sha256,
                    "action": action,
                    "actor": actor,
                    "reason": reason,
                    "at": db.utcnow(),
                },
            )
    except OSError as err:
        raise fail(f"cannot reach the catalog at {settings.catalog_url} ({err})") from err
    finally:
        await engine.dispose()


async def _catalog(settings: Settings, query: Any, *args: Any) -> list[Any]:
    engine = db.make_engine(settings.catalog_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return list(await query(conn, *args))
    except OSError as err:
        raise fail(f"cannot reach the catalog at {settings.catalog_url} ({err})") from err
    finally:
        await engine.dispose()
