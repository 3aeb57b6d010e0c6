"""Every type that crosses Temporal: frozen, kw_only dataclasses.

Payloads are stored in workflow history and shown in the Web UI, so they carry references
(dataset, job id, chunk ranges, policy version + sha256, S3 version ids), never item text,
settings or secrets. New fields get defaults; released fields are never renamed or retyped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.converter import DataConverter, DefaultPayloadConverter
from temporalio.exceptions import ApplicationError

from activities import ids

# Custom search attributes (registered by the embedded stack): the Web UI's and the CLI's
# view of a dataset's workflows, its jobs and the review queue.
DATASET = SearchAttributeKey.for_keyword(ids.SA_DATASET)
JOB = SearchAttributeKey.for_keyword(ids.SA_JOB)
REVIEW_STATE = SearchAttributeKey.for_keyword(ids.SA_REVIEW_STATE)
LABEL_DATASET = SearchAttributeKey.for_keyword(ids.SA_LABEL_DATASET)  # released name, see ids
LABEL_JOB = SearchAttributeKey.for_keyword(ids.SA_LABEL_JOB)  # released name, see ids


def dataset_attributes(
    dataset: str, *, job: str | None = None, review_state: str | None = None
) -> TypedSearchAttributes:
    """What a workflow of `dataset` starts with: `Dataset`, and `Job` / `ReviewState` where
    they apply. A job (`job` without `review_state`) also gets the released `LabelDataset`
    and `LabelJob`, a review the released `LabelDataset`, as before, for one release."""
    pairs = [SearchAttributePair(DATASET, dataset)]
    if job is not None:
        pairs.append(SearchAttributePair(JOB, job))
    if review_state is not None:
        pairs.append(SearchAttributePair(REVIEW_STATE, review_state))
    if job is not None:  # where the released names were written
        pairs.append(SearchAttributePair(LABEL_DATASET, dataset))
        if review_state is None:
            pairs.append(SearchAttributePair(LABEL_JOB, job))
    return TypedSearchAttributes(pairs)


# A dataset name is part of workflow ids (`label:{dataset}:{job}`), S3 keys and file names:
# letters, digits, `_`, `-` and single dots, starting with a letter or digit, 1-64 long.
DATASET_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,63}")
DATASET_NAME_RULE = (
    "1-64 characters: letters, digits, '_', '-' and single '.', starting with a letter or digit"
)


def dataset_name_problem(name: object) -> str | None:
    """Why `name` cannot name a dataset, or None when it can."""
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        return f"dataset name {str(name)[:80]!r} is not valid: {DATASET_NAME_RULE}"
    return None


@dataclass(frozen=True, kw_only=True)
class LabelDatasetInput:
    dataset: str
    source: str  # a path on the workers' file system or s3://bucket/key
    task: str
    policy: str = "route_default"  # "id" (newest version at job start) or "id@version"
    agents: list[str] | None = None  # None: every agent the task configures
    chunk_size: int = 500
    parallelism: int = 4  # label_chunk activities in flight at once
    chunk_heartbeat_timeout_s: int = 30
    # A run continues as new after this many chunks, so no history grows with the dataset.
    max_chunks_per_run: int = 400
    # Why this job runs, when not new data: e.g. "drift:<check id>" for a relabel job.
    reason: str = ""
    # Carried across continue-as-new; never set by callers.
    resume: ResumeState | None = None

    def __post_init__(self) -> None:
        # Runs where the input is built: in a caller's process, and when the worker decodes
        # a raw `temporal workflow start` (a ValueError there fails the workflow as BadInput).
        problem = dataset_name_problem(self.dataset)
        if problem:
            raise ValueError(problem)
        for name in ("source", "task", "policy"):
            value = getattr(self, name)
            if not value or len(value) > 4096 or "\x00" in value:
                raise ValueError(f"field {name!r} must be a non-empty string without NUL")
        limits = {"chunk_size": 10_000, "parallelism": 64, "max_chunks_per_run": 2_000}
        for name, most in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise ValueError(f"field {name!r} must be an integer from 1 to {most}")
        if not 1 <= self.chunk_heartbeat_timeout_s <= 3600:
            raise ValueError("field 'chunk_heartbeat_timeout_s' must be from 1 to 3600")
        if len(self.reason) > 300 or any(ord(c) < 32 for c in self.reason):
            raise ValueError("field 'reason' must be at most 300 printable characters")


@dataclass(frozen=True, kw_only=True)
class OutcomeCounts:
    auto_accept: int = 0
    human_review: int = 0
    quarantine: int = 0
    reject: int = 0

    def __add__(self, other: OutcomeCounts) -> OutcomeCounts:
        return OutcomeCounts(
            auto_accept=self.auto_accept + other.auto_accept,
            human_review=self.human_review + other.human_review,
            quarantine=self.quarantine + other.quarantine,
            reject=self.reject + other.reject,
        )

    @property
    def total(self) -> int:
        return self.auto_accept + self.human_review + self.quarantine + self.reject


@dataclass(frozen=True, kw_only=True)
class PolicyRefPayload:
    id: str
    version: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class PrepareJobInput:
    job_id: str
    dataset: str
    source: str
    task: str
    policy: str
    agents: list[str] | None = None
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class JobPlan:
    """What a job resolved at its start and keeps to its end."""

    policy: PolicyRefPayload
    agents: list[str]  # resolved agent names, in task order


@dataclass(frozen=True, kw_only=True)
class IngestInput:
    job_id: str
    dataset: str
    source: str
    task: str


@dataclass(frozen=True, kw_only=True)
class IngestResult:
    items: int  # distinct items this job labels
    duplicates: int  # records whose content repeated an earlier record of the source
    quarantined: int  # records refused, each kept with line and reason


@dataclass(frozen=True, kw_only=True)
class ChunkInput:
    job_id: str
    dataset: str
    task: str
    agents: list[str]
    policy: PolicyRefPayload
    chunk: int
    start: int  # ordinals [start, end) of job_item
    end: int


@dataclass(frozen=True, kw_only=True)
class ChunkResult:
    chunk: int
    counts: OutcomeCounts


@dataclass(frozen=True, kw_only=True)
class SnapshotInput:
    job_id: str
    dataset: str


@dataclass(frozen=True, kw_only=True)
class SnapshotRef:
    dataset: str
    version: int
    s3_key: str
    s3_version_id: str
    manifest_version_id: str
    item_count: int
    content_sha256: str
    training_ready: bool | None = None  # the quality gate's verdict; None = no gate


@dataclass(frozen=True, kw_only=True)
class FinishJobInput:
    job_id: str
    status: str


@dataclass(frozen=True, kw_only=True)
class ResumeState:
    plan: JobPlan
    ingest: IngestResult
    next_chunk: int
    counts: OutcomeCounts = field(default_factory=OutcomeCounts)


@dataclass(frozen=True, kw_only=True)
class Progress:
    phase: str  # preparing | ingesting | labeling | snapshotting | done
    items: int = 0
    quarantined: int = 0
    duplicates: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    counts: OutcomeCounts = field(default_factory=OutcomeCounts)


@dataclass(frozen=True, kw_only=True)
class JobSummary:
    """A job's memo (`summary`): what `temporal workflow describe` and the Web UI show of it
    without a query. Upserted when the job starts, when its labeling (re)starts and when it
    ends, never per chunk, so it costs a few history events."""

    dataset: str
    task: str
    policy: str  # as asked ("id" or "id@version"); "id@version" once resolved
    phase: str  # preparing | labeling | done | failed
    reason: str = ""
    items: int = 0
    quarantined: int = 0
    duplicates: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    counts: OutcomeCounts = field(default_factory=OutcomeCounts)
    snapshot: str = ""  # "dataset@version" once written


@dataclass(frozen=True, kw_only=True)
class LabelDatasetResult:
    job_id: str
    dataset: str
    items: int
    duplicates: int
    quarantined: int
    counts: OutcomeCounts
    policy: PolicyRefPayload
    snapshot: SnapshotRef


# --- human review --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReviewRulesPayload:
    """From the routing policy version that sent the item to people."""

    reviewers_needed: int = 1
    timeout_s: int = 7 * 24 * 3600
    escalate_to: str = ""
    escalation_timeout_s: int = 24 * 3600
    on_timeout: str = ids.QUARANTINE


@dataclass(frozen=True, kw_only=True)
class ReviewerGrant:
    """A roster entry for the item's task, resolved when the item is routed."""

    id: str
    cleared: bool  # clearance covers the item's sensitivity
    groups: list[str]


