"""Every type that crosses Temporal: frozen, kw_only dataclasses.

Payloads are stored in workflow history and shown in the Web UI, so they carry references
(dataset, job id, chunk ranges, policy version + sha256, S3 version ids), never item text,
settings or secrets. New fields get defaults; released fields are never renamed or retyped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio.common import SearchAttributeKey

OUTCOMES = ("auto_accept", "human_review", "quarantine", "reject")

# Custom search attributes (registered by the embedded stack): the Web UI's and the CLI's
# view of jobs and of the review queue.
LABEL_DATASET = SearchAttributeKey.for_keyword("LabelDataset")
LABEL_JOB = SearchAttributeKey.for_keyword("LabelJob")
REVIEW_STATE = SearchAttributeKey.for_keyword("ReviewState")


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
    # Carried across continue-as-new; never set by callers.
    resume: ResumeState | None = None


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
    on_timeout: str = "quarantine"


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


@dataclass(frozen=True, kw_only=True)
class ReviewSubmission:
    reviewer: str
    label: str
    note: str = ""


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
    count: int = 1
