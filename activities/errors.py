"""The retry model: which failures an activity may retry, and which end it at once.

Temporal owns retries, so the only question an activity answers is "would the same call fail
the same way again?". Yes (bad data, bad config, a write the catalog or S3 refuses, a bug):
a non-retryable `ApplicationError` whose `type` names the class of problem, so the workflow
reaches its terminal path at once (job `failed` with the reason, review `errored`). No, or
not known (a connection refused, a timeout, a server restarting): the error propagates and
Temporal retries it, within the bounded policies of `workflows/retry.py`.

Activities raise named errors themselves where they know the cause best (UnknownTask,
SourceNotFound, ...). `ClassifyErrors` is the safety net for everything else: an exception
that escapes an activity is classified here, by class, so a NUL byte the catalog refuses or
a RecursionError in a parser can never keep a job retrying forever.

Messages never carry item text: the catalog's engine hides SQL parameters, and only the
driver's own message (which names the problem, not the row) is kept.
"""

from __future__ import annotations

import csv
import re
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from activities import metrics
from activities.ids import (
    BAD_CONFIG,
    BAD_DATA,
    BAD_INPUT,
    BAD_SOURCE,
    CATALOG_REFUSED,
    INTERNAL,
    JOB_EXISTS,
    POLICY_CHANGED,
    POLICY_ERROR,
    S3_VERSIONING_OFF,
    SOURCE_FORBIDDEN,
    SOURCE_NOT_FOUND,
    SOURCE_UNREADABLE,
    STORAGE_REFUSED,
    UNKNOWN_TASK,
)
from policy_rules.store import PinnedPolicyChanged

# Not retried even when raised without non_retryable: the names above are deterministic.
DETERMINISTIC_TYPES = (
    BAD_INPUT,
    BAD_SOURCE,
    SOURCE_NOT_FOUND,
    SOURCE_FORBIDDEN,
    SOURCE_UNREADABLE,
    JOB_EXISTS,
    CATALOG_REFUSED,
    STORAGE_REFUSED,
    BAD_DATA,
    INTERNAL,
    # Raised non-retryable where they are known; named here too, so no policy retries them.
    BAD_CONFIG,
    UNKNOWN_TASK,
    POLICY_ERROR,
    POLICY_CHANGED,
    S3_VERSIONING_OFF,
)


def refuse(kind: str, message: str) -> ApplicationError:
    """A deterministic failure: Temporal will not retry it."""
    return ApplicationError(message, type=kind, non_retryable=True)


def policy_changed(err: PinnedPolicyChanged) -> ApplicationError:
    """A pinned policy file whose bytes are not the ones the job pinned when it started
    (`PolicyStore.pinned`): routing and review rules come from the same released version, or
    not at all. Raise it `from None`: the message says everything, and the failure a caller
    sees has no cause attached."""
    return refuse(POLICY_CHANGED, str(err))


def _s3_status(err: BaseException) -> tuple[int, str] | None:
    response: Any = getattr(err, "response", None)
    if not isinstance(response, dict):
        return None
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status, str(response.get("Error", {}).get("Code", ""))


# SQLSTATE classes PostgreSQL answers the same way every time: data exception, integrity,
# invalid transaction state, syntax or access rule, a trigger's RAISE, config file.
DETERMINISTIC_SQLSTATE = ("22", "23", "25", "2B", "42", "P0", "F0", "44", "21", "0A")


def _sqlstate(err: BaseException) -> str:
    for candidate in (getattr(err, "orig", None), err, err.__cause__):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return ""


def classify(err: BaseException) -> ApplicationError | None:
    """The non-retryable error `err` stands for, or None when it may be transient."""
    from botocore.exceptions import ClientError, ParamValidationError
    from sqlalchemy import exc as sa

    name = type(err).__name__
    if isinstance(err, sa.DBAPIError):
        if err.connection_invalidated:
            return None  # the server went away or is restarting
        state = _sqlstate(err)
        deterministic = (
            state[:2] in DETERMINISTIC_SQLSTATE
            if state
            else isinstance(err, sa.DataError | sa.IntegrityError | sa.ProgrammingError)
        )
        if not deterministic:
            return None  # connection (08), resources (53), shutdown (57), deadlock (40), ...
        orig = err.orig if err.orig is not None else err
        # The driver's first line names the problem ("invalid byte sequence ... 0x00"); the
        # statement is left out, and with hide_parameters it carries no values anyway.
        first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
        detail = re.sub(r"^<class '[^']*'>:\s*", "", first)[:300] or type(orig).__name__
        code = f" (SQLSTATE {state})" if state else ""
        return refuse(CATALOG_REFUSED, f"the catalog refused it: {detail}{code}")
    if isinstance(err, ClientError):
        status = _s3_status(err)
        if status and 400 <= status[0] < 500 and status[0] not in (408, 429):
            return refuse(STORAGE_REFUSED, f"S3 refused the request: {status[1]} ({status[0]})")
        return None
    if isinstance(err, ParamValidationError):
        return refuse(STORAGE_REFUSED, f"S3 request refused before sending: {err}"[:300])
    if isinstance(err, PermissionError):
        return refuse(SOURCE_UNREADABLE, f"permission denied: {err.filename or err}")
    if isinstance(err, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return refuse(SOURCE_NOT_FOUND, f"not a readable file: {err.filename or err}")
    if isinstance(err, OSError | TimeoutError | ConnectionError):
        return None  # network, disk full, a timeout: may pass
    if isinstance(err, UnicodeError | csv.Error | RecursionError | MemoryError | OverflowError):
        return refuse(BAD_DATA, f"{name}: {str(err)[:200]}")
    if isinstance(err, ValueError | TypeError | KeyError | AttributeError | AssertionError):
        return refuse(INTERNAL, f"{name}: {str(err)[:200]}")
    return None


class ClassifyErrors(Interceptor):
    """Worker interceptor: every activity's escaping exception goes through `classify`."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ClassifyInbound(next)


class _ClassifyInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except ApplicationError as err:
            kind = err.type or "ApplicationError"
            _failed(kind, not err.non_retryable and kind not in DETERMINISTIC_TYPES)
            raise
        except Exception as err:
            refused = classify(err)
            if refused is None:
                _failed(type(err).__name__, True)
                raise
            _failed(refused.type or INTERNAL, False)
            activity.logger.warning(
                "%s: %s (not retried)", refused.type, refused.message, extra={"error": refused.type}
            )
            # Not chained: the original's text may quote SQL; the message says what matters.
            raise refused from None


def _failed(error_type: str, retryable: bool) -> None:
    """Each failed attempt, by type (activities/metrics.py); a cancellation is no failure."""
    metrics.activity_failed(activity.info().activity_type, error_type, retryable)
