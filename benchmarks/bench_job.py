"""Durable job vs plain loop: items/s of the same agents and policy, on this machine.

Starts its own embedded stack on bench ports in a temporary state dir (loopback only), runs
the sample through a plain in-process loop (agents → majority vote → policy, no I/O), then
through a real LabelDataset job with an in-process worker, prints both figures, the ratio
(DESIGN §10 budget: ≥ 80 %), the job's history size, the review frontier (ReviewItem workflows
opened vs waiting) and how much the Temporal store grew, and stops the stack it started.

    python benchmarks/bench_job.py [--repeat 4]      # --repeat 21: ~50,000 items
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from activities import ids  # noqa: E402
from activities.payloads import LabelDatasetInput, LabelDatasetResult  # noqa: E402
from agents.aggregate import majority_vote  # noqa: E402
from agents.pipeline import policy_inputs, safe_predict  # noqa: E402
from agents.samples import write_sample  # noqa: E402
from agents.tasks import build_agents, load_task  # noqa: E402
from catalog import db  # noqa: E402
from policy_rules.engine import Policy  # noqa: E402
from worker import stack  # noqa: E402
from worker.main import build_runtime, connect, make_worker  # noqa: E402
from worker.settings import Settings  # noqa: E402

BENCH_PORTS = {
    "temporal_port": 27233,
    "temporal_ui_port": 28233,
    "temporal_http_port": 27243,
    "temporal_metrics_port": 27244,
    "review_port": 27245,
    "postgres_port": 35432,
    "s3_port": 28333,
    "weed_master_port": 29333,
    "weed_volume_port": 29340,
    "weed_filer_port": 28888,
    "weed_admin_port": 34646,
}


def plain_loop(settings: Settings, texts: list[str]) -> float:
    task = load_task(settings.tasks_dir, "sentiment")
    agents = build_agents(task, None, models_dir=settings.models_dir)
    policy = Policy.load(settings.policies_dir, "route_default")
    started = time.perf_counter()
    for i in range(0, len(texts), 500):
        chunk = texts[i : i + 500]
        per_agent = [safe_predict(a, task.labels, chunk) for a in agents]
        for j, text in enumerate(chunk):
            ens = majority_vote([votes[j] for votes in per_agent])
            policy.evaluate(policy_inputs(text, ens))
    return len(texts) / (time.perf_counter() - started)


async def durable_job(
    settings: Settings, source: Path, parallelism: int, chunk_size: int
) -> tuple[float, LabelDatasetResult, int]:
    client = await connect(settings)  # as a worker connects: payloads encrypted
    runtime = await build_runtime(settings, client)
    try:
        async with make_worker(client, settings, runtime):
            started = time.perf_counter()
            wid = ids.label_workflow_id("bench", str(int(time.time())))
            result = await client.execute_workflow(
                ids.LABEL_DATASET_WORKFLOW,
                LabelDatasetInput(
                    dataset="bench",
                    source=str(source),
                    task="sentiment",
                    parallelism=parallelism,
                    chunk_size=chunk_size,
                ),
                id=wid,
                task_queue=settings.task_queue,
                result_type=LabelDatasetResult,
            )
            seconds = time.perf_counter() - started
            history = await client.get_workflow_handle(wid).fetch_history()
            async with runtime.engine.connect() as conn:
                frontier = (await db.frontier_counts(conn, "bench")).get("bench")
    finally:
        await runtime.close()
    print_phases(history.events)
    if frontier is not None:
        print(
            f"  review frontier: {frontier.open} ReviewItem workflows open, "
            f"{frontier.queued} waiting"
        )
    return result.items / seconds, result, len(history.events)


def store_bytes(db_file: Path) -> int:
    """The Temporal dev server's SQLite store on disk, with its write-ahead log."""
    return sum(p.stat().st_size for p in db_file.parent.glob(db_file.name + "*"))


def print_phases(events: Sequence[Any]) -> None:
    """Wall-clock span of each activity type, from the job's own history."""
    kind: dict[int, str] = {}
    spans: dict[str, list[float]] = {}
    for e in events:
        t = e.event_time.seconds + e.event_time.nanos / 1e9
        if e.HasField("activity_task_scheduled_event_attributes"):
            kind[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
            spans.setdefault(kind[e.event_id], [t, t])
        elif e.HasField("activity_task_completed_event_attributes"):
            name = kind[e.activity_task_completed_event_attributes.scheduled_event_id]
            spans[name][1] = t
    first = events[0].event_time.seconds + events[0].event_time.nanos / 1e9
    for name, (a, b) in spans.items():
        print(f"  {name:<12} from {a - first:6.2f} s to {b - first:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=4, help="copies of the sample (distinct)")
    parser.add_argument("--parallelism", type=int, default=4, help="label_chunk in flight")
    parser.add_argument("--chunk-size", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), **BENCH_PORTS)  # type: ignore[arg-type]
        files = write_sample(Path(home) / "samples")
        base = [json.loads(x)["text"] for x in files.items.read_text().splitlines()]
        texts = [f"{t} [{k}]" if k else t for k in range(args.repeat) for t in base]
        source = Path(home) / "bench.jsonl"
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        stack.up(settings)
        store = Path(home) / "temporal.db"
        try:
            loop_rate = plain_loop(settings, texts)
            before = store_bytes(store)
            started = time.perf_counter()
            job_rate, result, events = asyncio.run(
                durable_job(settings, source, args.parallelism, args.chunk_size)
            )
            wall = time.perf_counter() - started
            grown = store_bytes(store) - before
        finally:
            stack.down(settings)
    print(f"items                 {len(texts)}")
    print(f"plain loop            {loop_rate:,.0f} items/s")
    print(f"durable job           {job_rate:,.0f} items/s  (ingest + label + snapshot, end to end)")
    print(f"ratio                 {job_rate / loop_rate:.0%}  (budget: >= 80 %)")
    print(f"job wall time         {wall:.1f} s  (worker start to result)")
    print(f"history events        {events}")
    print(f"temporal store grew   {grown / 2**20:,.1f} MiB  (temporal.db + its WAL)")
    print(f"outcomes              {result.counts}")


if __name__ == "__main__":
    main()
