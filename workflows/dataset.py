"""Dataset: one long-lived workflow per dataset, id `dataset:{name}`.

Label changes arrive as `labels_changed` signals (from closed reviews); after the first one it
waits `debounce_s` for more, then writes one snapshot version for the whole batch: a burst
of reviews makes a few versions, one review alone makes one within about a second.
It continues as new well before Temporal's per-run signal and history limits, after every
signal handler has finished, carrying the count of changes not yet snapshotted.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities import ids
    from activities.payloads import DatasetInput, LabelsChanged, SnapshotInput, SnapshotRef
    from activities.snapshot import SnapshotActivities

from workflows.attributes import name_dataset
from workflows.retry import TRANSIENT


@workflow.defn(name=ids.DATASET_WORKFLOW)
class Dataset:
    def __init__(self) -> None:
        self._pending = 0
        self._signals = 0
        self._last: SnapshotRef | None = None

    @workflow.signal(name="labels_changed")
    def labels_changed(self, change: LabelsChanged) -> None:
        # One change per signal, whatever `count` says: only whether something is pending
        # matters, and a caller's negative count must never hold snapshots back.
        self._pending += 1
        self._signals += 1

    @workflow.query
    def last_snapshot(self) -> SnapshotRef | None:
        return self._last

    @workflow.run
    async def run(self, inp: DatasetInput) -> None:
        name_dataset(inp.name)
        self._pending += max(0, inp.pending)
        batches = 0
        while batches < inp.max_batches_per_run and self._signals < inp.max_signals_per_run:
            await workflow.wait_condition(lambda: self._pending > 0)
            await workflow.sleep(timedelta(seconds=inp.debounce_s))
            self._pending = 0
            batches += 1
            try:
                self._last = await workflow.execute_activity_method(
                    SnapshotActivities.snapshot,
                    # The run id keeps the snapshot key unique across runs of this workflow.
                    SnapshotInput(
                        job_id=f"dataset:{inp.name}:{workflow.info().run_id}:{batches}",
                        dataset=inp.name,
                    ),
                    start_to_close_timeout=timedelta(minutes=30),
                    heartbeat_timeout=timedelta(minutes=2),
                    retry_policy=TRANSIENT,
                )
            except ActivityError as err:
                # The labels are committed; only this version is missing. The next change
                # snapshots them all, so the dataset is never stuck on one failed write.
                workflow.logger.error("snapshot of %s failed: %s", inp.name, err.cause or err)
            if workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(replace(inp, pending=self._pending))
