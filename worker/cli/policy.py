"""`labelfabric policy …`: validate, test, list, show, diff, activate, roll back and shadow
policies.

Policy files are immutable versions (`policy_rules/<id>/vN.yaml`) with a `cases.yaml`; the
catalog says which version is active (`policy_activation`, append-only, each row an audit
event with actor and reason). A job that names a policy without a version takes the active
one when it starts (the newest when none was ever activated) and keeps it to the end.
A shadowed candidate (`policy shadow ID@V`) is evaluated beside the deciding version on every
item of its policy's jobs and decides nothing; `policy shadow-report` compares the two.
Activations, rollbacks and shadow changes are catalog transactions (`catalog.policies`,
`catalog.shadows`); what `diff` and `shadow-report` show is computed in
`worker.cli.policy_views`.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli import group
from worker.cli.console import console, fail, in_catalog
from worker.cli.tables import JSON_HELP

if TYPE_CHECKING:
    from policy_rules.engine import Policy
    from policy_rules.model import PolicyRef
    from worker.settings import Settings


app = group("Versioned routing and gate policies.")


def _load(settings: Settings, ref: str) -> Policy:
    """`ref` from the released policies, or from eval's in the state dir (as workers read)."""
    from worker.cli.checks import policy

    return policy(settings, ref)


def _case_failures(policy: Policy) -> list[str]:
    from policy_rules.engine import check_cases

    cases = policy.path.parent / "cases.yaml"
    if not cases.is_file():
        return [f"{cases} is missing: a policy without cases cannot be activated"]
    return check_cases(policy, cases)


