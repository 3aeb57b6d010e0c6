"""A ReviewItem's reviewer-identity keys after a rotation (workflow code, deterministic).

The new public keys are read by an activity from the ring as it is now, never taken from
the `identity_keys` signal (anyone who can reach Temporal can send one)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.retry import TRANSIENT

with workflow.unsafe.imports_passed_through():
    from activities.payloads import ReviewItemInput
    from activities.review import ReviewActivities


async def refreshed(inp: ReviewItemInput) -> ReviewItemInput:
    """`inp` with the ring's current public keys; unchanged if they cannot be read."""
    try:
        keys = await workflow.execute_activity_method(
            ReviewActivities.identity_keys,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=TRANSIENT,
        )
    except ActivityError as err:
        cause = getattr(err.cause, "message", None) or str(err.cause or err)
        workflow.logger.warning("identity keys not refreshed: %s", cause)
        return inp
    return replace(inp, identity=keys)
