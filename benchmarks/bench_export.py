"""Export throughput and memory: one labeled snapshot of 1,000,000 items, exported with the
real code in `formats/export.py` to every format (jsonl, parquet, label-studio) and to
jsonl with `--split test`.

Measures, per export: items/s (rows written / wall seconds of the `export()` call), wall
seconds, output size (MB = 10**6 bytes), the resident set size of the process right before
`export()` is called (after its imports; pyarrow is imported first for parquet so that
figure is the export's own working memory), and the peak RSS of that process
(`ru_maxrss`), with /proc's VmHWM beside it as a cross-check. Each export runs in a fresh
interpreter (this file with `--child`), so each peak is its own. (On Linux a child's
`ru_maxrss` starts from its parent's RSS at the fork/exec, so this parent imports nothing
heavy and leaves the checks that need pyarrow to the children.) Label Studio gets a
`votes` lookup that returns two fake votes per (item, job) pair, so the per-batch lookup
cost is included.

The snapshot is generated first (seeded, so the same bytes every run; in its own
subprocess, by sorted runs and a merge, in bounded memory) in the snapshot format of
`formats/snapshot_files.py`; its generation time is reported separately. Then one
export with a wrong expected sha256 must raise `ExportError` and leave no output behind.

Exits non-zero if an export fails, a check fails, or an export's peak RSS exceeds 512 MiB.
Needs no server; temporary files are removed.

    .venv/bin/python benchmarks/bench_export.py [--items N]    # default 1,000,000
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import importlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from formats import snapshot_files  # noqa: E402
from formats.export import ExportError, export  # noqa: E402

SEED = 20240611
RUN = 50_000  # lines per sorted run while generating (bounds the generator's memory)
RSS_LIMIT_MIB = 512
CHILD_TIMEOUT_S = 1800

VOCABULARY = (
    "the a this that it film movie story plot acting cast director script scene ending "
    "characters performance dialogue soundtrack pacing visuals camera humor drama thriller "
    "comedy was is feels felt seems looked sounded truly really quite rather somewhat very "
    "utterly barely hardly never always often great good fine solid decent strong brilliant "
    "charming moving funny clever fresh bold warm sharp beautiful memorable engaging gripping "
    "bad poor weak dull boring flat tedious clumsy bland predictable messy forgettable silly "
    "slow lazy shallow overlong confusing awkward and but yet so although while because "
    "with without from about into over after before despite its their our my your every "
    "moment minute hour time audience viewers fans critics first second final whole entire "
    "best worst most least more less than as like of in on for at by to not no"
)
WORDS = tuple(VOCABULARY.split())
JOBS = tuple(f"label:reviews:{n}" for n in range(1, 9))
SPLITS: tuple[str | None, ...] = ("train", "validation", "test", None)
SPLIT_WEIGHTS = (60, 10, 10, 20)


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: now, VmHWM: this image's peak; Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_now_kib() -> int:
    return _status_kib("VmRSS")


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


# --- the snapshot ---------------------------------------------------------------------------


def _text(rng: random.Random) -> str:
    target = rng.randint(80, 200)
    words: list[str] = []
    size = -1
    while True:
        word = rng.choice(WORDS)
        if size + 1 + len(word) > target:
            break
        words.append(word)
        size += 1 + len(word)
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice((".", "!", "."))


def _rows(items: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(SEED)
    for _ in range(items):
        text = _text(rng)
        yield {
            "id": hashlib.sha256(text.encode()).hexdigest(),
            "text": text,
            "label": rng.choice(("positive", "negative")),
            "label_source": "human" if rng.random() < 0.3 else "agent",
            "job_id": rng.choice(JOBS),
            "split": rng.choices(SPLITS, SPLIT_WEIGHTS)[0],
        }


def _generate(items: int, path: Path) -> dict[str, Any]:
    """Write `items` rows sorted by id to `path`: sorted runs of RUN lines, then one merge.
    `encode` sorts keys and "id" comes first, so the lines sort as their ids do."""
    runs: list[Path] = []
    batch: list[bytes] = []

    def spill() -> None:
        batch.sort()
        run = path.with_name(f"run{len(runs):04d}.jsonl")
        run.write_bytes(b"".join(batch))
        runs.append(run)
        batch.clear()

    for row in _rows(items):
        batch.append(snapshot_files.encode(row))
        if len(batch) >= RUN:
            spill()
    if batch:
        spill()

    sha = hashlib.sha256()
    lines = duplicates = 0
    splits: dict[str, int] = {}
    previous = b""
    with ExitStack() as stack, path.open("wb") as out:
        files: list[IO[bytes]] = [stack.enter_context(run.open("rb")) for run in runs]
        for line in heapq.merge(*files):
            item_id = line[: line.index(b'",')]
            if item_id == previous:  # the same text twice: one item
                duplicates += 1
                continue
            previous = item_id
            sha.update(line)
            out.write(line)
            lines += 1
            split = json.loads(line)["split"]
            splits[str(split)] = splits.get(str(split), 0) + 1
    for run in runs:
        run.unlink()
    return {"sha256": sha.hexdigest(), "lines": lines, "duplicates": duplicates,
            "splits": splits, "bytes": path.stat().st_size}  # fmt: skip


# --- the children ---------------------------------------------------------------------------


class FakeVotes:
    """A `VoteLookup`: two votes per (item, job) pair, counting the batched lookups."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self, pairs: list[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
        self.calls += 1
        out: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for item_id, job_id in pairs:
            label = "positive" if int(item_id[-1], 16) % 2 else "negative"
            out[(item_id, job_id)] = [
                ("keywords", "1", label, 0.8),
                ("tfidf_logreg", "abc", label, 0.7),
            ]
        return out


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh interpreter; prints one JSON line with the figures."""
    if args.task == "generate":
        base, started = _rss_now_kib(), time.perf_counter()
        info = _generate(args.items, Path(args.source))
        info.update(seconds=time.perf_counter() - started, base_kib=base, peak_kib=_peak_kib())
        print(json.dumps(info))
        return
    pq: Any = None
    if args.task == "parquet":
        # Imported before the baseline: the figures are the export's memory, not pyarrow's.
        pq = importlib.import_module("pyarrow.parquet")
    progress_calls = 0

    def progress(n: int) -> None:
        nonlocal progress_calls
        progress_calls += 1

    votes = FakeVotes()
    base = _rss_now_kib()
    base_peak = _peak_kib()
    with open(args.source, "rb") as source:
        started = time.perf_counter()
        result = export(
            source,
            expected_sha256=args.sha256,
            fmt=args.task,
            out=Path(args.out),
            split=args.split,
            votes=votes if args.task == "label-studio" else None,
            progress=progress,
        )
        seconds = time.perf_counter() - started
    peak, hwm = _peak_kib(), _status_kib("VmHWM")
    row_groups = None
    if pq is not None:  # checked here, after the peak is taken, so the parent stays small
        meta = pq.ParquetFile(args.out).metadata
        if meta.num_rows != result.items:
            sys.exit(f"parquet has {meta.num_rows} rows, export() says {result.items}")
        row_groups = meta.num_row_groups
    print(json.dumps({
        "items": result.items, "read": result.read, "out_bytes": result.out_bytes,
        "out_sha256": result.out_sha256, "seconds": seconds, "base_kib": base,
        "base_peak_kib": base_peak, "peak_kib": peak, "hwm_kib": hwm,
        "progress_calls": progress_calls, "row_groups": row_groups,
        "vote_lookups": votes.calls,
    }))  # fmt: skip


def _spawn(*argv: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])}: exit {proc.returncode}\n{proc.stderr.strip()}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --- checks on the outputs (streaming, in the parent) ---------------------------------------


def _check_output(fmt: str, out: Path, fig: dict[str, Any], snap: dict[str, Any]) -> str | None:
    """None if the output looks right, else what is wrong."""
    split = fig.get("split")
    want = snap["splits"].get(split, 0) if split else snap["lines"]
    if fig["items"] != want or fig["read"] != snap["lines"]:
        return f"wrote {fig['items']} of {want} rows, read {fig['read']} of {snap['lines']}"
    if fmt == "jsonl" and split is None and fig["out_sha256"] != snap["sha256"]:
        return "the jsonl export of the whole version differs from the snapshot"
    if fmt == "label-studio":
        lines = 0
        with out.open("rb") as fh:
            head = fh.read(3)
            fh.seek(0)
            for block in iter(lambda: fh.read(1 << 20), b""):
                lines += block.count(b"\n")
            fh.seek(-3, 2)
            tail = fh.read()
        if head != b"[\n{" or tail != b"\n]\n" or lines != want + 2:
            return f"not one task a line in a JSON array ({lines} lines)"
    return None


def _mismatch_check(source: Path, tmp: Path) -> str | None:
    """A wrong expected sha256 must raise ExportError and leave nothing in the directory."""
    out_dir = tmp / "mismatch"
    out = out_dir / "export.jsonl"
    try:
        with source.open("rb") as fh:
            export(fh, expected_sha256="0" * 64, fmt="jsonl", out=out)
    except ExportError as e:
        left = sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []
        if left:
            return f"ExportError raised, but files were left behind: {left}"
        print(f"sha mismatch check: ExportError raised and no output left: {e}")
        return None
    return "an export with a wrong expected sha256 did not raise ExportError"


# --- the parent -----------------------------------------------------------------------------


def main(items: int) -> int:
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_export.") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "snapshot.jsonl"
        print(f"generating a {items:,}-item snapshot (seed {SEED}) ...", flush=True)
        snap = _spawn("generate", str(source), "--items", str(items))
        if snap["lines"] != items:
            failures.append(f"generated {snap['lines']} items, {snap['duplicates']} duplicates")
        print(
            f"snapshot: {snap['lines']:,} lines, {snap['bytes'] / 1e6:.1f} MB, "
            f"sha256 {snap['sha256'][:16]}…, generated in {snap['seconds']:.1f} s "
            f"(peak RSS {snap['peak_kib'] / 1024:.0f} MiB; not part of the figures below)"
        )
        print(f"splits: {json.dumps(snap['splits'], sort_keys=True)}", flush=True)

        runs: list[tuple[str, str | None]] = [
            ("jsonl", None),
            ("jsonl", "test"),
            ("parquet", None),
            ("label-studio", None),
        ]
        figures: list[dict[str, Any]] = []
        for fmt, split in runs:
            out = tmp / f"out.{fmt}"
            argv = [fmt, str(source), str(out), "--sha256", snap["sha256"]]
            print(f"exporting {fmt}{f' --split {split}' if split else ''} ...", flush=True)
            try:
                fig = _spawn(*argv, *(["--split", split] if split else []))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                failures.append(f"{fmt} split={split}: {e}")
                continue
            fig.update(fmt=fmt, split=split)
            problem = _check_output(fmt, out, fig, snap)
            if problem:
                failures.append(f"{fmt} split={split}: {problem}")
            if fig["peak_kib"] / 1024 > RSS_LIMIT_MIB:
                failures.append(f"{fmt} split={split}: peak RSS over {RSS_LIMIT_MIB} MiB")
            figures.append(fig)
            out.unlink(missing_ok=True)

        problem = _mismatch_check(source, tmp)
        if problem:
            failures.append(problem)

    print()
    print(f"export of {snap['lines']:,} items ({snap['bytes'] / 1e6:.1f} MB snapshot), "
          f"one fresh process each: items/s = rows written / wall s, read/s = rows read / "
          f"wall s;\nRSS in MiB (peak = ru_maxrss, added = peak - base, VmHWM as a check), "
          f"sizes in MB (10^6 bytes)")  # fmt: skip
    head = (
        f"{'format':<14}{'split':<7}{'items':>10}{'items/s':>10}{'read/s':>10}"
        f"{'wall s':>8}{'out MB':>9}"
        f"{'base RSS':>10}{'peak RSS':>10}{'added':>8}{'VmHWM':>8}"
    )
    print(head)
    print("-" * len(head))
    for fig in figures:
        base, peak = fig["base_kib"] / 1024, fig["peak_kib"] / 1024
        print(
            f"{fig['fmt']:<14}{fig['split'] or '-':<7}{fig['items']:>10,}"
            f"{fig['items'] / fig['seconds']:>10,.0f}{fig['read'] / fig['seconds']:>10,.0f}"
            f"{fig['seconds']:>8.1f}"
            f"{fig['out_bytes'] / 1e6:>9.1f}{base:>10.1f}{peak:>10.1f}{peak - base:>8.1f}"
            f"{fig['hwm_kib'] / 1024:>8.1f}"
        )
    for fig in figures:
        if fig["fmt"] == "parquet":
            print(f"parquet: {fig.get('row_groups')} row groups (zstd)")
        if fig["fmt"] == "label-studio":
            print(f"label-studio: {fig['vote_lookups']} vote lookups (2 votes per item)")
    if figures:
        worst = max(fig["peak_kib"] for fig in figures) / 1024
        print(
            f"\npeak RSS stays under {int(worst) + 1} MiB for {snap['lines']:,} items "
            f"(limit {RSS_LIMIT_MIB} MiB; the largest export-added share is "
            f"{max(f['peak_kib'] - f['base_kib'] for f in figures) / 1024:.1f} MiB)"
        )
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("task", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("source", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("out", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--sha256", help=argparse.SUPPRESS)
    parser.add_argument("--split", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _parse(sys.argv[1:])
    if args.child:
        child(args)
    else:
        sys.exit(main(args.items))
