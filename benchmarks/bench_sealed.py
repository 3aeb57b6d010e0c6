"""Sealing throughput (formats/sealed.py): a snapshot-like JSONL file (default 100 MiB) sealed
to a temporary file, opened again and re-hashed, as the snapshot activity and `audit verify`
do; and the size overhead. Needs no server.

    .venv/bin/python benchmarks/bench_sealed.py [--mib N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import tempfile
import time

from formats import sealed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=100)
    args = parser.parse_args()
    kek = os.urandom(32)
    with tempfile.TemporaryFile() as src, tempfile.TemporaryFile() as out:
        want = hashlib.sha256()
        n = 0
        while src.tell() < args.mib << 20:
            item = os.urandom(32).hex()
            row = {
                "id": item,
                "text": f"review {n}: " + "a tender, dazzling film " * 8,
                "label": "positive",
                "label_source": "agent",
                "job_id": "j1",
                "split": None,
            }
            line = json.dumps(row, sort_keys=True).encode() + b"\n"
            src.write(line)
            want.update(line)
            n += 1
        size = src.tell()
        src.seek(0)
        t0 = time.perf_counter()
        done = sealed.seal(src, out, key_id="k-bench", kek=kek)
        out.flush()
        t1 = time.perf_counter()
        out.seek(0)
        sink = sealed.Sha256Sink()
        sealed.unseal(out, sink, {"k-bench": kek})
        t2 = time.perf_counter()
        assert sink.digest.hexdigest() == want.hexdigest()
    mb = size / 1e6
    print(
        f"{n} lines, {mb:.1f} MB; sealed in {t1 - t0:.2f} s ({mb / (t1 - t0):.0f} MB/s), "
        f"opened and re-hashed in {t2 - t1:.2f} s ({mb / (t2 - t1):.0f} MB/s)"
    )
    extra = done.sealed_size - size
    print(
        f"overhead {extra} bytes ({100 * extra / size:.4f}%); "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
