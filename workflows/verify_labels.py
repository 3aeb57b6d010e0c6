"""VerifyLabels: one verification of a dataset's current labels, id `verify:{dataset}:{run}`.

One activity (`verify_labels`): confident learning flags the likely wrong labels, each label
version once, and queues their reviews (rule `label_issue`) in the dataset's review frontier.
A reviewer's answer becomes a human label like any other review's.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities import ids
    from activities.payloads import VerifyInput, VerifyResult
    from activities.verify import VerifyActivities

from workflows.attributes import name_dataset
from workflows.retry import TRANSIENT


@workflow.defn(name=ids.VERIFY_WORKFLOW)
class VerifyLabels:
    @workflow.run
    async def run(self, inp: VerifyInput) -> VerifyResult:
        name_dataset(inp.dataset)
        return await workflow.execute_activity_method(
            VerifyActivities.verify_labels,
            inp,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=5),
            retry_policy=TRANSIENT,
        )
