"""Workflow starts per second of the Temporal dev server under three SQLite pragma settings.

For each setting this starts a Temporal-only stack (`worker.stack.up_temporal`) in a temporary
dir on free 127.0.0.1 ports, starts N workflows with no worker (a start is one persisted
transaction, which is what the pragmas change), prints starts/s one at a time and with
concurrent clients, and stops its server again.

    PYTHONPATH=. python benchmarks/bench_temporal_sqlite.py [-n 200] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
import uuid
from pathlib import Path

from temporalio.client import Client

from worker import stack
from worker.settings import Settings

HOST = "127.0.0.1"
PRAGMAS: dict[str, dict[str, str]] = {
    "default": {},
    "wal+normal": {"journal_mode": "wal", "synchronous": "normal"},
    "wal+off": {"journal_mode": "wal", "synchronous": "off"},
}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


async def starts_per_second(client: Client, count: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def start_one() -> None:
        async with gate:
            await client.start_workflow(
                "BenchNoop", id=f"bench-{uuid.uuid4().hex}", task_queue="bench-no-worker"
            )

    t0 = time.perf_counter()
    await asyncio.gather(*(start_one() for _ in range(count)))
    return count / (time.perf_counter() - t0)


async def measure(settings: Settings, count: int, concurrency: int) -> tuple[float, float]:
    client = await Client.connect(f"{HOST}:{settings.temporal_port}")
    await starts_per_second(client, 10, 1)  # warm up connections and caches
    serial = await starts_per_second(client, count, 1)
    parallel = await starts_per_second(client, count, concurrency)
    return serial, parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    print(f"{'pragmas':<12} {'serial starts/s':>16} {f'x{args.concurrency} starts/s':>16}")
    for label, pragmas in PRAGMAS.items():
        with tempfile.TemporaryDirectory(prefix="bench-temporal-") as home:
            port, ui, http, metrics = free_ports(4)
            settings = Settings(
                home=Path(home),
                host=HOST,
                temporal_port=port,
                temporal_ui_port=ui,
                temporal_http_port=http,
                temporal_metrics_port=metrics,
                temporal_namespace="default",
            )
            try:
                stack.up_temporal(settings, sqlite_pragmas=pragmas)
                serial, parallel = asyncio.run(measure(settings, args.count, args.concurrency))
            finally:
                stack.down(settings)
        print(f"{label:<12} {serial:>16.0f} {parallel:>16.0f}")


if __name__ == "__main__":
    main()