@dataclass(frozen=True, kw_only=True)
class VoteView:
    agent: str
    version: str
    label: str | None
    confidence: float
    rationale: str


@dataclass(frozen=True, kw_only=True)
class ReviewItemInput:
    dataset: str
    item_id: str
    job_id: str
    task: str
    labels: list[str]
    sensitivity: str
    policy: PolicyRefPayload
    rule_id: str
    rules: ReviewRulesPayload
    reviewers: list[ReviewerGrant]
    # The agents' votes and rationale (never the item text), so a reviewer sees them
    # through the `state` query without an activity per item.
    votes: list[VoteView] = field(default_factory=list)
    gold_label: str | None = None
    # A run continues as new past this many history events (carrying its reviews).
    history_limit: int = 2_000
    # Carried across continue-as-new; never set by callers.
    carry: ReviewCarry | None = None
    # Key id -> Ed25519 public key (base64) a submission's claim must be signed with. None
    # (items opened before signed identity): no claim is asked for, as released.
    identity: dict[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class ReviewCarry:
    """What a ReviewItem run hands the next when its history grew long."""

    state: str
    reviews: list[ReviewRecord]
    refused_unkept: int  # refused submissions counted but not kept (over the bound)
    deadline: str  # ISO time the current wait (awaiting or escalated) ends


@dataclass(frozen=True, kw_only=True)
class ReviewSubmission:
    reviewer: str
    label: str
    note: str = ""
    # A signed reviewer claim (worker/identity.py): required when the item was opened with
    # `identity` keys. Never written to the catalog.
    token: str = ""


@dataclass(frozen=True, kw_only=True)
class ReviewReceipt:
    accepted: bool
    state: str  # the item's review state after this submission
    label: str | None = None  # set once the item is decided
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ReviewRecord:
    reviewer: str
    label: str
    note: str
    via: str
    accepted: bool
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ReviewStateView:
    """What the `state` query returns: enough to decide, no item text."""

    dataset: str
    item_id: str
    job_id: str
    state: str  # awaiting | escalated | done | expired
    rule_id: str
    policy: PolicyRefPayload
    labels: list[str]
    votes: list[VoteView]
    reviews: list[ReviewRecord]
    label: str | None = None
    refused_unkept: int = 0  # refused submissions beyond the ones kept in `reviews`


@dataclass(frozen=True, kw_only=True)
class OpenReviewsInput:
    job_id: str
    dataset: str
    task: str
    policy: PolicyRefPayload
    chunk: int
    start: int
    end: int


@dataclass(frozen=True, kw_only=True)
class RecordReviewInput:
    key: str
    workflow_id: str
    dataset: str
    item_id: str
    job_id: str
    submission: ReviewSubmission
    via: str
    accepted: bool
    reason: str = ""
    gold_label: str | None = None
    # For the roster check when the review arrives; empty in inputs from before it existed.
    task: str = ""
    sensitivity: str = ""
    # The item asks for signed claims: the claim is checked again against the ring as it is
    # now (a rotated-out key no longer counts). Claims are never written to the catalog.
    signed: bool = False


@dataclass(frozen=True, kw_only=True)
class RecordReviewResult:
    """Whether the catalog took the submission as accepted. A reviewer removed from the
    roster (or whose clearance dropped) since the item opened is refused here: the roster
    is read when the review arrives, not copied once when the item opened."""

    accepted: bool
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class CloseReviewInput:
    workflow_id: str
    dataset: str
    item_id: str
    job_id: str
    state: str  # done | expired
    label: str | None = None
    reviewers: list[str] = field(default_factory=list)
    outcome: str | None = None


@dataclass(frozen=True, kw_only=True)
class DatasetInput:
    name: str
    debounce_s: float = 0.5
    # Continue as new well before Temporal's per-run limits (10,000 signals, history size).
    max_batches_per_run: int = 200
    max_signals_per_run: int = 2000
    pending: int = 0  # carried across continue-as-new


@dataclass(frozen=True, kw_only=True)
class LabelsChanged:
    source: str  # the workflow that changed labels
    count: int = 1  # ignored: each signal is one change (a caller's count could stall snapshots)


@dataclass(frozen=True, kw_only=True)
class FrontierInput:
    """The review frontier of one dataset (`frontier:{dataset}`)."""

    dataset: str
    # Continue as new well before Temporal's per-run limits.
    max_top_ups_per_run: int = 500
    pending: bool = False  # carried across continue-as-new: a wake-up not yet acted on


@dataclass(frozen=True, kw_only=True)
class VerifyInput:
    """Look for likely wrong current labels of a dataset and send them to review."""

    dataset: str
    folds: int = 5

    def __post_init__(self) -> None:
        if not 2 <= self.folds <= 20:
            raise ValueError(f"folds must be between 2 and 20, got {self.folds}")


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    dataset: str
    checked: int = 0  # current labels read
    flagged: int = 0  # found likely wrong by this run
    new: int = 0  # of those, label versions not flagged before
    queued: int = 0  # reviews queued in the frontier for them
    note: str = ""  # why nothing was judged, when so


@dataclass(frozen=True, kw_only=True)
class RetrainInput:
    """The Retrain workflow of one task (`retrain:{task}`)."""

    task: str
    every: int = 0  # retrain after this many new human labels (0: only when asked)
    pending: int = 0  # carried across continue-as-new: labels added since the last round
    requested: bool = False  # carried: a request not yet served
    rounds: int = 0  # carried: rounds run before this run
    max_rounds_per_run: int = 100


@dataclass(frozen=True, kw_only=True)
class RetrainRequest:
    task: str
    reason: str  # what started the round: "asked" or "N new human labels"


@dataclass(frozen=True, kw_only=True)
class AgentOutcome:
    """One trainable agent after a round: the candidate version and the gate's verdict."""

    agent: str
    version: str
    state: str  # promoted | refused | unchanged (the same version as in use)
    rule: str  # the gate rule that decided ("" when unchanged)
    candidate_accuracy: float
    incumbent_accuracy: float
    items: int  # held-out human labels scored


@dataclass(frozen=True, kw_only=True)
class RescoreInput:
    """Re-score a task's backlog with its newest promoted agents and the active policy."""

    task: str
    key: str  # the round that promoted: re-score job ids are made from it (once per round)
    reason: str


@dataclass(frozen=True, kw_only=True)
class RescoreResult:
    task: str
    datasets: int = 0
    items: int = 0  # backlog items re-scored
    accepted: int = 0  # now auto-accepted: labeled by the new agents
    superseded: int = 0  # of those, open ReviewItem workflows closed as superseded


@dataclass(frozen=True, kw_only=True)
class RetrainResult:
    task: str
    examples: int = 0  # human labels trained on
    agents: list[AgentOutcome] = field(default_factory=list)
    note: str = ""  # why nothing was trained, when so
    rescore: RescoreResult | None = None  # after a promotion


@dataclass(frozen=True, kw_only=True)
class RetrainStatus:
    """What the `status` query of a Retrain workflow says."""

    task: str
    rounds: int  # rounds finished by this workflow (across continue-as-new)
    pending: int  # human labels added since the last round
    every: int
    running: bool = False  # a round is under way
    last: RetrainResult | None = None


@dataclass(frozen=True, kw_only=True)
class DriftCheckInput:
    """One drift check of a dataset: its recent window against the reference."""

    dataset: str
    policy: str = "drift_default"  # a kind: drift policy, "id" or "id@version"
    reference_version: int | None = None  # None: the last training-ready one before the window
    window: int = 1000  # at most this many items of the newest job are compared
    sample: int = 20  # items a `sample_review` action sends to people

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 100_000 or not 1 <= self.sample <= 1_000:
            raise ValueError("window must be 1..100000 and sample 1..1000")


@dataclass(frozen=True, kw_only=True)
class DriftCheckResult:
    check_id: str
    dataset: str
    reference: str
    window_items: int
    metrics: dict[str, float | None]
    policy: str  # id@version
    rule: str
    action: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class WatchInput:
    """Look at s3://bucket/prefix for object versions no job has labeled yet."""

    bucket: str
    prefix: str
    dataset: str
    task: str
    policy: str = "route_default"
    drift_policy: str = "drift_default"  # the check that follows each new job
    max_per_run: int = 100


@dataclass(frozen=True, kw_only=True)
class NewObject:
    key: str
    version_id: str
    job_id: str  # ids.watch_job_id: the same on every watcher and run


@dataclass(frozen=True, kw_only=True)
class WatchResult:
    seen: int = 0  # new object versions found
    labeled: int = 0  # jobs this run started and saw complete
    skipped: int = 0  # already started elsewhere (another watcher, an earlier run)
    failed: int = 0  # jobs that failed (each says why in its own workflow and job row)


@dataclass(frozen=True, kw_only=True)
class TopUpInput:
    dataset: str


@dataclass(frozen=True, kw_only=True)
class FrontierStatus:
    """What a top-up left: open review workflows, items still waiting, and the limit."""

    dataset: str
    open: int = 0
    queued: int = 0
    opened: int = 0  # by this top-up
    open_limit: int = 0


# --- decoding ------------------------------------------------------------------------------


def _describe(err: BaseException) -> str:
    """The causes of a decode failure, innermost last, without the converter's framing."""
    parts: list[str] = []
    seen: BaseException | None = err
    while seen is not None and len(parts) < 6:
        text = str(seen)
        if text and not text.startswith("Payload at index") and text != "Failed decoding":
            parts.append(text.replace("<class '", "").replace("'>", ""))
        seen = seen.__cause__ or seen.__context__
    return ": ".join(parts)[:500] or type(err).__name__


class CheckedPayloadConverter(DefaultPayloadConverter):
    """The default converter, but an input that does not decode is a `BadInput` failure.

    The SDK turns a decode error of a workflow's input into a workflow *task* failure, which
    Temporal retries forever: a raw `temporal workflow start` missing a field would wedge the
    workflow. Raised as a non-retryable ApplicationError instead, it fails the workflow once,
    naming the field. (A signal that does not decode is still dropped by the SDK, and an
    update is rejected: neither can fail a workflow from outside.)
    """

    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
        try:
            return super().from_payloads(payloads, type_hints)
        except Exception as err:
            raise ApplicationError(
                f"input does not decode: {_describe(err)}", type=ids.BAD_INPUT, non_retryable=True
            ) from None


DATA_CONVERTER = DataConverter(payload_converter_class=CheckedPayloadConverter)
