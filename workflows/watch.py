"""WatchPrefix: one look at an S3 prefix (a run of the Schedule `watch:{dataset}`).

`new_objects` names the object versions no job has labeled; each gets exactly one
`LabelDataset` job, a child whose id comes from the bucket, key and version id, followed by a
`DriftCheck` of the dataset against its reference. A job another watcher already started is
skipped; a failed job is counted and the next object goes on. One object at a time, oldest
first, so the drift checks compare each arrival with what came before it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities import ids
    from activities.payloads import (
        DriftCheckInput,
        DriftCheckResult,
        LabelDatasetInput,
        LabelDatasetResult,
        WatchInput,
        WatchResult,
    )
    from activities.watch import WatchActivities

from workflows.attributes import name_dataset
from workflows.retry import TRANSIENT


@workflow.defn(name=ids.WATCH_WORKFLOW)
class WatchPrefix:
    @workflow.run
    async def run(self, inp: WatchInput) -> WatchResult:
        name_dataset(inp.dataset)
        new = await workflow.execute_activity_method(
            WatchActivities.new_objects,
            inp,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=TRANSIENT,
        )
        labeled = skipped = failed = 0
        for obj in new:
            source = f"s3://{inp.bucket}/{obj.key}?versionId={obj.version_id}"
            try:
                await workflow.execute_child_workflow(
                    ids.LABEL_DATASET_WORKFLOW,
                    LabelDatasetInput(
                        dataset=inp.dataset, source=source, task=inp.task, policy=inp.policy
                    ),
                    id=obj.job_id,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    result_type=LabelDatasetResult,
                )
            except WorkflowAlreadyStartedError:
                skipped += 1
                continue
            except ChildWorkflowError as err:
                workflow.logger.error("%s failed: %s", obj.job_id, err.cause)
                failed += 1
                continue
            labeled += 1
            try:
                await workflow.execute_child_workflow(
                    ids.DRIFT_CHECK_WORKFLOW,
                    DriftCheckInput(dataset=inp.dataset, policy=inp.drift_policy),
                    id=f"{ids.drift_check_id(inp.dataset)}-after-{obj.job_id.rsplit(':', 1)[-1]}",
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    result_type=DriftCheckResult,
                )
            except (WorkflowAlreadyStartedError, ChildWorkflowError) as err:
                workflow.logger.error("drift check after %s: %s", obj.job_id, err)
        return WatchResult(seen=len(new), labeled=labeled, skipped=skipped, failed=failed)
