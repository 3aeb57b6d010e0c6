"""Drift checks on the real stack: a DriftCheck compares a dataset's recent window with its
reference, a drift policy picks the action, and the check is recorded and audited; the
Temporal Schedule `drift:{dataset}` is created, listed, triggered and paused through both the
labelfabric and the temporal CLIs."""

from __future__ import annotations

import asyncio
import bz2
import csv
import hashlib
import json
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from activities import ids
from activities.payloads import DriftCheckInput, DriftCheckResult
from agents.samples import corpus_path
from tests.helpers import ThreadWorker, cli
from tests.integration.reviewing import label_texts, rows
from tests.integration.test_cli import temporal_cli
from worker.main import Runtime
from worker.settings import Settings

SAMPLE_ON_NEW_TEXT = """\
id: {name}
version: 1
kind: drift
inputs:
  window.items: int
  reference.items: int
  input.auc: double
params:
  min_items: 20
  max_auc: 0.8
rules:
  - id: too_small
    when: window.items < params.min_items || reference.items < params.min_items
    outcome: none
  - id: new_text
    when: input.auc > params.max_auc
    outcome: sample_review
default:
  outcome: none
"""


def plots() -> list[str]:
    with bz2.open(corpus_path(), "rt", encoding="utf-8", newline="") as fh:
        return [r["text"].strip() for r in csv.DictReader(fh) if r["category"] == "plot"]


def shuffled(gold_rows: list[dict[str, str]]) -> list[str]:
    texts = [r["text"] for r in gold_rows]
    return sorted(texts, key=lambda t: hashlib.sha256(t.encode()).digest())


async def check(env: WorkflowEnvironment, stack: Settings, **inp: object) -> DriftCheckResult:
    dataset = str(inp["dataset"])
    return await env.client.execute_workflow(
        ids.DRIFT_CHECK_WORKFLOW,
        DriftCheckInput(**inp),  # type: ignore[arg-type]
        id=f"{ids.drift_check_id(dataset)}-{uuid.uuid4().hex[:6]}",
        task_queue=stack.task_queue,
        result_type=DriftCheckResult,
    )


def write_policy(stack: Settings) -> str:
    name = f"drift_test_{uuid.uuid4().hex[:6]}"
    (stack.policies_dir / name).mkdir()
    (stack.policies_dir / name / "v1.yaml").write_text(SAMPLE_ON_NEW_TEXT.format(name=name))
    return name


