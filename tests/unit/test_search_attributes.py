"""Every workflow of a dataset names it in visibility (`Dataset`; a job also `Job` and its memo
`summary`), whoever started it: each workflow runs here with fake activities on the
time-skipping test server, started *without* search attributes (a raw start, a child, a
Schedule from before), and must have set them itself; started with them, it records nothing.
Each run's history replays; `LABELFABRIC_RECORD_HISTORIES=DIR` saves them (the recorded
histories of the new behaviour in tests/histories/ came from here)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities import ids
from activities.payloads import (
    DATASET,
    JOB,
    LABEL_DATASET,
    LABEL_JOB,
    REVIEW_STATE,
    DatasetInput,
    DriftCheckInput,
    DriftCheckResult,
    FrontierInput,
    FrontierStatus,
    JobSummary,
    LabelDatasetInput,
    LabelDatasetResult,
    LabelsChanged,
    NewObject,
    OutcomeCounts,
    SnapshotInput,
    SnapshotRef,
    TopUpInput,
    VerifyInput,
    VerifyResult,
    WatchInput,
    WatchResult,
    dataset_attributes,
)
from tests.unit.test_label_dataset_workflow import FakeActivities
from worker.main import WORKFLOWS

DATASET_NAME = "unit"


def test_each_workflow_kind_gets_its_names() -> None:
    def names(attrs: Any) -> dict[str, object]:
        return {p.key.name: p.value for p in attrs}

    job = "label:d:j1"
    assert names(dataset_attributes("d", job=job)) == {
        "Dataset": "d", "Job": job, "LabelDataset": "d", "LabelJob": job,
    }  # fmt: skip
    # A review: as released it had LabelDataset, never LabelJob.
    assert names(dataset_attributes("d", job=job, review_state="awaiting")) == {
        "Dataset": "d", "Job": job, "ReviewState": "awaiting", "LabelDataset": "d",
    }  # fmt: skip
    assert names(dataset_attributes("d")) == {"Dataset": "d"}  # frontier, Dataset, checks, ...
    assert ids.dataset_clause('a"b') == '(Dataset = "a\\"b" OR LabelDataset = "a\\"b")'


async def record(name: str, history: WorkflowHistory) -> None:
    """Replay `history` against the current code; save it under `name` when asked to."""
    await Replayer(workflows=list(WORKFLOWS)).replay_workflow(history)
    folder = os.environ.get("LABELFABRIC_RECORD_HISTORIES")
    if folder:
        await asyncio.to_thread((Path(folder) / f"{name}.json").write_text, history.to_json())


async def until(check: Callable[[], bool]) -> None:
    for _ in range(300):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("never happened")


def attributes(described: Any) -> dict[str, object]:
    """Ours (the SDK adds `TemporalChangeVersion` with each patch it records)."""
    return {
        p.key.name: p.value
        for p in described.typed_search_attributes
        if p.key.name in ids.SEARCH_ATTRIBUTES
    }


async def test_a_raw_job_names_itself_and_keeps_a_summary_memo(
    skipping: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(items=10)
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    wid = ids.label_workflow_id(DATASET_NAME, uuid.uuid4().hex[:8])
    async with Worker(
        skipping.client, task_queue=queue, workflows=list(WORKFLOWS), activities=fakes.all
    ):
        handle = await skipping.client.start_workflow(  # no search attributes: a raw start
            ids.LABEL_DATASET_WORKFLOW,
            LabelDatasetInput(dataset=DATASET_NAME, source="/data/x.jsonl", task="t"),
            id=wid,
            task_queue=queue,
            result_type=LabelDatasetResult,
        )
        result = await handle.result()
        described = await handle.describe()
        history = await handle.fetch_history()
    assert attributes(described) == {
        ids.SA_DATASET: DATASET_NAME,
        ids.SA_JOB: wid,
        ids.SA_LABEL_DATASET: DATASET_NAME,
        ids.SA_LABEL_JOB: wid,
    }
    summary = await described.memo_value(ids.JOB_SUMMARY_MEMO, type_hint=JobSummary)
    assert summary == JobSummary(
        dataset=DATASET_NAME,
        task="t",
        policy="route_default@2",
        phase="done",
        items=10,
        quarantined=2,
        duplicates=1,
        chunks_total=1,
        chunks_done=1,
        counts=result.counts,
        snapshot=f"{DATASET_NAME}@1",
    )
    assert result.counts == OutcomeCounts(auto_accept=6, human_review=4)
    # The memo moves with the job: preparing, labeling, done; never once per chunk.
    kinds = [e.event_type for e in history.events]
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED) == 3
    await record("label_dataset-v3-named-summary", history)


class Fakes:
    """One fake per activity of the dataset's other workflows, under the real names."""

    def __init__(self) -> None:
        self.snapshots = 0
        self.top_ups = 0

    @activity.defn(name="snapshot")
    async def snapshot(self, inp: SnapshotInput) -> SnapshotRef:
        self.snapshots += 1
        return SnapshotRef(
            dataset=inp.dataset, version=self.snapshots, s3_key="k", s3_version_id="v",
            manifest_version_id="m", item_count=1, content_sha256="cd" * 32,
        )  # fmt: skip

    @activity.defn(name="top_up_reviews")
    async def top_up_reviews(self, inp: TopUpInput) -> FrontierStatus:
        self.top_ups += 1
        return FrontierStatus(dataset=inp.dataset, open=0, queued=0, opened=0, open_limit=2)

    @activity.defn(name="verify_labels")
    async def verify_labels(self, inp: VerifyInput) -> VerifyResult:
        return VerifyResult(dataset=inp.dataset, note="fewer than 30 labels")

    @activity.defn(name="check_drift")
    async def check_drift(self, inp: DriftCheckInput) -> DriftCheckResult:
        return DriftCheckResult(
            check_id="c", dataset=inp.dataset, reference="-", window_items=0, metrics={},
            policy="drift_default@1", rule="quiet", action="none",
        )  # fmt: skip

    @activity.defn(name="new_objects")
    async def new_objects(self, inp: WatchInput) -> list[NewObject]:
        return []

    @property
    def all(self) -> list[Callable[..., Any]]:
        return [
            self.snapshot,
            self.top_up_reviews,
            self.verify_labels,
            self.check_drift,
            self.new_objects,
        ]


