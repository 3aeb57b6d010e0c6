"""Every name the outside world sees, spelled once: workflow types and ids, the task queue,
search attributes, review states, outcomes and error types. (Audit event kinds are spelled
once where the log is kept: `catalog/kinds.py`.)

Operators type these into the Temporal CLI and Web UI (`temporal workflow list --query
'WorkflowType="ReviewItem" AND ReviewState="awaiting"'`) and callers match on them
(`ApplicationError.type`), so they never change once released. Plain strings only: the
stack, the CLI and the workflows import this module without loading the Temporal SDK.
"""

from __future__ import annotations

import hashlib

# Outcomes: a route policy's decisions and a gate's verdicts, defined with the policy language
# (policy_rules/model.py, no Temporal) and re-exported here.
from policy_rules.model import AUTO_ACCEPT as AUTO_ACCEPT
from policy_rules.model import GATE_FAIL as GATE_FAIL
from policy_rules.model import GATE_OUTCOMES as GATE_OUTCOMES
from policy_rules.model import GATE_PASS as GATE_PASS
from policy_rules.model import HUMAN_REVIEW as HUMAN_REVIEW
from policy_rules.model import OUTCOMES as OUTCOMES
from policy_rules.model import QUARANTINE as QUARANTINE
from policy_rules.model import REJECT as REJECT

# --- workflow types and ids -----------------------------------------------------------------
LABEL_DATASET_WORKFLOW = "LabelDataset"  # one labeling job: label:DATASET:JOB
REVIEW_ITEM_WORKFLOW = "ReviewItem"  # one item's human review: review:DATASET:ITEM
DATASET_WORKFLOW = "Dataset"  # the dataset's single writer of reviewed labels: dataset:DATASET
FRONTIER_WORKFLOW = "ReviewFrontier"  # opens a dataset's waiting reviews: frontier:DATASET
VERIFY_WORKFLOW = "VerifyLabels"  # flags likely wrong labels for review: verify:DATASET:RUN
RETRAIN_WORKFLOW = "Retrain"  # retrains a task's agents on reviewers' labels: retrain:TASK
DRIFT_CHECK_WORKFLOW = "DriftCheck"  # one drift check: drift-check:DATASET…
WATCH_WORKFLOW = "WatchPrefix"  # one look at an S3 prefix for new object versions
DEFAULT_TASK_QUEUE = "labeling"


def label_workflow_id(dataset: str, job: str) -> str:
    return f"label:{dataset}:{job}"


def review_workflow_id(dataset: str, item_id: str) -> str:
    return f"review:{dataset}:{item_id}"


def frontier_workflow_id(dataset: str) -> str:
    return f"frontier:{dataset}"


def verify_workflow_id(dataset: str, run: str) -> str:
    return f"verify:{dataset}:{run}"


def retrain_workflow_id(task: str) -> str:
    return f"retrain:{task}"


def drift_schedule_id(dataset: str) -> str:
    """The Temporal Schedule that runs a dataset's drift checks."""
    return f"drift:{dataset}"


def drift_check_id(dataset: str) -> str:
    """A drift check's workflow id (a schedule appends the time it ran)."""
    return f"drift-check:{dataset}"


def watch_schedule_id(dataset: str) -> str:
    """The Temporal Schedule that watches an S3 prefix for a dataset's new data."""
    return f"watch:{dataset}"


def watch_job_id(dataset: str, bucket: str, key: str, version_id: str) -> str:
    """The one LabelDataset job of an object version: the same on every watcher and run."""
    digest = hashlib.sha256(f"{bucket}/{key}@{version_id}".encode()).hexdigest()[:16]
    return label_workflow_id(dataset, f"w{digest}")


def dataset_workflow_id(dataset: str) -> str:
    return f"dataset:{dataset}"


def parse_review_workflow_id(workflow_id: str) -> tuple[str, str] | None:
    """(dataset, item id) of a ReviewItem's workflow id, or None for any other id."""
    kind, _, rest = workflow_id.partition(":")
    dataset, sep, item_id = rest.partition(":")
    if kind != "review" or not sep or not dataset or not item_id:
        return None
    return dataset, item_id