async def test_new_kinds_of_text_are_sampled_for_review_and_a_calm_window_is_not(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    policy = write_policy(stack)
    texts = shuffled(gold_rows)
    dataset, _ = await label_texts(env, stack, texts[:300], tmp_path, prefix="drift")
    # One job: nothing before it to compare with.
    empty = await check(env, stack, dataset=dataset, policy=policy)
    assert (empty.window_items, empty.action, empty.rule) == (300, "none", "too_small")
    assert empty.metrics["reference.items"] == 0

    # More of the same reviews: calm.
    same = tmp_path / "same.jsonl"
    same.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[300:500]))
    out = cli(stack, "job", "start", str(same), "--dataset", dataset, "--task", "sentiment",
              "--wait")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    calm = await check(env, stack, dataset=dataset, policy=policy)
    assert calm.window_items == 200 and calm.action == "none" and calm.rule == "default"
    assert calm.metrics["reference.items"] == 300
    assert calm.metrics["input.auc"] is not None and calm.metrics["input.auc"] < 0.7

    # Film synopses arrive: not reviews at all. A sample goes to people.
    new = tmp_path / "plots.jsonl"
    new.write_text("".join(json.dumps({"text": t}) + "\n" for t in plots()))
    out = cli(stack, "job", "start", str(new), "--dataset", dataset, "--task", "sentiment",
              "--wait")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    moved = await check(env, stack, dataset=dataset, policy=policy, window=150, sample=5)
    assert moved.action == "sample_review" and moved.rule == "new_text"
    assert moved.metrics["input.auc"] is not None and moved.metrics["input.auc"] > 0.8
    assert moved.detail.startswith("5 recent item(s) queued")
    queued = await rows(
        runtime,
        "SELECT count(*) FROM review_task WHERE dataset = :d AND job_id = :j "
        "AND rule_id = 'drift_sample'",
        d=dataset,
        j=moved.check_id,
    )
    assert queued == [(5,)]
    recorded = await rows(
        runtime,
        "SELECT c.action, c.rule_id, c.policy_id, a.kind FROM drift_check c "
        "JOIN audit_event a ON a.event_key = c.id || :suffix WHERE c.dataset = :d "
        "ORDER BY c.checked_at",
        d=dataset,
        suffix=":checked",
    )
    assert [r[:2] for r in recorded] == [
        ("none", "too_small"),
        ("none", "default"),
        ("sample_review", "new_text"),
    ]
    assert {r[2] for r in recorded} == {policy} and {r[3] for r in recorded} == {"drift_checked"}
    shown = cli(stack, "drift", "checks", dataset)
    assert shown.returncode == 0 and "sample_review" in shown.stdout
    png = tmp_path / "drift.png"
    report = cli(stack, "drift", "report", dataset, "--out", str(png))
    assert report.returncode == 0 and report.stdout.count("\n") >= 4, report.stdout
    assert "sample_review" in report.stdout and "input.auc" in report.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def listed(stack: Settings, schedule_id: str, every: str, paused: bool) -> bool:
    for _ in range(50):
        shown = json.loads(cli(stack, "drift", "list", "--json").stdout)["schedules"]
        found = [s for s in shown if s["schedule"] == schedule_id]
        if found and found[0]["every"] == [every] and found[0]["paused"] is paused:
            return True
        await asyncio.sleep(0.2)
    return False


