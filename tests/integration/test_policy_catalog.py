"""Policy catalog operations through the CLI and real jobs: validate, activate, a job taking
the active version, rollback, diff, and refusing an activated version edited on disk."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ThreadWorker, cli, write_jsonl
from worker.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.slow
POLICY = "route_trial"


@pytest.fixture(scope="module")
def trial(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """route_default's v1, v2 and cases as a policy of its own, and a worker that sees it."""
    root = tmp_path_factory.mktemp("pol")
    folder = root / "policies" / POLICY
    folder.mkdir(parents=True)
    for name in ("v1.yaml", "v2.yaml", "cases.yaml"):
        text = (PROJECT_ROOT / "policy_rules" / "route_default" / name).read_text()
        (folder / name).write_text(text.replace("id: route_default", f"id: {POLICY}"))
    local = stack.model_copy(
        update={"policies_dir": root / "policies", "task_queue": f"pol-{uuid.uuid4().hex[:6]}"}
    )
    with ThreadWorker(local):
        yield local


def job_policy(settings: Settings, source: Path, policy: str = POLICY) -> str:
    dataset = f"pol{uuid.uuid4().hex[:6]}"
    args = ["job", "start", str(source), "--dataset", dataset, "--task", "sentiment"]
    out = cli(settings, *args, "--policy", policy, "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    found = re.search(rf"policy\s*│\s*({POLICY}@\d+)", out.stdout)
    assert found, out.stdout
    return found[1]


def test_activate_rollback_and_jobs_taking_the_active_version(
    trial: Settings, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", [r["text"] for r in gold_rows[2000:2030]])
    assert job_policy(trial, source) == f"{POLICY}@2"  # never activated: the newest

    on = cli(trial, "policy", "activate", f"{POLICY}@1", "--reason", "start safe", "--actor", "ops")
    assert on.returncode == 0 and f"active: {POLICY}@1" in on.stdout, on.stdout
    assert job_policy(trial, source) == f"{POLICY}@1"
    assert job_policy(trial, source, f"{POLICY}@2") == f"{POLICY}@2"  # an exact version wins

    assert (
        cli(trial, "policy", "activate", f"{POLICY}@2", "--reason", "review rules").returncode == 0
    )
    assert job_policy(trial, source) == f"{POLICY}@2"
    back = cli(trial, "policy", "rollback", POLICY, "--reason", "too many escalations")
    assert back.returncode == 0 and f"v2 -> active {POLICY}@1" in back.stdout, back.stdout
    assert job_policy(trial, source) == f"{POLICY}@1"

    listed = cli(trial, "policy", "list")
    assert re.search(rf"{POLICY}\s*│\s*1, 2\s*│\s*v1", listed.stdout), listed.stdout
    diff = cli(trial, "policy", "diff", f"{POLICY}@1", f"{POLICY}@2")
    assert 'review.escalate_to: "" -> "senior"' in diff.stdout, diff.stdout

    # An activated version edited on disk: jobs and activation refuse it, naming both hashes.
    v1 = trial.policies_dir / POLICY / "v1.yaml"
    original = v1.read_text()
    v1.write_text(original.replace("min_confidence: 0.72", "min_confidence: 0.5"))
    try:
        dataset = f"pol{uuid.uuid4().hex[:6]}"
        args = ["job", "start", str(source), "--dataset", dataset, "--task", "sentiment"]
        edited = cli(trial, *args, "--policy", POLICY, "--wait")
        assert edited.returncode == 1
        assert "changed on disk since it was activated" in edited.stdout.replace("\n", " ")
        again = cli(trial, "policy", "activate", f"{POLICY}@1", "--reason", "x")
        assert again.returncode == 1 and "changed since it was activated" in again.stdout
        checked = cli(trial, "policy", "validate", str(v1))
        assert checked.returncode == 1, checked.stdout
        assert f"{POLICY}@1 was activated with sha256" in checked.stdout.replace("\n", " ")
    finally:
        v1.write_text(original)


def test_audit_log_names_actor_reason_and_version(trial: Settings) -> None:
    out = cli(
        trial,
        "policy",
        "activate",
        f"{POLICY}@2",
        "--reason",
        "audit check",
        "--actor",
        "auditor",
    )
    assert out.returncode == 0
    import asyncio

    from sqlalchemy import text

    from catalog import db

    async def events() -> list[tuple[str, str, dict[str, object]]]:
        engine = db.make_engine(trial.catalog_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT kind, actor, payload FROM audit_event WHERE subject = :s"
                        " ORDER BY id DESC LIMIT 1"
                    ),
                    {"s": f"policy:{POLICY}"},
                )
                return [(r[0], r[1], r[2]) for r in rows]
        finally:
            await engine.dispose()

    [(kind, actor, payload)] = asyncio.run(events())
    assert (kind, actor) == ("policy_activate", "auditor")
    assert payload["reason"] == "audit check" and payload["version"] == 2
