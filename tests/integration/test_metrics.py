"""Metrics: the session worker's Prometheus endpoint, scraped while a real job runs and after
it, agrees with the catalog: items labeled per dataset, policy version and outcome with the
`decision` rows, agent votes and abstentions with the `vote` rows, gate verdicts with the
snapshot rows, reviews and their latency with `review` and `review_task`, and a job on a
missing source counts one `SourceNotFound`. The Temporal SDK's own metrics are on the same
endpoint."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities import ids
from activities import metrics as m
from activities.payloads import LabelDatasetInput, LabelDatasetResult
from tests.helpers import ThreadWorker, write_jsonl
from tests.integration.reviewing import eventually, handle_for, submit
from worker.main import Runtime
from worker.settings import Settings

Samples = dict[str, list[tuple[dict[str, str], float]]]


async def rows(runtime: Runtime, sql: str, **params: object) -> list[Any]:
    async with runtime.engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


def scrape(settings: Settings) -> Samples:
    url = f"http://{settings.host}:{settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        body = answer.read().decode()
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    # One collection per scrape (a flush elsewhere would queue a copy of every series).
    assert body.count("\ntarget_info{") == 1
    # The session's worker runs in this process: the endpoint must be this process's.
    [(_, started)] = out["process_start_time_seconds"]
    assert started == pytest.approx(psutil.Process().create_time(), abs=1), (
        f"port {settings.metrics_port} is served by another process"
    )
    return out


def values(samples: Samples, name: str, key: tuple[str, ...], **match: str) -> dict[tuple, float]:
    """`name`'s samples whose labels include `match`, summed by the labels in `key`."""
    out: dict[tuple, float] = defaultdict(float)
    for labels, value in samples.get(name, []):
        if all(labels.get(k) == v for k, v in match.items()):
            out[tuple(labels.get(k, "") for k in key)] += value
    return dict(out)


