"""The search attributes on the real stack: `Dataset="X"` answers with exactly the workflows
of dataset X, of every kind (its job, reviews, review frontier, Dataset workflow, label
verification, drift check and watcher), `WorkflowType="LabelDataset" AND Dataset="X"` with
its jobs only, `Job` with a job and the reviews it opened; during the migration release the
released `LabelDataset` still answers as it did (jobs and reviews). A job's memo carries its
summary. And a Label Studio export of a human-labelled item carries the agents' predictions
and who labelled it, when."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities import ids
from activities.payloads import JobSummary, LabelDatasetInput, LabelDatasetResult
from tests.helpers import ThreadWorker, cli, write_jsonl
from tests.integration.reviewing import eventually, handle_for, rows, submit
from worker.main import Runtime
from worker.settings import Settings

KINDS = {
    ids.LABEL_DATASET_WORKFLOW,
    ids.REVIEW_ITEM_WORKFLOW,
    ids.FRONTIER_WORKFLOW,
    ids.DATASET_WORKFLOW,
    ids.VERIFY_WORKFLOW,
    ids.DRIFT_CHECK_WORKFLOW,
    ids.WATCH_WORKFLOW,
}


@pytest.fixture(scope="module")
async def reviewed(
    env: WorkflowEnvironment,
    stack: Settings,
    cli_worker: ThreadWorker,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, str]:
    """A dataset labeled by `job start` (job j1) with one review closed by alice, whose
    label made snapshot version 2: (dataset, the reviewed item)."""
    dataset = f"sa{uuid.uuid4().hex[:8]}"
    source = write_jsonl(
        tmp_path_factory.mktemp("sa") / "sa.jsonl", [r["text"] for r in gold_rows[500:560]]
    )
    out = cli(stack, "job", "start", str(source), "--dataset", dataset, "--task", "sentiment",
              "--job", "j1", "--wait")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    waiting = await rows(
        runtime,
        "SELECT item_id FROM review_task WHERE dataset = :d AND state = 'awaiting'"
        " ORDER BY item_id LIMIT 1",
        d=dataset,
    )
    item = str(waiting[0][0])
    receipt = await submit(handle_for(env, dataset, item), "alice", "negative", "clear")
    assert receipt.label == "negative"

    async def second_version() -> bool:
        found = await rows(runtime, "SELECT max(version) FROM snapshot WHERE dataset = :d",
                           d=dataset)  # fmt: skip
        return found[0][0] == 2

    assert await eventually(second_version, within=30)
    return dataset, item


async def listed(client: Client, query: str) -> set[tuple[str, str]]:
    return {(w.id, w.workflow_type) async for w in client.list_workflows(query)}


async def test_dataset_answers_with_every_workflow_of_the_dataset_and_nothing_else(
    env: WorkflowEnvironment,
    stack: Settings,
    runtime: Runtime,
    reviewed: tuple[str, str],
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    dataset, item = reviewed
    job = ids.label_workflow_id(dataset, "j1")
    # The dataset's other workflows, each started the way an operator starts it.
    verify = cli(stack, "dataset", "verify", dataset)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    drift = cli(stack, "drift", "schedule", dataset, "--every", "1h")
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert cli(stack, "drift", "run", dataset).returncode == 0
    uri = f"s3://{stack.s3_bucket}/inbox/{dataset}/"
    watch = cli(stack, "watch", uri, "--dataset", dataset, "--task", "sentiment", "--every", "1h")
    assert watch.returncode == 0, watch.stdout + watch.stderr
    await env.client.get_schedule_handle(ids.watch_schedule_id(dataset)).trigger()
    # Another dataset, its job started raw (no attributes given): it names itself.
    other = f"sb{uuid.uuid4().hex[:8]}"
    source = write_jsonl(tmp_path / "other.jsonl", [r["text"] for r in gold_rows[560:580]])
    await env.client.execute_workflow(
        ids.LABEL_DATASET_WORKFLOW,
        LabelDatasetInput(dataset=other, source=str(source), task="sentiment"),
        id=ids.label_workflow_id(other, "raw"),
        task_queue=stack.task_queue,
        result_type=LabelDatasetResult,
    )

    by_name = f'{ids.SA_DATASET} = "{dataset}"'

    async def every_kind() -> set[tuple[str, str]]:
        found = await listed(env.client, by_name)
        return found if {kind for _, kind in found} == KINDS else set()

    found = await eventually(every_kind, within=60)
    assert {kind for _, kind in found} == KINDS, found
    # Exactly the dataset's: every workflow whose id names it, and no other.
    mine = {(w.id, w.workflow_type) async for w in env.client.list_workflows() if dataset in w.id}
    assert found == mine
    reviews = {wid for wid, kind in found if kind == ids.REVIEW_ITEM_WORKFLOW}
    assert ids.review_workflow_id(dataset, item) in reviews

    jobs = await listed(env.client, f'WorkflowType = "LabelDataset" AND {by_name}')
    assert jobs == {(job, ids.LABEL_DATASET_WORKFLOW)}
    by_job = await listed(env.client, f'{ids.SA_JOB} = "{job}"')
    assert {wid for wid, _ in by_job} == {job} | reviews
    raw = await listed(env.client, f'{ids.SA_DATASET} = "{other}"')
    assert (ids.label_workflow_id(other, "raw"), ids.LABEL_DATASET_WORKFLOW) in raw
    assert not {wid for wid, _ in raw} & {wid for wid, _ in found}

    # The migration release: the released name answers as it did, jobs and reviews.
    released = await listed(env.client, f'{ids.SA_LABEL_DATASET} = "{dataset}"')
    assert {wid for wid, _ in released} == {job} | reviews
    assert await listed(env.client, f'{ids.SA_LABEL_JOB} = "{job}"') == jobs

    summary = await (await env.client.get_workflow_handle(job).describe()).memo_value(
        ids.JOB_SUMMARY_MEMO, type_hint=JobSummary
    )
    assert (summary.phase, summary.dataset, summary.items) == ("done", dataset, 60)
    assert summary.snapshot == f"{dataset}@1" and summary.counts.total == 60
    assert summary.policy.startswith("route_default@")

    for schedule in (ids.drift_schedule_id(dataset), ids.watch_schedule_id(dataset)):
        await env.client.get_schedule_handle(schedule).delete()


async def test_a_label_studio_export_says_who_labelled_an_item_and_what_the_agents_said(
    stack: Settings, runtime: Runtime, reviewed: tuple[str, str], tmp_path: Path
) -> None:
    dataset, item = reviewed
    out = tmp_path / "studio.json"
    done = cli(stack, "dataset", "export", f"{dataset}@2", "--format", "label-studio",
               "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    task = next(t for t in json.loads(out.read_text()) if t["data"]["item_id"] == item)
    assert task["meta"]["label_source"] == "human"
    votes = await rows(
        runtime,
        "SELECT agent, agent_version FROM vote WHERE dataset = :d AND item_id = :i"
        " AND label IS NOT NULL ORDER BY agent",
        d=dataset,
        i=item,
    )
    assert votes  # the agents voted before it went to people
    assert [p["model_version"] for p in task["predictions"]] == [f"{a}@{v}" for a, v in votes]
    ((annotation),) = task["annotations"]
    assert annotation["completed_by"] == {"email": "alice"}
    assert annotation["result"][0]["value"] == {"choices": ["negative"]}
    submitted = await rows(
        runtime,
        "SELECT submitted_at FROM review WHERE dataset = :d AND item_id = :i AND accepted",
        d=dataset,
        i=item,
    )
    at = submitted[0][0]
    assert annotation["created_at"] == at.isoformat().replace("+00:00", "Z")  # type: ignore[attr-defined]
