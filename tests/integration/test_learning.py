"""Agents that learn from reviewers, on the real stack: a Retrain round trains the trainable
agent on its seed plus the accepted human labels, the gate policy promotes or refuses it, a
promoted version lives in S3 by version and the running worker serves it to jobs started
afterwards (no restart); a refused one changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, cast

from temporalio.testing import WorkflowEnvironment

from activities import ids
from activities.payloads import (
    LabelDatasetResult,
    RetrainInput,
    RetrainResult,
    RetrainStatus,
    ReviewStateView,
)
from catalog import db
from tests.helpers import ThreadWorker, cli
from tests.integration.reviewing import label_texts, rows
from worker.main import Runtime
from worker.settings import Settings

STRICT_GATE = """\
id: {name}
version: 1
kind: gate
inputs:
  heldout.items: int
  candidate.accuracy: double
  incumbent.accuracy: double
rules:
  - id: never
    when: candidate.accuracy < incumbent.accuracy + 2.0
    outcome: fail
default:
  outcome: pass
"""


def learning_task(stack: Settings, gate: str = "promote_default") -> str:
    """sentiment under a fresh name (its own agent versions), learning through `gate`."""
    name = f"learn_{uuid.uuid4().hex[:6]}"
    shipped = (stack.tasks_dir / "sentiment.yaml").read_text()
    body = shipped.replace("name: sentiment", f"name: {name}").replace(
        "gate: quality_default", f"gate: quality_default\nlearn:\n  gate: {gate}"
    )
    (stack.tasks_dir / f"{name}.yaml").write_text(body)
    return name


async def labeled_dataset(
    env: WorkflowEnvironment,
    stack: Settings,
    runtime: Runtime,
    task: str,
    rows_: list[dict[str, str]],
    tmp: Path,
) -> tuple[str, LabelDatasetResult]:
    """A job of `task` over `rows_`, then every item labeled by people (the rows' labels,
    imported as another tool's annotations would be)."""
    texts = [r["text"] for r in rows_]
    dataset, job = await label_texts(env, stack, texts, tmp, prefix="learn", task=task)
    human = {hashlib.sha256(r["text"].encode()).hexdigest(): r["label"] for r in rows_}
    async with runtime.engine.begin() as conn:
        await db.set_labels(
            conn, dataset=dataset, job_id="import:test", labels=human, source="import"
        )
    return dataset, job


async def retrain_round(env: WorkflowEnvironment, stack: Settings, task: str) -> RetrainResult:
    handle = await env.client.start_workflow(
        ids.RETRAIN_WORKFLOW,
        RetrainInput(task=task),
        id=ids.retrain_workflow_id(task),
        task_queue=stack.task_queue,
        start_signal="retrain",
    )
    for _ in range(600):
        status = await handle.query("status", result_type=RetrainStatus)
        if status.rounds >= 1 and status.last is not None:
            return status.last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{handle.id} finished no round")


async def votes_by_version(runtime: Runtime, job_id: str) -> set[str]:
    found = await rows(
        runtime,
        "SELECT DISTINCT agent_version FROM vote WHERE job_id = :j AND agent = 'tfidf_logreg'",
        j=job_id,
    )
    return {str(r[0]) for r in found}


async def test_a_promoted_version_is_served_to_later_jobs_without_a_restart(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    task = learning_task(stack)
    _, first = await labeled_dataset(env, stack, runtime, task, gold_rows[:1200], tmp_path)
    seed_version = (await votes_by_version(runtime, first.job_id)).pop()

    result = await retrain_round(env, stack, task)
    assert result.examples == 1200 and not result.note
    [outcome] = result.agents
    assert outcome.agent == "tfidf_logreg" and outcome.items == 1200
    assert outcome.version != seed_version
    # On 1,200 review snippets the retrained model is better on held-out folds.
    assert outcome.candidate_accuracy >= outcome.incumbent_accuracy
    assert (outcome.state, outcome.rule) == ("promoted", "default")
    [row] = await rows(
        runtime,
        "SELECT state, s3_key, s3_version_id, trained_on, gate FROM agent_version "
        "WHERE task = :t AND agent = 'tfidf_logreg'",
        t=task,
    )
    state, key, s3_version = row[:3]
    trained_on, gate = cast(dict[str, Any], row[3]), cast(dict[str, Any], row[4])
    assert state == "promoted" and key == f"models/{task}/tfidf_logreg/{outcome.version}.pkl"
    assert trained_on["human_labels"] == 1200 and trained_on["seed"] == "sentiment_seed.jsonl"
    assert len(trained_on["label_ids"]) == 1200 and trained_on["gold_labels"] == 0
    assert gate["policy"] == "promote_default" and gate["metrics"]["heldout.items"] == 1200
    body = runtime.labeling.artifacts.s3.get_object(  # type: ignore[union-attr]
        Bucket=stack.s3_bucket, Key=key, VersionId=s3_version
    )["Body"].read()
    assert hashlib.sha256(body).hexdigest()[:16] == outcome.version
    audit = await rows(
        runtime,
        "SELECT kind FROM audit_event WHERE subject = :s",
        s=f"agent:{task}/tfidf_logreg@{outcome.version}",
    )
    assert audit == [("agent_promoted",)]

    # The same worker, no restart: a job started now votes with the promoted version, whose
    # artifact it fetches from S3 by version (the local copy is removed first).
    (stack.models_dir / f"tfidf_logreg-{outcome.version}.pkl").unlink(missing_ok=True)
    _, later = await labeled_dataset(env, stack, runtime, task, gold_rows[1200:1300], tmp_path)
    assert await votes_by_version(runtime, later.job_id) == {outcome.version}
    # explain says which version voted and what it learned from.
    [item] = await rows(
        runtime, "SELECT item_id FROM vote WHERE job_id = :j LIMIT 1", j=later.job_id
    )
    out = cli(stack, "explain", str(item[0]), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    [vote] = [
        v
        for d in report["decisions"]
        for v in d["votes"]
        if d["job_id"] == later.job_id and v["agent"] == "tfidf_logreg"
    ]
    assert vote["version"] == outcome.version and vote["learned"]["state"] == "promoted"
    assert vote["learned"]["trained_on"]["human_labels"] == 1200


async def test_a_refused_promotion_changes_nothing(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    gate = f"strict_{uuid.uuid4().hex[:6]}"
    (stack.policies_dir / gate).mkdir()
    (stack.policies_dir / gate / "v1.yaml").write_text(STRICT_GATE.format(name=gate))
    task = learning_task(stack, gate=gate)
    _, first = await labeled_dataset(env, stack, runtime, task, gold_rows[:300], tmp_path)
    seed_version = await votes_by_version(runtime, first.job_id)

    result = await retrain_round(env, stack, task)
    [outcome] = result.agents
    assert (outcome.state, outcome.rule) == ("refused", "never")
    found = await rows(runtime, "SELECT state FROM agent_version WHERE task = :t", t=task)
    assert found == [("refused",)]
    audit = await rows(
        runtime,
        "SELECT kind FROM audit_event WHERE subject = :s",
        s=f"agent:{task}/tfidf_logreg@{outcome.version}",
    )
    assert audit == [("agent_refused",)]
    _, later = await labeled_dataset(env, stack, runtime, task, gold_rows[300:350], tmp_path)
    assert await votes_by_version(runtime, later.job_id) == seed_version
    shutil.rmtree(stack.policies_dir / gate)


async def test_a_promotion_rescores_the_backlog_and_supersedes_open_reviews_once(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    task = learning_task(stack)
    # A dataset waiting for people (most items routed to review), and one people labeled.
    texts = [r["text"] for r in gold_rows[1300:1600]]
    waiting, job = await label_texts(env, stack, texts, tmp_path, prefix="wait", task=task)
    assert job.counts.human_review > 100
    labeled, _ = await labeled_dataset(env, stack, runtime, task, gold_rows[:1200], tmp_path)
    # A hostile `supersede` on a review no re-score closes (its item has a person's label, which
    # agents never overwrite) changes nothing: the item checks the catalog and keeps waiting.
    [(bystander,)] = await rows(
        runtime,
        "SELECT workflow_id FROM review_task WHERE dataset = :d AND state = 'awaiting' "
        "ORDER BY item_id LIMIT 1",
        d=labeled,
    )
    await env.client.get_workflow_handle(str(bystander)).signal("supersede")

    result = await retrain_round(env, stack, task)
    assert [a.state for a in result.agents] == ["promoted"]
    rescore = result.rescore
    assert rescore is not None and rescore.items == job.counts.human_review
    assert 0 < rescore.accepted <= rescore.items and rescore.superseded > 0
    [(job_id, source_, status)] = await rows(
        runtime,
        "SELECT id, source, status FROM job WHERE dataset = :d AND id LIKE 'rescore:%'",
        d=waiting,
    )
    assert status == "completed" and str(source_).startswith("rescore (agents promoted")
    closed = await rows(
        runtime,
        "SELECT item_id, workflow_id FROM review_task WHERE dataset = :d AND state = 'superseded'",
        d=waiting,
    )
    assert len(closed) == rescore.accepted
    labels = await rows(
        runtime,
        "SELECT count(*) FROM label WHERE dataset = :d AND job_id = :j AND is_current "
        "AND source = 'agent'",
        d=waiting,
        j=job_id,
    )
    assert labels == [(rescore.accepted,)]
    versions = await votes_by_version(runtime, str(job_id))
    assert versions == {result.agents[0].version}
    # An open review the re-score closed ends as superseded and refuses a late answer.
    opened = {str(w) for _, w in closed}
    running = [
        w
        async for w in env.client.list_workflows(
            f'WorkflowType = "ReviewItem" AND Dataset = "{waiting}"'
        )
    ]
    superseded_runs = [w for w in running if w.id in opened]
    assert len(superseded_runs) >= rescore.superseded
    final = await asyncio.wait_for(
        env.client.get_workflow_handle(
            next(w.id for w in superseded_runs), result_type=ReviewStateView
        ).result(),
        60,
    )
    assert final.state == "superseded" and final.label is None
    bystanding = env.client.get_workflow_handle(str(bystander), result_type=ReviewStateView)
    assert (await bystanding.query("state", result_type=ReviewStateView)).state == "awaiting"
    history = (await bystanding.fetch_history()).to_json()
    assert "review_superseded" in history  # it asked the catalog, and was told no
    # Once: another round on the same labels promotes nothing and re-scores nothing.
    again = await retrain_round_again(env, task)
    assert [a.state for a in again.agents] == ["unchanged"] and again.rescore is None
    count = await rows(
        runtime, "SELECT count(*) FROM job WHERE dataset = :d AND id LIKE 'rescore:%'", d=waiting
    )
    assert count == [(1,)]


async def retrain_round_again(env: WorkflowEnvironment, task: str) -> RetrainResult:
    handle = env.client.get_workflow_handle(ids.retrain_workflow_id(task))
    before = await handle.query("status", result_type=RetrainStatus)
    await handle.signal("retrain")
    for _ in range(600):
        status = await handle.query("status", result_type=RetrainStatus)
        if status.rounds > before.rounds and status.last is not None:
            return status.last
        await asyncio.sleep(0.2)
    raise AssertionError("no second round")
