"""Accuracy of the five weak `digits` agents, alone and aggregated, on the held-out items.

Builds the agents of tasks/digits.yaml through the task loader, writes the digits sample to a
temporary folder, has every agent label the held-out items and prints each agent's accuracy
and that of the project's aggregators (majority vote, weighted vote, Dawid-Skene fitted on
all held-out votes, no labels). No workflows: `labelfabric eval --dataset digits` measures the
same agents through real jobs. Deterministic: the same figures on every run.

    python benchmarks/digits_agents.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.aggregate import DawidSkene, majority_vote, weighted_vote  # noqa: E402
from agents.digits import write_digits_sample  # noqa: E402
from agents.tasks import build_agents, load_task  # noqa: E402

TASKS = Path(__file__).resolve().parent.parent / "tasks"


def accuracy(predicted: Sequence[str | None], gold: Sequence[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args()
    task = load_task(TASKS, "digits")

    with tempfile.TemporaryDirectory(prefix="digits-bench-") as tmp:
        sample = write_digits_sample(Path(tmp) / "sample")
        seed_file = TASKS / "digits_seed.jsonl"
        if sample.seed.read_bytes() != seed_file.read_bytes():
            print(f"warning: {seed_file} differs from a freshly generated seed")
        gold_rows = [json.loads(line) for line in sample.gold.read_text().splitlines()]
        texts = [row["text"] for row in gold_rows]
        gold = [row["label"] for row in gold_rows]

        start = time.perf_counter()
        agents = build_agents(task, None, models_dir=Path(tmp) / "models")
        built = time.perf_counter() - start
        start = time.perf_counter()
        votes = [agent.predict(texts) for agent in agents]
        predicted = time.perf_counter() - start

    print(
        f"{len(texts)} held-out items; {len(agents)} agents built in {built:.2f} s, "
        f"all votes in {predicted:.2f} s"
    )
    print(f"{'agent':<22} {'version':<17} {'accuracy':>8} {'abstain':>8} {'mean conf':>9}")
    for agent, row in zip(agents, votes, strict=True):
        acc = accuracy([v.label for v in row], gold)
        abstained = sum(v.label is None for v in row)
        conf = float(np.mean([v.confidence for v in row]))
        print(f"{agent.name:<22} {agent.version:<17} {acc:8.3f} {abstained:8d} {conf:9.2f}")
    by_item = list(zip(*votes, strict=True))
    mv = [majority_vote(item).label for item in by_item]
    ds_model = DawidSkene.fit(
        task.labels, [a.name for a in agents], [[v.label for v in item] for item in by_item]
    )
    ds = [ds_model.ensemble(list(item)).label for item in by_item]
    wv = [weighted_vote(item).label for item in by_item]
    ties = sum(1 for item in by_item if majority_vote(item).agreement <= 0.4)
    print(
        f"{'majority vote':<40} {accuracy(mv, gold):8.3f}   ({ties} items with <= 2 of 5 agreeing)"
    )
    print(f"{'weighted vote':<40} {accuracy(wv, gold):8.3f}")
    print(f"{'Dawid-Skene':<40} {accuracy(ds, gold):8.3f}")


if __name__ == "__main__":
    main()
