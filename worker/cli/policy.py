"""`labelfabric policy …`: validate, test, list, show, diff, activate, roll back and shadow
policies.

Policy files are immutable versions (`policy_rules/<id>/vN.yaml`) with a `cases.yaml`; the
catalog says which version is active (`policy_activation`, append-only, each row an audit
event with actor and reason). A job that names a policy without a version takes the active
one when it starts (the newest when none was ever activated) and keeps it to the end.
A shadowed candidate (`policy shadow ID@V`) is evaluated beside the deciding version on every
item of its policy's jobs and decides nothing; `policy shadow-report` compares the two.
"""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from worker.cli.console import console, fail, in_catalog

if TYPE_CHECKING:
    from policy_rules.engine import Policy
    from worker.settings import Settings


app = typer.Typer(help="Versioned routing and gate policies.", no_args_is_help=True)


def _load(settings: Settings, ref: str) -> Policy:
    from policy_rules.engine import Policy, PolicyError

    try:
        return Policy.load(settings.policies_dir, ref)
    except PolicyError as err:
        raise fail(escape(str(err))) from err


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
def list_() -> None:
    """Policies, their versions and the active one."""
    from catalog import db
    from policy_rules.engine import list_policies
    from policy_rules.loader import version_files
    from worker.settings import Settings

    settings = Settings()
    active = asyncio.run(_catalog(settings, db.activations))
    current: dict[str, Any] = {row.policy_id: row for row in active}
    shadowed: dict[str, list[str]] = {}
    for sh in asyncio.run(_catalog(settings, db.shadows)):
        shadowed.setdefault(sh.policy_id, []).append(f"v{sh.candidate_version}")
    table = Table(title=f"policies ({settings.policies_dir})")
    for col in ("policy", "versions", "active", "shadow", "since", "by", "reason"):
        table.add_column(col)
    for policy_id in list_policies(settings.policies_dir):
        versions = sorted(version_files(settings.policies_dir / policy_id))
        row = current.get(policy_id)
        table.add_row(
            policy_id,
            ", ".join(map(str, versions)),
            f"v{row.version}" if row else f"(none: jobs take v{versions[-1]})",
            ", ".join(shadowed.get(policy_id, [])),
            f"{row.at:%Y-%m-%d %H:%M}" if row else "",
            escape(row.actor) if row else "",
            escape(row.reason) if row else "",
        )
    console.print(table)


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="ID or ID@VERSION.")]) -> None:
    """One version: parameters, rules, default, review rules."""
    from worker.settings import Settings

    settings = Settings()
    policy = _load(settings, ref)
    console.print(
        f"[bold]{policy.ref}[/] ({policy.kind})  sha256 {policy.ref.sha256}  "
        f"cost <= {policy.cost}\n{escape(policy.description)}"
    )
    params = Table(title="params")
    params.add_column("name")
    params.add_column("value")
    for name, value in policy.params.items():
        params.add_row(name, escape(repr(value)))
    console.print(params)
    rules = Table(title="rules (first match wins)")
    for col in ("rule", "when", "outcome", "own params"):
        rules.add_column(col)
    for rule in policy.rules:
        own = ", ".join(f"{k}={v!r}" for k, v in rule.params.items())
        rules.add_row(rule.id, escape(rule.when), rule.outcome, escape(own))
    rules.add_row("(default)", "", policy.default_outcome, "")
    console.print(rules)
    if policy.kind == "route":
        console.print(escape(f"review: {policy.review}"))


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="ID@A")], b: Annotated[str, typer.Argument(help="ID@B")]
) -> None:
    """What changed between two versions: params, rules, default, review rules."""
    from worker.settings import Settings

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
        if was is not None and dict(was.params) != dict(rule.params):
            lines.append(f"rule {rule.id} params: {dict(was.params)} -> {dict(rule.params)}")
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
    asyncio.run(in_catalog(settings, _activate, policy, "activate", who, reason, True, begin=True))
    console.print(f"active: {policy.ref} (sha256 {policy.ref.sha256[:12]})")


@app.command("rollback")
def rollback(
    policy_id: Annotated[str, typer.Argument(help="Policy id.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")],
    actor: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
) -> None:
    """Make the previously active version of POLICY_ID active again."""
    from catalog import db
    from worker.settings import Settings

    settings = Settings()
    rows = asyncio.run(_catalog(settings, db.activations, policy_id))
    if not rows:
        raise fail(f"policy {policy_id} was never activated: nothing to roll back to")
    current = rows[-1].version
    earlier = db.rollback_target(rows)
    if earlier is None:
        raise fail(
            f"{policy_id}@{current} is the only version ever active: nothing to roll back to"
        )
    target = _load(settings, f"{policy_id}@{earlier}")
    who = actor or getpass.getuser()
    asyncio.run(in_catalog(settings, _activate, target, "rollback", who, reason, begin=True))
    console.print(f"rolled back {policy_id}: v{current} -> active {target.ref}")