async def test_every_other_workflow_of_a_dataset_names_it_itself(
    skipping: WorkflowEnvironment,
) -> None:
    fakes = Fakes()
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    client = skipping.client
    tag = uuid.uuid4().hex[:6]
    handles: dict[str, WorkflowHandle[Any, Any]] = {}
    async with Worker(client, task_queue=queue, workflows=list(WORKFLOWS), activities=fakes.all):
        handles["dataset-v2-named"] = await client.start_workflow(
            ids.DATASET_WORKFLOW,
            DatasetInput(name=DATASET_NAME, debounce_s=0.1),
            id=f"{ids.dataset_workflow_id(DATASET_NAME)}-{tag}",
            task_queue=queue,
            start_signal="labels_changed",
            start_signal_args=[LabelsChanged(source="unit")],
        )
        handles["review_frontier-v2-named"] = await client.start_workflow(
            ids.FRONTIER_WORKFLOW,
            FrontierInput(dataset=DATASET_NAME),
            id=f"{ids.frontier_workflow_id(DATASET_NAME)}-{tag}",
            task_queue=queue,
            start_signal="wake",
        )
        await until(lambda: fakes.snapshots >= 1 and fakes.top_ups >= 1)
        for handle in handles.values():  # long-lived: recorded as they wait, then ended
            await until_settled(handle)
        done = {n: await h.fetch_history() for n, h in handles.items()}
        for handle in handles.values():
            await handle.terminate("test over")
        for name, kind, inp, result_type in [
            ("verify_labels-v2-named", ids.VERIFY_WORKFLOW, VerifyInput(dataset=DATASET_NAME),
             VerifyResult),
            ("drift_check-v2-named", ids.DRIFT_CHECK_WORKFLOW,
             DriftCheckInput(dataset=DATASET_NAME), DriftCheckResult),
            ("watch-v2-named", ids.WATCH_WORKFLOW,
             WatchInput(bucket="b", prefix="p/", dataset=DATASET_NAME, task="t"), WatchResult),
        ]:  # fmt: skip
            handles[name] = await client.start_workflow(
                kind, inp, id=f"{name}-{tag}", task_queue=queue, result_type=result_type
            )
            await handles[name].result()
            done[name] = await handles[name].fetch_history()
        for name, handle in handles.items():
            described = await handle.describe()
            assert attributes(described) == {ids.SA_DATASET: DATASET_NAME}, name
            await record(name, done[name])


async def until_settled(handle: WorkflowHandle[Any, Any]) -> None:
    """Until the run's last workflow task completed (it waits for a signal now)."""
    for _ in range(300):
        events = [e async for e in handle.fetch_history_events()]
        if events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} never settled")


async def test_a_workflow_started_with_its_names_records_nothing_more(
    skipping: WorkflowEnvironment,
) -> None:
    fakes = Fakes()
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    async with Worker(
        skipping.client, task_queue=queue, workflows=list(WORKFLOWS), activities=fakes.all
    ):
        handle = await skipping.client.start_workflow(
            ids.DRIFT_CHECK_WORKFLOW,
            DriftCheckInput(dataset=DATASET_NAME),
            id=f"drift-check:{DATASET_NAME}-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
            search_attributes=dataset_attributes(DATASET_NAME),  # as `drift schedule` sets
            result_type=DriftCheckResult,
        )
        await handle.result()
        kinds = [e.event_type async for e in handle.fetch_history_events()]
    assert EventType.EVENT_TYPE_MARKER_RECORDED not in kinds
    assert EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES not in kinds


def test_the_keys_name_the_registered_attributes() -> None:
    keys = (DATASET, JOB, REVIEW_STATE, LABEL_DATASET, LABEL_JOB)
    assert {k.name for k in keys} == set(ids.SEARCH_ATTRIBUTES)