async def test_the_drift_schedule_through_both_clis(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    dataset, _ = await label_texts(env, stack, shuffled(gold_rows)[:60], tmp_path, prefix="sched")
    schedule_id = ids.drift_schedule_id(dataset)
    out = cli(stack, "drift", "schedule", dataset, "--every", "1h")
    assert out.returncode == 0 and f"created schedule {schedule_id}" in out.stdout, out.stdout
    again = cli(stack, "drift", "schedule", dataset, "--every", "2h")
    assert again.returncode == 0 and "updated schedule" in again.stdout
    # Schedules are listed from visibility, which catches up within a moment.
    assert await listed(stack, schedule_id, "2:00:00", paused=False)
    by_temporal = temporal_cli(stack, "schedule", "list")
    assert by_temporal.returncode == 0 and schedule_id in by_temporal.stdout, by_temporal.stderr

    # Triggered from labelfabric, then from temporal: each run is a recorded check.
    async def checks(n: int) -> int:
        for _ in range(150):
            found = await rows(
                runtime, "SELECT count(*) FROM drift_check WHERE dataset = :d", d=dataset
            )
            if found[0][0] == n:
                break
            await asyncio.sleep(0.2)
        return int(found[0][0])  # type: ignore[call-overload]

    assert cli(stack, "drift", "run", dataset).returncode == 0
    assert await checks(1) == 1
    triggered = temporal_cli(stack, "schedule", "trigger", "--schedule-id", schedule_id)
    assert triggered.returncode == 0, triggered.stderr
    assert await checks(2) == 2
    # Paused by temporal, seen by labelfabric; resumed by labelfabric, seen by temporal.
    paused = temporal_cli(
        stack, "schedule", "toggle", "--schedule-id", schedule_id, "--pause", "--reason", "test"
    )
    assert paused.returncode == 0, paused.stderr
    assert await listed(stack, schedule_id, "2:00:00", paused=True)
    assert cli(stack, "drift", "resume", dataset).returncode == 0
    described = temporal_cli(
        stack, "schedule", "describe", "--schedule-id", schedule_id, "-o", "json"
    )
    assert described.returncode == 0 and '"paused": true' not in described.stdout
    await env.client.get_schedule_handle(schedule_id).delete()
    missing = cli(stack, "drift", "pause", dataset)
    assert missing.returncode == 1 and f"no drift schedule for {dataset}" in missing.stdout
    bad = cli(stack, "drift", "schedule", dataset, "--every", "soon")
    assert bad.returncode == 1 and "--every 'soon'" in bad.stdout
    wrong = cli(stack, "drift", "schedule", dataset, "--policy", "route_default")
    assert wrong.returncode == 1 and "needs kind: drift" in wrong.stdout


RELABEL_ALWAYS = """\
id: {name}
version: 1
kind: drift
inputs:
  window.items: int
params:
  min_items: 5
rules:
  - id: too_small
    when: window.items < params.min_items
    outcome: none
  - id: relabel_window
    when: window.items >= params.min_items
    outcome: relabel
default:
  outcome: none
"""


async def test_a_relabel_redoes_agent_labels_and_never_a_persons(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    from catalog import db

    name = f"drift_relabel_{uuid.uuid4().hex[:6]}"
    (stack.policies_dir / name).mkdir()
    (stack.policies_dir / name / "v1.yaml").write_text(RELABEL_ALWAYS.format(name=name))
    texts = shuffled(gold_rows)[600:900]
    dataset, _ = await label_texts(env, stack, texts[:200], tmp_path, prefix="relab")
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[200:]))
    out = cli(stack, "job", "start", str(more), "--dataset", dataset, "--task", "sentiment",
              "--wait")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    window = {hashlib.sha256(t.encode()).hexdigest() for t in texts[200:]}
    agent = [
        str(r[0])
        for r in await rows(
            runtime,
            "SELECT item_id, label FROM label WHERE dataset = :d AND is_current "
            "AND source = 'agent' ORDER BY item_id",
            d=dataset,
        )
        if str(r[0]) in window
    ]
    assert len(agent) >= 3
    person = agent[0]
    async with runtime.engine.begin() as conn:  # a person's (imported) label on one, then
        await db.set_labels(conn, dataset=dataset, job_id="import:x", labels={person: "negative"},
                            source="import", reviewers=["alice"])  # fmt: skip
        # agents writing over it are refused by the catalog itself
        await db.set_labels(conn, dataset=dataset, job_id="label:x", labels={person: "positive"},
                            source="agent")  # fmt: skip

    result = await check(env, stack, dataset=dataset, policy=name)
    assert result.action == "relabel" and result.rule == "relabel_window"
    relabel_id = result.detail.split()[2]
    assert result.detail.endswith(f"over {len(agent) - 1} agent-labeled item(s)")
    done = await env.client.get_workflow_handle(relabel_id).result()
    assert done["items"] == len(agent) - 1  # type: ignore[index]
    [(reason, source)] = await rows(
        runtime, "SELECT reason, source FROM job WHERE id = :j", j=relabel_id
    )
    assert reason == f"drift:{result.check_id}" and "?versionId=" in str(source)
    still = await rows(
        runtime,
        "SELECT label, source FROM label WHERE dataset = :d AND item_id = :i AND is_current",
        d=dataset,
        i=person,
    )
    assert still == [("negative", "import")]
    # The version the relabel job made says so in `dataset versions` (a folded table).
    made = await rows(
        runtime,
        "SELECT s.version FROM snapshot s JOIN job j ON j.id = s.job_id "
        "WHERE s.dataset = :d AND j.reason = :r",
        d=dataset,
        r=f"drift:{result.check_id}",
    )
    assert len(made) == 1
    versions = json.loads(cli(stack, "dataset", "versions", dataset, "--json").stdout)
    (relabel,) = [v for v in versions["versions"] if v["version"] == made[0][0]]
    assert f"(relabel after drift:{result.check_id})" in relabel["by"]
    table = cli(stack, "dataset", "versions", dataset).stdout  # wrapped between words
    assert "(relabel" in table and f"drift:{result.check_id})" in table
    shown = cli(stack, "explain", agent[1], "--dataset", dataset, "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    reasons = [d["reason"] for d in json.loads(shown.stdout)["decisions"] if d["reason"]]
    assert reasons and reasons[0].startswith(f"relabelled after drift check {result.check_id}")
    assert "rule relabel_window" in reasons[0]
