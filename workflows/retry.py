"""Every retry policy a workflow schedules an activity with: bounded, in one place.

Activities mark deterministic failures non-retryable (`activities/errors.py`), so these
policies only ever meet transient ones: a database or S3 restarting, a worker killed. They
still end: after `maximum_attempts` the workflow takes its terminal path (job `failed` with
the reason, review `errored`) instead of retrying forever. `tests/test_retry_model.py`
checks that every activity call names one of these.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.errors import DETERMINISTIC_TYPES

NEVER = list(DETERMINISTIC_TYPES)  # retried by no policy, whoever raised them

# Rides out a catalog, S3 or worker outage of about a quarter of an hour (1, 2, 4, ... 30 s
# between attempts), then gives up.
TRANSIENT = RetryPolicy(maximum_attempts=40, maximum_interval=timedelta(seconds=30))
TRANSIENT.non_retryable_error_types = NEVER

# For the bookkeeping of a terminal path (marking a job failed, a review errored): patient,
# because a terminal state left unrecorded is the one thing worse than a failure.
BOOKKEEPING = RetryPolicy(maximum_attempts=100, maximum_interval=timedelta(seconds=60))
BOOKKEEPING.non_retryable_error_types = NEVER

ALL = (TRANSIENT, BOOKKEEPING)