@app.command("validate")
def validate(
    paths: Annotated[list[Path], typer.Argument(help="vN.yaml files or folders.")],
) -> None:
    """Compile and type-check each version, run its policy's cases, and check that no version
    the catalog has activated was edited since (when the catalog answers)."""

    import asyncio

    from rich.markup import escape

    from policy_rules.engine import Policy, PolicyError
    from policy_rules.loader import version_files

    bad = 0
    activated = asyncio.run(_activated())
    if activated is None:
        console.print("[dim]catalog not reachable: the activated-version check is skipped[/]")
    for path in paths:
        folder, files = (
            (path, sorted(version_files(path).values()))
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
            was = (activated or {}).get((policy.ref.id, policy.ref.version))
            if was is not None and was != policy.ref.sha256:
                console.print(
                    escape(
                        f"{file}: {policy.ref} was activated with sha256 {was[:12]} and is now "
                        f"{policy.ref.sha256[:12]}: released versions are immutable; restore it "
                        "and add a new version"
                    )
                )
                bad += 1
                continue
            versions = version_files(folder)
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


@app.command("test")
def test() -> None:
    """Run every policy's cases against its newest version (part of `make test`)."""

    from rich.markup import escape

    from policy_rules.engine import list_policies
    from worker.settings import Settings

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


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Policies, their versions and the active one."""

    import asyncio

    from catalog import db
    from worker.cli.policy_views import POLICY_COLS, policy_rows
    from worker.cli.tables import emit_json, show
    from worker.settings import Settings

    settings = Settings()
    active = asyncio.run(_catalog(settings, db.activations))
    shadows = asyncio.run(_catalog(settings, db.shadows))
    rows = policy_rows(settings, active, shadows)
    if as_json:
        emit_json({"policies": rows})
        return
    show(f"policies ({settings.policies_dir})", POLICY_COLS, rows)
    console.print(
        "a policy without an active version: jobs take its newest; "
        f"eval's calibrated versions: {settings.eval_policies_dir}"
    )


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="ID or ID@VERSION.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """One version: parameters, rules (whole), default, review rules."""

    from worker.cli.policy_views import policy_json, print_policy
    from worker.cli.tables import emit_json
    from worker.settings import Settings

    policy = _load(Settings(), ref)
    if as_json:
        emit_json(policy_json(policy))
        return
    print_policy(policy)


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="ID@A")], b: Annotated[str, typer.Argument(help="ID@B")]
) -> None:
    """What changed between two versions: params, rules, default, review rules."""

    from rich.markup import escape

    from worker.cli.policy_views import diff_lines
    from worker.settings import Settings

    settings = Settings()
    old, new = _load(settings, a), _load(settings, b)
    lines = diff_lines(old, new)
    console.print(f"{old.ref} -> {new.ref}")
    for line in lines or ["no difference in params, rules, default or review rules"]:
        console.print(escape(line))


@app.command("activate")
def activate(
    ref: Annotated[str, typer.Argument(help="ID@VERSION")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
    actor: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
) -> None:
    """Make ID@VERSION the version new jobs use; it must pass its policy's cases."""
    from worker.settings import Settings

    settings = Settings()
    if "@" not in ref:
        raise fail(f"activate names an exact version: {ref}@N")
    policy = _load(settings, ref)
    who = actor or getpass.getuser()
    failures = _case_failures(policy)  # shown only if the catalog refuses for them
    _in_transaction(settings, _activate, policy, "activate", who, reason, failures)
    console.print(f"active: {policy.ref} (sha256 {policy.ref.sha256[:12]})")


@app.command("rollback")
def rollback(
    policy_id: Annotated[str, typer.Argument(help="Policy id.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
    actor: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
) -> None:
    """Make the previously active version of POLICY_ID active again."""
    from worker.settings import Settings

    settings = Settings()
    who = actor or getpass.getuser()
    current, target = _in_transaction(settings, _rollback, settings, policy_id, who, reason)
    console.print(f"rolled back {policy_id}: v{current} -> active {target.ref}")


def _in_transaction(settings: Settings, work: Any, *args: Any) -> Any:
    """`work(conn, *args)` in one catalog transaction; a refusal (the catalog's
    `ActivationRefused` or `ShadowRefused`) ends the command with its message, after the
    failing cases it names."""

    import asyncio

    from rich.markup import escape

    from catalog import db

    try:
        return asyncio.run(in_catalog(settings, work, *args, begin=True))
    except (db.ActivationRefused, db.ShadowRefused) as err:
        for failure in getattr(err, "failures", ()):
            console.print(escape(failure))
        raise fail(str(err)) from err


async def _activate(
    conn: Any, policy: Policy, action: str, actor: str, reason: str, failures: list[str]
) -> None:
    from catalog import db

    ref = policy.ref
    await db.activate(conn, ref.id, ref.version, ref.sha256, str(policy.path), actor=actor,
                      reason=reason, action=action, case_failures=failures)  # fmt: skip


async def _rollback(
    conn: Any, settings: Settings, policy_id: str, actor: str, reason: str
) -> tuple[int, Policy]:
    """Under one lock: the version to return to, its file (as it is now), its activation."""
    from catalog import db

    current, earlier = await db.rollback_versions(conn, policy_id)
    target = _load(settings, f"{policy_id}@{earlier}")
    await _activate(conn, target, "rollback", actor, reason, [])
    return current, target


async def _activated() -> dict[tuple[str, int], str] | None:
    """(policy id, version) -> sha256 of every version ever activated; None if unreachable."""

    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    from catalog import db
    from worker.settings import Settings

    settings = Settings()
    engine = db.make_engine(settings.catalog_url, pool_size=1)
    try:
        async with asyncio.timeout(5), engine.connect() as conn:
            return {(r.policy_id, r.version): r.sha256 for r in await db.activations(conn)}
    except (OSError, TimeoutError, SQLAlchemyError):
        return None
    finally:
        await engine.dispose()


async def _catalog(settings: Settings, query: Any, *args: Any) -> list[Any]:
    return list(await in_catalog(settings, query, *args))


@app.command("shadow")
def shadow(
    ref: Annotated[str, typer.Argument(help="Candidate ID@VERSION.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
    on: Annotated[
        str | None, typer.Option(help="The policy whose jobs carry it (default: its own id).")
    ] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Detach it instead.")] = False,
    actor: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
) -> None:
    """Evaluate a candidate version beside the deciding one on real traffic; it decides
    nothing. Every chunk of a job on the policy records what the candidate would have done."""

    from rich.markup import escape

    from policy_rules.engine import list_policies
    from worker.settings import Settings

    settings = Settings()
    if "@" not in ref:
        raise fail(f"shadow names an exact version: {ref}@N")
    candidate = _load(settings, ref)
    if candidate.kind != "route":
        raise fail(f"{candidate.ref} is a {candidate.kind} policy: only routing policies shadow")
    target = on or candidate.ref.id
    if target not in list_policies(settings.policies_dir):
        raise fail(f"unknown policy {target!r} to shadow")
    who = actor or getpass.getuser()
    done = _in_transaction(settings, _shadow, candidate.ref, target, who, reason, stop)
    console.print(escape(done))


async def _shadow(
    conn: Any, ref: PolicyRef, target: str, actor: str, reason: str, stop: bool
) -> str:
    from catalog import db

    if stop:
        await db.stop_shadow(conn, target, ref.id, ref.version, actor=actor, reason=reason)
        return f"{ref} no longer shadows {target}"
    was = await db.start_shadow(conn, target, ref.id, ref.version, ref.sha256, actor=actor,
                                reason=reason)  # fmt: skip
    if was is not None:
        return f"{ref} already shadows {target} (since {was.attached_at:%c})"
    return f"{ref} now shadows {target} (sha256 {ref.sha256[:12]})"


@app.command("shadow-report")
def shadow_report(
    ref: Annotated[str, typer.Argument(help="Candidate ID@VERSION.")],
    examples: Annotated[int, typer.Option(min=0, help="Example items per differing cell.")] = 3,
    on: Annotated[
        str | None, typer.Option(help="Only beside this policy's jobs (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How the candidate's outcomes compare with the decided ones over real traffic."""

    import asyncio

    from worker.cli.policy_views import print_shadow_report, shadow_report, shadow_rows
    from worker.settings import Settings

    settings = Settings()
    if "@" not in ref:
        raise fail(f"shadow-report names an exact version: {ref}@N")
    policy_id, _, version = ref.partition("@")
    if not version.isdigit():
        raise fail(f"bad version in {ref!r}: expected ID@N")
    cells, rows = asyncio.run(
        in_catalog(settings, shadow_rows, policy_id, int(version), examples, on)
    )
    if as_json:
        console.print_json(data=shadow_report(ref, cells, rows))
        return
    if not sum(n for _, _, n in cells):
        raise fail(f"no shadow decisions for {ref}: attach it with `policy shadow {ref}`")
    print_shadow_report(ref, cells, rows)