async def test_scraped_counters_agree_with_the_catalog(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    assert stack.metrics_port > 0
    before = await asyncio.to_thread(scrape, stack)
    dataset = f"met{uuid.uuid4().hex[:6]}"
    source = write_jsonl(tmp_path / "m.jsonl", [r["text"] for r in gold_rows[700:820]])
    handle = await env.client.start_workflow(
        ids.LABEL_DATASET_WORKFLOW,
        LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment", chunk_size=30),
        id=ids.label_workflow_id(dataset, "j1"),
        task_queue=stack.task_queue,
        result_type=LabelDatasetResult,
    )
    during = await asyncio.to_thread(scrape, stack)  # the endpoint answers mid-job
    result = await handle.result()
    after = await asyncio.to_thread(scrape, stack)

    labeled = m.ITEMS_LABELED.prometheus
    key = ("policy", "outcome")
    decided = {
        (f"{p}@{v}", o): float(n)
        for p, v, o, n in await rows(
            runtime,
            "SELECT policy_id, policy_version, outcome, count(*) FROM decision"
            " WHERE dataset = :d GROUP BY 1, 2, 3",
            d=dataset,
        )
    }
    assert values(after, labeled, key, dataset=dataset) == decided
    assert sum(decided.values()) == result.counts.total == 120
    assert decided[(f"{result.policy.id}@{result.policy.version}", ids.AUTO_ACCEPT)] == (
        result.counts.auto_accept
    )
    assert sum(values(during, labeled, key, dataset=dataset).values()) <= 120

    # Agents are labelled by name@version, not dataset: compare what this job added.
    voted = {
        (f"{a}@{v}", "abstain" if none else "vote"): float(n)
        for a, v, none, n in await rows(
            runtime,
            "SELECT agent, agent_version, label IS NULL, count(*) FROM vote"
            " WHERE dataset = :d GROUP BY 1, 2, 3",
            d=dataset,
        )
    }
    votes_key = ("agent", "result")
    added = values(after, m.AGENT_VOTES.prometheus, votes_key)
    for k, n in voted.items():
        assert added[k] - values(before, m.AGENT_VOTES.prometheus, votes_key).get(k, 0) >= n
    latency = f"{m.AGENT_LATENCY.prometheus}_count"
    for agent, _ in voted:
        assert values(after, latency, ("agent",)).get((agent,), 0) >= 4  # one per chunk

    gates = await rows(
        runtime,
        "SELECT gate_result, count(*) FROM snapshot WHERE dataset = :d GROUP BY 1",
        d=dataset,
    )
    judged = {(r,): float(n) for r, n in gates if r is not None}
    assert values(after, m.GATE_VERDICTS.prometheus, ("verdict",), dataset=dataset) == judged

    # Reviews: one reviewer answers three routed items; throughput and latency follow.
    waiting = [
        str(r[0])
        for r in await rows(
            runtime,
            "SELECT item_id FROM review_task WHERE dataset = :d AND state = 'awaiting'"
            " ORDER BY item_id LIMIT 3",
            d=dataset,
        )
    ]
    assert len(waiting) == 3
    for item in waiting:
        assert (await submit(handle_for(env, dataset, item), "alice", "positive")).accepted

    async def closed() -> int:
        found = await rows(
            runtime,
            "SELECT count(*) FROM review_task WHERE dataset = :d AND state = 'done'",
            d=dataset,
        )
        return int(found[0][0]) if int(found[0][0]) == 3 else 0

    assert await eventually(closed, within=30) == 3

    async def reviewed() -> Samples:
        now = await asyncio.to_thread(scrape, stack)
        count = f"{m.REVIEW_LATENCY.prometheus}_count"
        return now if values(now, count, ("state",), dataset=dataset) == {("done",): 3.0} else {}

    now = await eventually(reviewed, within=15)
    assert now, "review latency never reached 3 observations"
    recorded = await rows(
        runtime,
        "SELECT reviewer, accepted, count(*) FROM review WHERE dataset = :d GROUP BY 1, 2",
        d=dataset,
    )
    assert values(
        now, m.REVIEWS_RECORDED.prometheus, ("reviewer", "accepted"), dataset=dataset
    ) == {(r, "true" if a else "false"): float(n) for r, a, n in recorded}
    seconds = values(now, f"{m.REVIEW_LATENCY.prometheus}_sum", ("state",), dataset=dataset)
    assert 0 < seconds[("done",)] < 3 * 600

    # The Temporal SDK's own metrics, bridged into the same endpoint.
    async def sdk() -> Samples:
        now = await asyncio.to_thread(scrape, stack)
        return now if any(k.startswith("temporal_") for k in now) else {}

    bridged = await eventually(sdk, within=10)
    names = sorted(k for k in bridged if k.startswith("temporal_"))
    assert "temporal_activity_execution_latency_seconds_count" in names, names
    done = values(
        bridged,
        "temporal_activity_execution_latency_seconds_count",
        ("activity_type",),
        task_queue=stack.task_queue,
    )
    assert done.get(("label_chunk",), 0) >= 4


async def test_a_missing_source_counts_one_source_not_found(
    env: WorkflowEnvironment, worker: ThreadWorker, stack: Settings, tmp_path: Path
) -> None:
    name = m.ACTIVITY_FAILURES.prometheus
    key = ("error_type", "retryable")
    match = {"activity": "prepare_job"}
    before = values(await asyncio.to_thread(scrape, stack), name, key, **match)
    dataset = f"mf{uuid.uuid4().hex[:6]}"
    with pytest.raises(WorkflowFailureError):
        await env.client.execute_workflow(
            ids.LABEL_DATASET_WORKFLOW,
            LabelDatasetInput(
                dataset=dataset, source=str(tmp_path / "missing.jsonl"), task="sentiment"
            ),
            id=ids.label_workflow_id(dataset, "j1"),
            task_queue=stack.task_queue,
            result_type=LabelDatasetResult,
        )
    after = values(await asyncio.to_thread(scrape, stack), name, key, **match)
    k = (ids.SOURCE_NOT_FOUND, "false")
    assert after.get(k, 0) - before.get(k, 0) == 1
    assert {kk: v for kk, v in after.items() if kk != k} == {
        kk: v for kk, v in before.items() if kk != k
    }
