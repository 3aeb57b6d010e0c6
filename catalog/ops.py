"""What the ops page (`/ops`, worker/web/ops.py) shows, read from the catalog: per dataset
its versions with their gate verdicts, the review backlog over time, each routing policy
version's auto-accept rate beside the gold accuracy of what it auto-accepted, each agent
version's reliability, and each reviewer's accuracy on gold checks.

One query per figure for all datasets at once (grouped by dataset), so the page's cost
grows with the catalog's rows, not with the number of datasets times queries. Gold labels
are the task's (`gold_label`, by item id): an item with a known label measures whoever
labeled it, agent, policy or person.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.frontier import OPEN_STATES, QUEUED

VERSIONS_SHOWN = 30  # the newest versions of each dataset


class VersionRow(NamedTuple):
    version: int
    created_at: datetime
    items: int
    verdict: str | None  # pass | fail | None (no gate)
    gate: str | None  # gate policy id@version
    rule: str | None
    job_id: str


class PolicyRow(NamedTuple):
    policy: str  # id@version
    decided: int
    auto_accepted: int
    gold: int  # auto-accepted items with a gold label
    gold_right: int

    @property
    def auto_accept_rate(self) -> float:
        return self.auto_accepted / self.decided if self.decided else 0.0

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_right / self.gold if self.gold else None


class AgentRow(NamedTuple):
    agent: str  # name@version
    votes: int
    abstained: int
    ms_per_item: float
    agreed: int  # votes equal to the ensemble's label
    gold: int  # votes (not abstentions) on items with a gold label
    gold_right: int

    @property
    def abstention_rate(self) -> float:
        return self.abstained / self.votes if self.votes else 0.0

    @property
    def agreement(self) -> float | None:
        voted = self.votes - self.abstained
        return self.agreed / voted if voted else None

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_right / self.gold if self.gold else None


class ReviewerRow(NamedTuple):
    reviewer: str
    accepted: int
    refused: int
    gold: int
    gold_right: int

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_right / self.gold if self.gold else None


class Backlog(NamedTuple):
    waiting: int  # queued in the frontier
    open: int  # a ReviewItem workflow is open
    closed: int
    median_latency_s: float | None  # routed to closed, of the closed ones
    series: list[tuple[datetime, int]]  # (time, reviews not closed then)


async def datasets(conn: AsyncConnection) -> list[str]:
    """Every dataset with a job or a version, the most recently active first."""
    found = await conn.execute(
        text(
            "SELECT dataset FROM (SELECT dataset, max(started_at) AS at FROM job GROUP BY 1"
            " UNION ALL SELECT dataset, max(created_at) FROM snapshot GROUP BY 1) d"
            " GROUP BY dataset ORDER BY max(at) DESC, dataset"
        )
    )
    return [str(r[0]) for r in found]


def _only(column: str, only: Sequence[str] | None) -> tuple[str, dict[str, Any]]:
    """A condition keeping `only` these datasets (None: all), and its parameter."""
    if only is None:
        return "true", {}
    return f"{column} = ANY(:only)", {"only": list(only)}


async def versions(
    conn: AsyncConnection, only: Sequence[str] | None = None
) -> dict[str, list[VersionRow]]:
    where, params = _only("dataset", only)
    found = await conn.execute(
        text(
            "SELECT dataset, version, created_at, item_count, gate_result,"
            " gate->>'policy', gate->>'version', gate->>'rule', job_id FROM ("
            "  SELECT *, row_number() OVER (PARTITION BY dataset ORDER BY version DESC) AS n"
            f"  FROM snapshot WHERE {where}) s WHERE n <= :keep ORDER BY dataset, version"
        ),
        {"keep": VERSIONS_SHOWN, **params},
    )
    out: dict[str, list[VersionRow]] = defaultdict(list)
    for d, v, at, items, verdict, gate, gate_v, rule, job in found:
        ref = f"{gate}@{gate_v}" if gate else None
        out[d].append(VersionRow(v, at, items, verdict, ref, rule, job))
    return dict(out)


async def policies(
    conn: AsyncConnection, only: Sequence[str] | None = None
) -> dict[str, list[PolicyRow]]:
    where, params = _only("d.dataset", only)
    found = await conn.execute(
        text(
            "SELECT d.dataset, d.policy_id || '@' || d.policy_version, count(*),"
            " count(*) FILTER (WHERE d.outcome = 'auto_accept'),"
            " count(g.label) FILTER (WHERE d.outcome = 'auto_accept'),"
            " count(*) FILTER (WHERE d.outcome = 'auto_accept' AND g.label = d.ensemble_label)"
            " FROM decision d LEFT JOIN job j ON j.id = d.job_id"
            " LEFT JOIN gold_label g ON g.task = j.task AND g.item_id = d.item_id"
            f" WHERE {where} GROUP BY d.dataset, d.policy_id, d.policy_version"
            " ORDER BY d.dataset, d.policy_id, d.policy_version"
        ),
        params,
    )
    return _grouped(found, PolicyRow)


async def agents(
    conn: AsyncConnection, only: Sequence[str] | None = None
) -> dict[str, list[AgentRow]]:
    where, params = _only("v.dataset", only)
    found = await conn.execute(
        text(
            "SELECT v.dataset, v.agent || '@' || v.agent_version, count(*),"
            " count(*) FILTER (WHERE v.label IS NULL), coalesce(avg(v.latency_ms), 0),"
            " count(*) FILTER (WHERE v.label = d.ensemble_label),"
            " count(g.label) FILTER (WHERE v.label IS NOT NULL),"
            " count(*) FILTER (WHERE v.label = g.label)"
            " FROM vote v LEFT JOIN job j ON j.id = v.job_id"
            " LEFT JOIN decision d ON d.job_id = v.job_id AND d.item_id = v.item_id"
            " LEFT JOIN gold_label g ON g.task = j.task AND g.item_id = v.item_id"
            f" WHERE {where} GROUP BY v.dataset, v.agent, v.agent_version ORDER BY 1, 2"
        ),
        params,
    )
    return _grouped(found, AgentRow)


async def reviewers(
    conn: AsyncConnection, only: Sequence[str] | None = None
) -> dict[str, list[ReviewerRow]]:
    where, params = _only("dataset", only)
    found = await conn.execute(
        text(
            "SELECT dataset, reviewer, count(*) FILTER (WHERE accepted),"
            " count(*) FILTER (WHERE NOT accepted), count(correct),"
            f" count(*) FILTER (WHERE correct) FROM review WHERE {where}"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        params,
    )
    return _grouped(found, ReviewerRow)


async def backlogs(
    conn: AsyncConnection, only: Sequence[str] | None = None, points: int = 40
) -> dict[str, Backlog]:
    """Each dataset's review backlog now, and over time: at `points` even steps from its
    first routed item to now, how many reviews were routed and not yet closed."""
    where, params = _only("dataset", only)
    now_rows = await conn.execute(
        text(
            "SELECT dataset, count(*) FILTER (WHERE closed_at IS NULL AND state = :queued),"
            " count(DISTINCT workflow_id) FILTER (WHERE closed_at IS NULL"
            "   AND state = ANY(:open)),"
            " count(*) FILTER (WHERE closed_at IS NOT NULL),"
            " percentile_cont(0.5) WITHIN GROUP"
            "   (ORDER BY extract(epoch FROM closed_at - opened_at))"
            " FILTER (WHERE closed_at IS NOT NULL),"
            f" min(opened_at), now() FROM review_task WHERE {where} GROUP BY dataset"
        ),
        {"queued": QUEUED, "open": list(OPEN_STATES), **params},
    )
    summary = {r[0]: r[1:] for r in now_rows}
    # Each routing adds one to the backlog and each close takes one away: the deltas per
    # time bucket, summed in order, are the backlog at each bucket's end.
    deltas = await conn.execute(
        text(
            "WITH b AS (SELECT dataset, extract(epoch FROM min(opened_at)) AS lo,"
            "   extract(epoch FROM now()) + 0.001 AS hi FROM review_task"
            f"   WHERE {where} GROUP BY dataset),"
            " e AS (SELECT dataset, extract(epoch FROM opened_at) AS t, 1 AS d FROM review_task"
            "   UNION ALL SELECT dataset, extract(epoch FROM closed_at), -1 FROM review_task"
            "   WHERE closed_at IS NOT NULL)"
            " SELECT e.dataset, least(width_bucket(e.t, b.lo, greatest(b.hi, b.lo + 0.002), :n),"
            "   :n) AS k, sum(e.d) FROM e JOIN b USING (dataset) GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        {"n": points, **params},
    )
    per: dict[str, dict[int, int]] = defaultdict(dict)
    for d, k, delta in deltas:
        per[d][int(k)] = int(delta)
    out: dict[str, Backlog] = {}
    for d, (waiting, opened, closed, median, first, now) in summary.items():
        step = (now - first) / points
        level, series = 0, [(first, 0)]
        for k in range(1, points + 1):
            level += per[d].get(k, 0)
            series.append((first + step * k, level))
        out[d] = Backlog(waiting, opened, closed, median, series)
    return out


def _grouped(rows: Any, kind: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for dataset, *fields in rows:
        out[dataset].append(kind(*(float(f) if isinstance(f, Decimal) else f for f in fields)))
    return dict(out)
