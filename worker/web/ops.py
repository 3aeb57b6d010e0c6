"""The ops page (`/ops`, leads and admins) and the review page's Prometheus endpoint
(`/metrics`).

`/ops` draws, per dataset, from the catalog (`catalog/ops.py`): its versions with their gate
verdicts, the review backlog over time, auto-accept rate against gold accuracy per routing
policy version, agent reliability and reviewer accuracy, as server-rendered SVG
(`worker/web/charts.py`) with the numbers in tables beside: readable without JavaScript.
Its `Server-Timing` header says what the catalog and the rendering cost.

`/metrics` serves this process's registry (worker/metrics.py) with the catalog-derived
gauges (`activities.metrics.CATALOG_GAUGES`: review backlog, gold accuracy of reviewers,
policy and agent versions, each dataset's newest version), read from the catalog at most
every `GAUGE_TTL_S` (`SLOW_TTL_S` for the two that pass over all decisions and votes)
whatever the scrape rate, so one page reports them for the whole fabric. No sign-in:
Prometheus has none. Loopback peers only (the page binds to loopback; behind a
proxy, scrape the page directly); `LABELFABRIC_REVIEW_METRICS=0` turns it off.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from catalog import db
from catalog import ops as figures
from worker.web import charts
from worker.web.site import Refusal, Site

GAUGE_TTL_S = 10.0
SHOWN = 10  # datasets drawn by default, the most recently active first (?all=1: every one)
SLOW_TTL_S = 60.0
log = logging.getLogger("labelfabric.review_page")


def routes(site: Site) -> list[Route]:
    async def ops_page(request: Request) -> Response:
        me = await site.require(request, "ops")
        only = (request.query_params.get("dataset") or "")[:200] or None
        every = request.query_params.get("all") == "1"
        started = time.perf_counter()
        async with request.app.state.engine.connect() as conn:
            names = await figures.datasets(conn)
            shown = [only] if only in names else [] if only else names[: None if every else SHOWN]
            versions = await figures.versions(conn, shown)
            backlogs = await figures.backlogs(conn, shown)
            policies = await figures.policies(conn, shown)
            agents = await figures.agents(conn, shown)
            reviewers = await figures.reviewers(conn, shown)
        queried = time.perf_counter()
        context = {
            "datasets": names,
            "more": len(names) - len(shown) if only is None else 0,
            "only": only,
            "panels": [
                panel(
                    n,
                    versions.get(n, []),
                    backlogs.get(n),
                    policies.get(n, []),
                    agents.get(n, []),
                    reviewers.get(n, []),
                )
                for n in shown
            ],
        }
        response = site.render(request, "ops.html", context, me=me)
        done = time.perf_counter()
        response.headers["server-timing"] = (
            f"catalog;dur={(queried - started) * 1000:.1f}, "
            f"render;dur={(done - queried) * 1000:.1f}"
        )
        return response

    async def metrics_page(request: Request) -> Response:
        if not site.settings.review_metrics:
            raise Refusal(404, "metrics are off (LABELFABRIC_REVIEW_METRICS=0)")
        if not _loopback(request):
            raise Refusal(403, "metrics are served to loopback clients only")
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        await GAUGES.refresh(request.app.state.engine)
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/ops", ops_page), Route("/metrics", metrics_page)]


def panel(
    name: str,
    versions: list[figures.VersionRow],
    backlog: figures.Backlog | None,
    policies: list[figures.PolicyRow],
    agents: list[figures.AgentRow],
    reviewers: list[figures.ReviewerRow],
) -> dict[str, Any]:
    """One dataset's charts (and the rows their tables show)."""
    key = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    colors = [charts.PASS if v.verdict == "pass" else charts.FAIL if v.verdict else charts.NONE
              for v in versions]  # fmt: skip
    return {
        "name": name,
        "versions": versions,
        "backlog": backlog,
        "median_latency": duration(backlog.median_latency_s) if backlog else None,
        "policies": policies,
        "agents": agents,
        "reviewers": reviewers,
        "versions_chart": charts.bars(
            f"versions-{key}",
            "items per version (green: gate passed, red: failed, grey: no gate)",
            [f"v{v.version}" for v in versions],
            [charts.Series("items", [float(v.items) for v in versions])],
            category_colors=colors,
            empty="no versions yet",
        ),
        "backlog_chart": charts.line(
            f"backlog-{key}",
            "reviews routed and not yet closed",
            backlog.series if backlog else [],
            empty="nothing routed to people yet",
        ),
        "policy_chart": charts.scatter(
            f"policies-{key}",
            "auto-accept rate vs gold accuracy of what it auto-accepted, per policy version",
            [
                (p.policy, p.auto_accept_rate, p.gold_accuracy)
                for p in policies
                if p.gold_accuracy is not None
            ],
            x_title="auto-accept rate",
            y_title="gold accuracy",
            empty="no auto-accepted item has a gold label yet",
        ),
        "agent_chart": charts.bars(
            f"agents-{key}",
            "agent reliability per version",
            [a.agent for a in agents],
            [
                charts.Series("gold accuracy", [a.gold_accuracy for a in agents]),
                charts.Series("agreement", [a.agreement for a in agents], charts.PALETTE[3]),
                charts.Series("abstention", [a.abstention_rate for a in agents], charts.PALETTE[1]),
            ],
            as_percent=True,
        ),
        "reviewer_chart": charts.bars(
            f"reviewers-{key}",
            "reviewer accuracy on gold checks",
            [r.reviewer for r in reviewers if r.gold],
            [charts.Series("gold accuracy", [r.gold_accuracy for r in reviewers if r.gold])],
            as_percent=True,
            empty="no gold checks answered yet",
        ),
    }


def duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CatalogGauges:
    """The catalog-derived gauges (`activities.metrics.CATALOG_GAUGES`), observed from the
    last read. The backlog, versions and reviewers (small grouped queries) are read again
    when older than `GAUGE_TTL_S`; policy and agent gold accuracy (a pass over decisions
    and votes) when older than `SLOW_TTL_S`, whatever the scrape rate."""

    def __init__(self) -> None:
        # metric name -> label values (in the spec's label order) -> value
        self.values: dict[str, dict[tuple[str, ...], float]] = {}
        self.read_at = self.slow_read_at = -math.inf
        self.registered = False
        self._lock = asyncio.Lock()

    def register(self) -> None:
        """Once per process, on the process's MeterProvider (worker/metrics.py)."""
        if self.registered:
            return
        from opentelemetry import metrics
        from opentelemetry.metrics import CallbackOptions, Observation

        from activities.metrics import CATALOG_GAUGES, METER, MetricSpec

        meter = metrics.get_meter(METER)

        def observe(spec: MetricSpec) -> Any:
            def callback(_: CallbackOptions) -> list[Observation]:
                seen = self.values.get(spec.name, {}).items()
                return [Observation(v, dict(zip(spec.labels, k, strict=True))) for k, v in seen]

            return callback

        for spec in CATALOG_GAUGES:
            meter.create_observable_gauge(
                spec.name, callbacks=[observe(spec)], unit=spec.unit, description=spec.help
            )
        self.registered = True

    async def refresh(self, engine: AsyncEngine) -> None:
        from activities import metrics as m

        async with self._lock:
            now = time.monotonic()
            fast, slow = now - self.read_at >= GAUGE_TTL_S, now - self.slow_read_at >= SLOW_TTL_S
            if not fast and not slow:
                return
            async with engine.connect() as conn:
                if fast:
                    counts = await db.frontier_counts(conn)
                    stats = await db.reviewer_stats(conn)
                    versions = await figures.versions(conn)
                if slow:
                    policies = await figures.policies(conn)
                    agents = await figures.agents(conn)
            if fast:
                # A dataset whose backlog emptied reads 0, not nothing, while this page runs.
                backlog = dict.fromkeys(self.values.get(m.REVIEW_BACKLOG.name, {}), 0.0)
                for dataset, c in counts.items():
                    backlog |= {(dataset, "waiting"): c.queued, (dataset, "open"): c.open}
                # Only reviewers with gold checks: a refused submission's id is the sender's.
                gold = {who: (s["gold"], s["correct"]) for who, s in stats.items() if s["gold"]}
                self.values |= {
                    m.REVIEW_BACKLOG.name: backlog,
                    m.REVIEWER_GOLD_ACCURACY.name: {(w,): r / a for w, (a, r) in gold.items()},
                    m.REVIEWER_GOLD_ANSWERED.name: {(w,): a for w, (a, _) in gold.items()},
                    m.DATASET_VERSION.name: {
                        (d, rows[-1].verdict or "none"): rows[-1].version
                        for d, rows in versions.items()
                    },
                }
                self.read_at = now
            if slow:
                self.values |= {
                    m.POLICY_GOLD_ACCURACY.name: {
                        (d, p.policy): p.gold_accuracy
                        for d, rows in policies.items()
                        for p in rows
                        if p.gold_accuracy is not None
                    },
                    m.AGENT_GOLD_ACCURACY.name: {
                        (d, a.agent): a.gold_accuracy
                        for d, rows in agents.items()
                        for a in rows
                        if a.gold_accuracy is not None
                    },
                }
                self.slow_read_at = now

    async def keep_fresh(self, engine: AsyncEngine) -> None:
        """For OTLP, which reads the gauges on its own schedule, not on a scrape."""
        while True:
            try:
                await self.refresh(engine)
            except Exception:  # the catalog is down: the next round tries again
                log.warning("metrics: cannot read the catalog's gauges", exc_info=True)
            await asyncio.sleep(GAUGE_TTL_S)


GAUGES = CatalogGauges()
