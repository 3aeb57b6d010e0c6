"""Metrics export of one process: OpenTelemetry's MeterProvider, a Prometheus scrape
endpoint, OTLP when configured, and the Temporal SDK's own metrics in the same place.

One provider per process, set once (`start` is idempotent: a second call, e.g. the test
session's in-process worker beside its clients, gets the first's state). What is counted
and its names: `activities/metrics.py`.

- A worker (`labelfabric worker`, `up --worker`) serves Prometheus on
  `LABELFABRIC_METRICS_PORT` (default 7247, on the settings' host; 0 = none). A port
  already taken (a second worker on the machine) is logged and the worker runs on without
  an endpoint: give each worker its own port.
- The review page serves the same registry at its own `/metrics` (worker/web/ops.py).
- The CLI's long commands (`command`) export only when asked: OTLP, or a Prometheus port
  in `LABELFABRIC_CLI_METRICS_PORT`.
- OTLP (`OTEL_EXPORTER_OTLP_ENDPOINT` or `..._METRICS_ENDPOINT`, with the `otlp` extra)
  pushes every 15 s (`OTEL_METRIC_EXPORT_INTERVAL`, ms), beside Prometheus.

The Temporal SDK's metrics (workflow and activity task latencies, polls, failures, the
sticky cache) come from a Temporal `Runtime` with a `MetricBuffer`, drained every second
into OpenTelemetry instruments of the same names, so one endpoint (and one OTLP stream)
carries both. Every client `worker.temporal_client.connect` makes in a process that
started metrics uses that runtime (`temporal_runtime`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from temporalio.runtime import Runtime

    from worker.settings import Settings

log = logging.getLogger("labelfabric.metrics")

# Seconds: agent time per item (ms) up to a review's days; the SDK's latencies in between.
SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0,
)  # fmt: skip
DRAIN_S = 1.0
CLI_SERVICE = "labelfabric-cli"
BUFFER_SIZE = 100_000


@dataclass
class Exporting:
    """What `start` set up in this process."""

    service: str
    provider: Any  # opentelemetry.sdk.metrics.MeterProvider
    port: int | None  # the Prometheus port served, None: none
    bridge: TemporalBridge | None
    push: Any = None  # the OTLP reader, when configured


_LOCK = threading.Lock()
_CURRENT: Exporting | None = None


def current() -> Exporting | None:
    return _CURRENT


def temporal_runtime() -> Runtime | None:
    """The Temporal runtime whose metrics this process exports, or None (the default)."""
    state = _CURRENT
    return state.bridge.runtime if state is not None and state.bridge is not None else None


def otlp_configured() -> bool:
    env = os.environ
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    )


def start(
    service: str, *, prometheus: bool, host: str = "127.0.0.1", port: int = 0
) -> Exporting | None:
    """Export this process's metrics: into prometheus_client's registry when `prometheus`
    (served over HTTP on host:port when port > 0), over OTLP when configured. None when
    neither is wanted (nothing is set up: every instrument stays a no-op)."""
    global _CURRENT
    with _LOCK:
        if _CURRENT is not None:
            return _CURRENT
        readers, push = _readers(prometheus)
        if not readers:
            return None
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import Histogram, MeterProvider
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
        from opentelemetry.sdk.resources import Resource

        seconds = View(
            instrument_type=Histogram,
            instrument_unit="s",
            aggregation=ExplicitBucketHistogramAggregation(SECONDS_BUCKETS),
        )
        provider = MeterProvider(
            metric_readers=readers,
            resource=Resource.create({"service.name": service}),
            views=[seconds],
        )
        metrics.set_meter_provider(provider)
        served = _serve(host, port) if prometheus and port > 0 else None
        bridge = TemporalBridge(provider.get_meter("temporalio"))
        _CURRENT = Exporting(
            service=service, provider=provider, port=served, bridge=bridge, push=push
        )
        return _CURRENT


def _readers(prometheus: bool) -> tuple[list[Any], Any]:
    """The readers to set up, and the OTLP one among them (or None)."""
    readers: list[Any] = []
    push = None
    if prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
    if otlp_configured():
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the 'otlp' extra is not installed")
        else:
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            push = PeriodicExportingMetricReader(OTLPMetricExporter())
            readers.append(push)
    return readers, push


def _serve(host: str, port: int) -> int | None:
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host)
    except OSError as err:
        log.warning(
            "metrics: port %s on %s is not free (%s): this process serves no metrics; "
            "give each worker its own LABELFABRIC_METRICS_PORT",
            port,
            host,
            err.strerror or err,
        )
        return None
    log.info("metrics: Prometheus endpoint http://%s:%s/metrics", host, port)
    return port


class TemporalBridge:
    """The Temporal SDK's metrics, from its buffer into OpenTelemetry instruments."""

    def __init__(self, meter: Any) -> None:
        from temporalio.runtime import (
            MetricBuffer,
            MetricBufferDurationFormat,
            Runtime,
            TelemetryConfig,
        )

        self.meter = meter
        self.buffer = MetricBuffer(BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
        self.runtime = Runtime(telemetry=TelemetryConfig(metrics=self.buffer))
        self._instruments: dict[str, Any] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, name="temporal-metrics", daemon=True).start()

    def drain(self) -> int:
        """Move what the SDK buffered into the instruments; returns how many updates."""
        from temporalio.runtime import (
            BUFFERED_METRIC_KIND_COUNTER,
            BUFFERED_METRIC_KIND_HISTOGRAM,
        )

        with self._lock:
            updates = self.buffer.retrieve_updates()
            for u in updates:
                m = u.metric
                inst = self._instruments.get(m.name)
                if inst is None:
                    make = (
                        self.meter.create_counter
                        if m.kind == BUFFERED_METRIC_KIND_COUNTER
                        else self.meter.create_histogram
                        if m.kind == BUFFERED_METRIC_KIND_HISTOGRAM
                        else self.meter.create_gauge
                    )
                    inst = make(m.name, unit=_unit(m.unit), description=m.description or "")
                    self._instruments[m.name] = inst
                attrs = dict(u.attributes)
                if m.kind == BUFFERED_METRIC_KIND_COUNTER:
                    inst.add(u.value, attrs)
                elif m.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
                    inst.record(u.value, attrs)
                else:
                    inst.set(u.value, attrs)
            return len(updates)

    def _pump(self) -> None:
        while True:
            time.sleep(DRAIN_S)
            try:
                self.drain()
            except Exception:  # one bad update must not stop the SDK's metrics for good
                log.exception("metrics: draining the Temporal SDK's buffer failed")


def _unit(unit: str | None) -> str:
    # Durations come in seconds (MetricBufferDurationFormat.SECONDS), whatever the SDK names.
    return {"duration": "s", "ms": "s", "milliseconds": "s", "seconds": "s"}.get(
        unit or "", unit or ""
    )


@contextmanager
def command(settings: Settings, name: str) -> Iterator[None]:
    """Around a long CLI command: export when asked (OTLP, or `cli_metrics_port`), record
    the command's duration, and flush before the process ends. Nothing when not asked."""
    port = settings.cli_metrics_port
    state = _CURRENT
    if state is None and (port > 0 or otlp_configured()):
        state = start(CLI_SERVICE, prometheus=port > 0, host=settings.host, port=port)
    if state is None:
        yield
        return
    from activities.metrics import cli_command

    started, outcome = time.monotonic(), "error"
    try:
        yield
        outcome = "ok"
    finally:
        cli_command(name, outcome, time.monotonic() - started)
        # Push before the CLI's os._exit. Only the OTLP reader: flushing the provider would
        # also queue a copy for the Prometheus reader, printed beside the next scrape's own.
        if state.push is not None:
            if state.bridge is not None:
                state.bridge.drain()
            state.push.force_flush()