async def _activate(
    conn: Any, policy: Policy, action: str, actor: str, reason: str, cases: bool = False
) -> None:
    """Record the activation, unless the version's bytes differ from an earlier activation of
    it (immutable once released) or, with `cases`, it fails its policy's cases."""
    from catalog import db

    await db.lock_activations(conn)
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


async def _activated() -> dict[tuple[str, int], str] | None:
    """(policy id, version) -> sha256 of every version ever activated; None if unreachable."""
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
    done = asyncio.run(
        in_catalog(settings, _shadow, candidate, target, who, reason, stop, begin=True)
    )
    console.print(escape(done))


async def _shadow(
    conn: Any, candidate: Policy, target: str, actor: str, reason: str, stop: bool
) -> str:
    from catalog import db

    ref = candidate.ref
    await db.lock_activations(conn)
    attached = [
        s
        for s in await db.shadows(conn, target)
        if (s.candidate_id, s.candidate_version) == (ref.id, ref.version)
    ]
    if stop:
        if not attached:
            raise fail(f"{ref} is not shadowing {target}")
        for row in attached:
            await db.detach_shadow(conn, row, actor=actor, reason=reason, at=db.utcnow())
        return f"{ref} no longer shadows {target}"
    if attached:
        return f"{ref} already shadows {target} (since {attached[0].attached_at:%c})"
    await db.attach_shadow(
        conn,
        {
            "policy_id": target,
            "candidate_id": ref.id,
            "candidate_version": ref.version,
            "candidate_sha256": ref.sha256,
            "actor": actor,
            "reason": reason,
            "attached_at": db.utcnow(),
        },
    )
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
    from worker.settings import Settings

    settings = Settings()
    if "@" not in ref:
        raise fail(f"shadow-report names an exact version: {ref}@N")
    policy_id, _, version = ref.partition("@")
    if not version.isdigit():
        raise fail(f"bad version in {ref!r}: expected ID@N")
    cells, rows = asyncio.run(in_catalog(settings, _report, policy_id, int(version), examples, on))
    total = sum(n for _, _, n in cells)
    same = sum(n for a, c, n in cells if a == c)
    report = {
        "candidate": ref,
        "items": total,
        "agree": same,
        "agreement": same / total if total else None,
        "confusion": [{"decided": a, "candidate": c, "items": n} for a, c, n in cells],
        "examples": [
            {
                "decided": r.active_outcome,
                "candidate": r.outcome,
                "decided_rule": r.active_rule,
                "candidate_rule": r.rule_id,
                "error": r.error,
                "item_id": r.item_id,
                "job_id": r.job_id,
                "ensemble_label": r.ensemble_label,
                "ensemble_confidence": r.ensemble_confidence,
                "text": r.text[:200],
            }
            for r in rows
        ],
    }
    if as_json:
        console.print_json(data=report)
        return
    if not total:
        raise fail(f"no shadow decisions for {ref}: attach it with `policy shadow {ref}`")
    console.print(f"{ref}: {total} items, same outcome on {same} ({same / total:.1%})")
    outcomes = sorted({a for a, _, _ in cells} | {c for _, c, _ in cells})
    table = Table(title="decided (rows) vs candidate (columns)")
    table.add_column("decided / candidate")
    for o in outcomes:
        table.add_column(o, justify="right")
    counts = {(a, c): n for a, c, n in cells}
    for a in outcomes:
        table.add_row(a, *(str(counts.get((a, c), 0)) for c in outcomes))
    console.print(table)
    if rows:
        ex = Table(title="where they differ (examples)")
        for col in ("decided", "candidate", "item", "ensemble", "text"):
            ex.add_column(col)
        for r in rows:
            ex.add_row(
                f"{r.active_outcome} ({r.active_rule})",
                f"{r.outcome} ({r.rule_id})" + (f" error: {escape(r.error)}" if r.error else ""),
                r.item_id[:12],
                f"{r.ensemble_label or '-'} {r.ensemble_confidence:.2f}",
                escape(r.text[:80]),
            )
        console.print(ex)


async def _report(
    conn: Any, policy_id: str, version: int, examples: int, on: str | None
) -> tuple[list[tuple[str, str, int]], list[Any]]:
    from catalog import db

    cells = await db.shadow_confusion(conn, policy_id, version, on)
    rows = await db.shadow_examples(conn, policy_id, version, per_cell=examples, policy_id=on)
    return cells, rows
