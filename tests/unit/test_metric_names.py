"""Metric names, without a server: every metric the product defines is named and labelled by
one convention, OpenTelemetry's Prometheus exporter shows each under the name the catalog
says (the name the README, the Grafana dashboard and the tests use), and the dashboard asks
only for metrics that exist."""

from __future__ import annotations

import json
import re

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from activities import metrics as m
from worker.settings import PROJECT_ROOT

# Never a label: unbounded values (an item, job or workflow id, a note, a text).
UNBOUNDED = {"item", "item_id", "job", "job_id", "workflow_id", "run_id", "note", "text"}
LOW_CARDINALITY = {
    "dataset", "policy", "outcome", "agent", "result", "reviewer", "accepted", "correct",
    "state", "gate", "verdict", "action", "metric", "activity", "error_type", "retryable",
    "command",
}  # fmt: skip
DASHBOARD = PROJECT_ROOT / "infra" / "grafana" / "labelfabric.json"
# The Temporal SDK's metrics the dashboard reads (bridged by worker/metrics.py).
SDK_METRICS = {
    "temporal_activity_execution_latency_seconds",
    "temporal_workflow_task_schedule_to_start_latency_seconds",
    "temporal_activity_execution_failed_total",
    "temporal_workflow_failed_total",
    "temporal_worker_task_slots_available",
    "temporal_sticky_cache_size",
}


def test_names_follow_one_convention() -> None:
    names = [s.name for s in m.CATALOG]
    assert len(names) == len(set(names))
    for spec in m.CATALOG:
        assert re.fullmatch(r"labelfabric\.[a-z][a-z_]*[a-z]", spec.name), spec.name
        assert spec.kind in ("counter", "histogram", "gauge", "observable_gauge")
        assert spec.labels and set(spec.labels) <= LOW_CARDINALITY, spec
        assert not set(spec.labels) & UNBOUNDED
        assert spec.help.endswith(".")
        assert not spec.name.endswith(("_total", "_seconds", "_count"))  # the exporter adds them
        if spec.kind == "histogram":
            assert spec.unit == "s"  # every histogram is a duration, in seconds
    assert m.ITEMS_LABELED.prometheus == "labelfabric_items_labeled_total"
    assert m.AGENT_LATENCY.prometheus == "labelfabric_agent_latency_seconds"
    assert m.REVIEWER_GOLD_ACCURACY.prometheus == "labelfabric_reviewer_gold_accuracy"
    assert set(m.CATALOG_GAUGES) == {s for s in m.CATALOG if s.kind == "observable_gauge"}


def test_the_exporter_shows_each_metric_under_its_catalog_name() -> None:
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    meter = provider.get_meter("test")
    for spec in m.CATALOG:
        labels = {k: "x" for k in spec.labels}
        if spec.kind == "observable_gauge":

            def observe(_: CallbackOptions, labels: dict[str, str] = labels) -> list[Observation]:
                return [Observation(1.0, labels)]

            meter.create_observable_gauge(spec.name, callbacks=[observe], unit=spec.unit)
            continue
        made = m.instrument(spec, meter)
        record = {"counter": "add", "histogram": "record", "gauge": "set"}[spec.kind]
        getattr(made, record)(1, labels)
    body = generate_latest(registry).decode()
    shown = {line.split("{")[0] for line in body.splitlines() if not line.startswith("#")}
    for spec in m.CATALOG:
        name = spec.prometheus + ("_count" if spec.kind == "histogram" else "")
        assert name in shown, (spec.name, name, sorted(shown))
        line = next(x for x in body.splitlines() if x.startswith(name + "{"))
        for label in spec.labels:
            assert f'{label}="x"' in line
    provider.shutdown()


def test_refused_reviews_never_name_their_sender() -> None:
    # A refused submission's reviewer id is whatever its sender wrote.
    assert m.REFUSED_REVIEWER == "(refused)"
    assert "reviewer" in m.REVIEWS_RECORDED.labels


def test_the_grafana_dashboard_reads_only_metrics_that_exist() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "labelfabric" and dash["__inputs"][0]["pluginId"] == "prometheus"
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    ours = {s.prometheus for s in m.CATALOG}
    histograms = {s.prometheus for s in m.CATALOG if s.kind == "histogram"}
    used: set[str] = set()
    for expr in exprs:
        for name in re.findall(r"\b(labelfabric_[a-z_]+|temporal_[a-z_]+)\b", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            name = base if base in histograms or base in SDK_METRICS else name
            assert name in ours | SDK_METRICS, (name, expr)
            used.add(name)
    # Every metric the product defines has a panel (the CLI's only via OTLP, if at all).
    assert ours - {m.CLI_COMMAND.prometheus} <= used, sorted(ours - used)
    titles = {p["title"] for p in dash["panels"]}
    for wanted in ("Review backlog", "Agent abstention rate", "Activity failures by error type"):
        assert wanted in titles
