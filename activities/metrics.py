"""What the product counts: every metric's name, kind, unit and labels, and the calls that
record them. OpenTelemetry's API only: in a process that exports nothing every call is a
no-op, and instruments made at import start recording once a process sets its
MeterProvider (`worker/metrics.py`: the worker, the review page, the CLI's long commands).

Labels are low-cardinality on purpose: a dataset, a policy or agent `id@version`, a
reviewer, an outcome, an error type; never an item, job or workflow id. Each activity
records after its transaction commits, and only what that commit wrote (a retried activity
that finds its rows already there records nothing again), so the counters agree with the
catalog's rows.

Catalog-derived state (the review backlog, gold accuracy of reviewers, policy and agent
versions, each dataset's newest version) is a gauge read at scrape time by the review page
(`worker/web/ops.py`), once for the whole fabric, rather than by every worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics

METER = "labelfabric"
# Prometheus suffixes OpenTelemetry's exporter adds for a unit ("{...}" units add none).
_UNIT_SUFFIX = {"s": "seconds", "By": "bytes"}
REFUSED_REVIEWER = "(refused)"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # OpenTelemetry's; Prometheus' is `prometheus`
    kind: str  # counter | histogram | gauge | observable_gauge
    unit: str
    labels: tuple[str, ...]
    help: str

    @property
    def prometheus(self) -> str:
        """The name a Prometheus scrape shows: dots become underscores, a unit becomes a
        suffix (`s`: `_seconds`; `1` and `{...}` none), a counter ends `_total`; a histogram
        adds `_bucket`, `_sum` and `_count` (OpenTelemetry's Prometheus exporter's rules)."""
        base = self.name.replace(".", "_")
        suffix = _UNIT_SUFFIX.get(self.unit, "")
        if suffix and not base.endswith(f"_{suffix}"):
            base = f"{base}_{suffix}"
        return f"{base}_total" if self.kind == "counter" else base


def _spec(name: str, kind: str, unit: str, labels: tuple[str, ...], help: str) -> MetricSpec:
    return MetricSpec(f"{METER}.{name}", kind, unit, labels, help)


# --- workers (activities) ----------------------------------------------------------------
ITEMS_LABELED = _spec(
    "items_labeled",
    "counter",
    "{item}",
    ("dataset", "policy", "outcome"),
    "Items decided by label_chunk, by routing outcome (auto_accept, human_review, ...).",
)
AGENT_VOTES = _spec(
    "agent_votes",
    "counter",
    "{vote}",
    ("agent", "result"),
    "Agent votes (result=vote) and abstentions (result=abstain, timeouts and errors too).",
)
AGENT_LATENCY = _spec(
    "agent_latency",
    "histogram",
    "s",
    ("agent",),
    "Seconds an agent took per item, one observation per chunk it voted on.",
)
REVIEWS_RECORDED = _spec(
    "reviews_recorded",
    "counter",
    "{review}",
    ("dataset", "reviewer", "accepted"),
    "Reviewer submissions recorded, accepted or refused: reviewer throughput.",
)
GOLD_CHECKS = _spec(
    "gold_checks",
    "counter",
    "{review}",
    ("reviewer", "correct"),
    "Accepted submissions on gold-check items, right (correct=true) or wrong.",
)
REVIEW_LATENCY = _spec(
    "review_latency",
    "histogram",
    "s",
    ("dataset", "state"),
    "Seconds from routing an item to people to closing its review (done or expired).",
)
GATE_VERDICTS = _spec(
    "gate_verdicts",
    "counter",
    "{snapshot}",
    ("dataset", "gate", "verdict"),
    "Quality gate verdicts on new dataset versions (pass | fail).",
)
DRIFT_CHECKS = _spec(
    "drift_checks",
    "counter",
    "{check}",
    ("dataset", "action"),
    "Drift checks, by the action the drift policy chose (none, alert, relabel, ...).",
)
DRIFT_VALUE = _spec(
    "drift_value",
    "gauge",
    "1",
    ("dataset", "metric"),
    "The last drift check's value of each detector metric (input.auc, prediction.psi, ...).",
)
ACTIVITY_FAILURES = _spec(
    "activity_failures",
    "counter",
    "{failure}",
    ("activity", "error_type", "retryable"),
    "Activity attempts that failed, by error type (ApplicationError.type or exception class).",
)
# --- the review page, read from the catalog at scrape time ------------------------------
REVIEW_BACKLOG = _spec(
    "review_backlog",
    "observable_gauge",
    "{review}",
    ("dataset", "state"),
    "Reviews not closed: state=waiting (queued in the frontier) or open (a ReviewItem runs).",
)
REVIEWER_GOLD_ACCURACY = _spec(
    "reviewer_gold_accuracy",
    "observable_gauge",
    "1",
    ("reviewer",),
    "Share of a reviewer's answered gold checks that were right (all time).",
)
REVIEWER_GOLD_ANSWERED = _spec(
    "reviewer_gold_answered",
    "observable_gauge",
    "{review}",
    ("reviewer",),
    "Gold checks a reviewer has answered (all time): the accuracy's sample size.",
)
DATASET_VERSION = _spec(
    "dataset_version",
    "observable_gauge",
    "{version}",
    ("dataset", "verdict"),
    "A dataset's newest version number, labelled with its gate verdict (pass | fail | none).",
)
POLICY_GOLD_ACCURACY = _spec(
    "policy_gold_accuracy",
    "observable_gauge",
    "1",
    ("dataset", "policy"),
    "Share of a policy version's auto-accepted items with a gold label whose label was right.",
)
AGENT_GOLD_ACCURACY = _spec(
    "agent_gold_accuracy",
    "observable_gauge",
    "1",
    ("dataset", "agent"),
    "Share of an agent version's votes on items with a gold label that were right.",
)
# --- the CLI's long commands ---------------------------------------------------------------
CLI_COMMAND = _spec(
    "cli_command_duration",
    "histogram",
    "s",
    ("command", "outcome"),
    "Seconds a long CLI command ran (job start --wait, eval, review bot), ok or error.",
)

CATALOG: tuple[MetricSpec, ...] = (
    ITEMS_LABELED,
    AGENT_VOTES,
    AGENT_LATENCY,
    REVIEWS_RECORDED,
    GOLD_CHECKS,
    REVIEW_LATENCY,
    GATE_VERDICTS,
    DRIFT_CHECKS,
    DRIFT_VALUE,
    ACTIVITY_FAILURES,
    REVIEW_BACKLOG,
    REVIEWER_GOLD_ACCURACY,
    REVIEWER_GOLD_ANSWERED,
    DATASET_VERSION,
    POLICY_GOLD_ACCURACY,
    AGENT_GOLD_ACCURACY,
    CLI_COMMAND,
)
# The review page's gauges, read from the catalog (worker/web/ops.py: CatalogGauges).
CATALOG_GAUGES = tuple(s for s in CATALOG if s.kind == "observable_gauge")


def instrument(spec: MetricSpec, meter: metrics.Meter | None = None) -> Any:
    """The synchronous instrument of `spec` (observable gauges are made with their callback
    by whoever reads them: `meter.create_observable_gauge(spec.name, ...)`)."""
    m = meter or metrics.get_meter(METER)
    makers: dict[str, Callable[..., Any]] = {
        "counter": m.create_counter,
        "histogram": m.create_histogram,
        "gauge": m.create_gauge,
    }
    return makers[spec.kind](spec.name, unit=spec.unit, description=spec.help)


_ITEMS = instrument(ITEMS_LABELED)
_VOTES = instrument(AGENT_VOTES)
_AGENT_LATENCY = instrument(AGENT_LATENCY)
_REVIEWS = instrument(REVIEWS_RECORDED)
_GOLD = instrument(GOLD_CHECKS)
_REVIEW_LATENCY = instrument(REVIEW_LATENCY)
_GATES = instrument(GATE_VERDICTS)
_DRIFT_CHECKS = instrument(DRIFT_CHECKS)
_DRIFT_VALUE = instrument(DRIFT_VALUE)
_FAILURES = instrument(ACTIVITY_FAILURES)
_CLI = instrument(CLI_COMMAND)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def items_labeled(dataset: str, policy: str, outcomes: Iterable[str]) -> None:
    for outcome, n in sorted(Counter(outcomes).items()):
        _ITEMS.add(n, {"dataset": dataset, "policy": policy, "outcome": outcome})


def agent_voted(agent: str, votes: int, abstained: int, seconds_per_item: float | None) -> None:
    """`agent` is `name@version`."""
    if votes - abstained:
        _VOTES.add(votes - abstained, {"agent": agent, "result": "vote"})
    if abstained:
        _VOTES.add(abstained, {"agent": agent, "result": "abstain"})
    if seconds_per_item is not None:
        _AGENT_LATENCY.record(seconds_per_item, {"agent": agent})


def review_recorded(dataset: str, reviewer: str, accepted: bool, correct: bool | None) -> None:
    """A refused submission counts under reviewer `(refused)`: its reviewer id is whatever
    the sender wrote (anyone who reaches Temporal can signal), so it never becomes a label."""
    who = reviewer if accepted else REFUSED_REVIEWER
    _REVIEWS.add(1, {"dataset": dataset, "reviewer": who, "accepted": _flag(accepted)})
    if correct is not None:
        _GOLD.add(1, {"reviewer": reviewer, "correct": _flag(correct)})


def review_closed(dataset: str, state: str, seconds: Iterable[float]) -> None:
    for s in seconds:
        _REVIEW_LATENCY.record(max(0.0, s), {"dataset": dataset, "state": state})


def gate_verdict(dataset: str, judged: Mapping[str, Any]) -> None:
    gate = f"{judged.get('policy', '?')}@{judged.get('version', '?')}"
    verdict = str(judged.get("outcome", "?"))
    _GATES.add(1, {"dataset": dataset, "gate": gate, "verdict": verdict})


def drift_checked(dataset: str, action: str, values: Mapping[str, float | None]) -> None:
    _DRIFT_CHECKS.add(1, {"dataset": dataset, "action": action})
    for metric, value in sorted(values.items()):
        if isinstance(value, int | float):
            _DRIFT_VALUE.set(float(value), {"dataset": dataset, "metric": metric})


def activity_failed(activity: str, error_type: str, retryable: bool) -> None:
    _FAILURES.add(
        1, {"activity": activity, "error_type": error_type, "retryable": _flag(retryable)}
    )


def cli_command(command: str, outcome: str, seconds: float) -> None:
    _CLI.record(seconds, {"command": command, "outcome": outcome})