# --- search attributes (all Keyword), registered by `labelfabric up` --------------------------
# `Dataset="reviews"` is every workflow of that dataset (the `Dataset` workflow among them);
# `WorkflowType="LabelDataset" AND Dataset="reviews"` its jobs. (The released `LabelDataset`
# read like "LabelDataset workflows of", yet answered with reviews too.)
SA_DATASET = "Dataset"  # every workflow of a dataset (its jobs, reviews, Dataset, frontier, ...)
SA_JOB = "Job"  # a job's workflow id, on the job and on the reviews it opened
SA_REVIEW_STATE = "ReviewState"  # a ReviewItem's state, below
# Released names, replaced by the two above. Written beside them for one release, where they
# were written before (`LabelDataset` on jobs and reviews, `LabelJob` on jobs), so saved
# queries keep answering; read by nothing of ours but items opened before the new names
# (`dataset_clause`). The release after drops them (README: "Search attributes").
SA_LABEL_DATASET = "LabelDataset"
SA_LABEL_JOB = "LabelJob"
SEARCH_ATTRIBUTES = {
    SA_DATASET: "Keyword",
    SA_JOB: "Keyword",
    SA_REVIEW_STATE: "Keyword",
    SA_LABEL_DATASET: "Keyword",
    SA_LABEL_JOB: "Keyword",
}


def dataset_clause(dataset: str) -> str:
    """A visibility-query clause for one dataset's workflows; during the migration release
    also those that carry only the released name (a review opened before the upgrade)."""
    quoted = dataset.replace("\\", "\\\\").replace('"', '\\"')
    return f'({SA_DATASET} = "{quoted}" OR {SA_LABEL_DATASET} = "{quoted}")'


# A job's memo key: its `JobSummary` (phase, counts, snapshot), upserted by the workflow.
JOB_SUMMARY_MEMO = "summary"

# --- review states (the ReviewState search attribute) -----------------------------------------
AWAITING = "awaiting"
ESCALATED = "escalated"
SUPERSEDED = "superseded"  # a re-score auto-accepted the item while it waited for people
OPEN_REVIEW_STATES = (AWAITING, ESCALATED)
OPEN_REVIEWS_QUERY = (
    f'WorkflowType = "{REVIEW_ITEM_WORKFLOW}" AND '
    f'{SA_REVIEW_STATE} IN ("{AWAITING}", "{ESCALATED}")'
)

# --- error types: ApplicationError.type, what a caller can match on ---------------------------
# Deterministic: retried by no policy, whoever raises them (workflows/retry.py).
BAD_INPUT = "BadInput"  # a workflow or activity input that does not decode or validate
BAD_SOURCE = "BadSource"
SOURCE_NOT_FOUND = "SourceNotFound"
SOURCE_FORBIDDEN = "SourceForbidden"  # outside LABELFABRIC_SOURCE_ROOTS, or not a regular file
SOURCE_UNREADABLE = "SourceUnreadable"  # permissions
JOB_EXISTS = "JobExists"
CATALOG_REFUSED = "CatalogRefused"  # PostgreSQL refused a write or a query (class 22/23/42)
STORAGE_REFUSED = "StorageRefused"  # S3 answered 4xx
BAD_DATA = "BadData"  # a parser or encoder refused what it was given
INTERNAL = "InternalError"  # a bug: the same input would fail the same way again
# Raised non-retryable where they are known.
BAD_CONFIG = "BadConfig"  # a task or roster file that does not load
UNKNOWN_TASK = "UnknownTask"
POLICY_ERROR = "PolicyError"  # a policy that does not load, or a rule that cannot evaluate
POLICY_CHANGED = "PolicyChanged"  # a pinned policy file whose bytes changed since the start
S3_VERSIONING_OFF = "S3VersioningOff"
S3_ERROR = "S3Error"
S3_UNREACHABLE = "S3Unreachable"
# A ReviewItem's own refusals and failures.
REVIEW_REFUSED = "ReviewRefused"  # a submission the rules refuse (not on the roster, ...)
REVIEW_NOT_RECORDED = "ReviewNotRecorded"
REVIEW_ERRORED = "ReviewErrored"
