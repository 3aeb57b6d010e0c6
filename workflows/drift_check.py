"""DriftCheck: one drift check of a dataset, id `drift-check:{dataset}…` (a Schedule,
`drift:{dataset}`, appends the time it ran). One activity, `check_drift`: the recent window
against the reference, the drift policy's action, the check recorded and audited."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities import ids
    from activities.drift import DriftActivities
    from activities.payloads import DriftCheckInput, DriftCheckResult

from workflows.attributes import name_dataset
from workflows.retry import TRANSIENT


@workflow.defn(name=ids.DRIFT_CHECK_WORKFLOW)
class DriftCheck:
    @workflow.run
    async def run(self, inp: DriftCheckInput) -> DriftCheckResult:
        name_dataset(inp.dataset)
        return await workflow.execute_activity_method(
            DriftActivities.check_drift,
            inp,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=5),
            retry_policy=TRANSIENT,
        )
