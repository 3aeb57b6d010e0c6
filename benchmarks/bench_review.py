"""Review loop figures: the parent job's history with ~1,000 routed items, and the latency
from a reviewer's submit to the new S3 snapshot version (median of 20).

Starts its own stack on bench ports in a temporary state dir (loopback only) with an
in-process worker, and stops what it started.

    python benchmarks/bench_review.py [--items 1300] [--reviews 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from activities import ids  # noqa: E402
from activities.payloads import (  # noqa: E402
    LabelDatasetInput,
    LabelDatasetResult,
    ReviewReceipt,
    ReviewSubmission,
)
from agents.samples import write_sample  # noqa: E402
from benchmarks.bench_job import BENCH_PORTS  # noqa: E402
from worker import stack  # noqa: E402
from worker.identity import IdentityRing
from worker.main import build_runtime, connect, make_worker  # noqa: E402
from worker.settings import Settings  # noqa: E402


async def run(settings: Settings, source: Path, reviews: int) -> None:
    client = await connect(settings)  # as a worker connects: payloads encrypted
    runtime = await build_runtime(settings, client)
    try:
        async with make_worker(client, settings, runtime):
            started = time.perf_counter()
            wid = ids.label_workflow_id("benchrev", str(int(time.time())))
            job = await client.execute_workflow(
                ids.LABEL_DATASET_WORKFLOW,
                LabelDatasetInput(dataset="benchrev", source=str(source), task="sentiment"),
                id=wid,
                task_queue=settings.task_queue,
                result_type=LabelDatasetResult,
            )
            seconds = time.perf_counter() - started
            events = len((await client.get_workflow_handle(wid).fetch_history()).events)
            print(f"items                 {job.items}")
            print(f"routed to review      {job.counts.human_review}")
            print(f"job wall time         {seconds:.1f} s (opens one ReviewItem per routed item)")
            print(f"parent history events {events}")

            async with runtime.engine.connect() as conn:
                items = [
                    r[0]
                    for r in await conn.execute(
                        text("SELECT item_id FROM review_task WHERE job_id = :j LIMIT :n"),
                        {"j": wid, "n": reviews},
                    )
                ]
            latencies = []
            for item in items:
                async with runtime.engine.connect() as conn:
                    before = await conn.scalar(
                        text("SELECT coalesce(max(version), 0) FROM snapshot WHERE dataset = :d"),
                        {"d": "benchrev"},
                    )
                t0 = time.perf_counter()
                await client.get_workflow_handle(
                    ids.review_workflow_id("benchrev", item)
                ).execute_update(
                    "submit_review",
                    ReviewSubmission(
                        reviewer="alice",
                        label="positive",
                        token=IdentityRing.load(settings.identity_keys_path).mint("alice"),
                    ),
                    result_type=ReviewReceipt,
                )
                while True:
                    async with runtime.engine.connect() as conn:
                        now = await conn.scalar(
                            text("SELECT max(version) FROM snapshot WHERE dataset = :d"),
                            {"d": "benchrev"},
                        )
                    if now and now > before:
                        break
                    if time.perf_counter() - t0 > 30:
                        raise SystemExit("no new snapshot version within 30 s")
                    await asyncio.sleep(0.02)
                latencies.append(time.perf_counter() - t0)
            print(
                f"submit → new S3 version  median {statistics.median(latencies):.2f} s, "
                f"max {max(latencies):.2f} s over {len(latencies)} reviews"
            )
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1300, help="sample items in the job")
    parser.add_argument("--reviews", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), **BENCH_PORTS)  # type: ignore[arg-type]
        files = write_sample(Path(home) / "samples")
        lines = files.items.read_text().splitlines()[: args.items]
        source = Path(home) / "review.jsonl"
        source.write_text(
            "".join(json.dumps({"text": json.loads(x)["text"]}) + "\n" for x in lines)
        )
        stack.up(settings)
        try:
            asyncio.run(run(settings, source, args.reviews))
        finally:
            stack.down(settings)


if __name__ == "__main__":
    main()
