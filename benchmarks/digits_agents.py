"""Accuracy of the five weak `digits` agents, alone and aggregated, on the held-out items.

Builds the agents of tasks/digits.yaml directly with `TabularAgent.from_seed` (the YAML is read
here, not through the task loader, so this works before the `tabular` kind is registered),
writes the digits sample to a temporary folder, has every agent label the held-out items and
prints each agent's accuracy, the majority-vote accuracy (`agents.aggregate.majority_vote`) and
the accuracy of a Dawid-Skene estimate (a small EM written here as a cross-check, not the
project's aggregator). Deterministic: the same figures on every run.

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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.aggregate import majority_vote  # noqa: E402
from agents.base import Vote  # noqa: E402
from agents.digits import write_digits_sample  # noqa: E402
from agents.tabular import TabularAgent  # noqa: E402

TASK_FILE = Path(__file__).resolve().parent.parent / "tasks" / "digits.yaml"


def build(task_file: Path, models_dir: Path) -> tuple[list[str], list[TabularAgent]]:
    task = yaml.safe_load(task_file.read_text(encoding="utf-8"))
    labels = [str(label) for label in task["labels"]]
    agents = []
    for entry in task["agents"]:
        if entry["kind"] != "tabular":
            raise SystemExit(f"{task_file}: agent {entry['name']}: kind {entry['kind']!r}")
        agents.append(
            TabularAgent.from_seed(
                entry["name"],
                task_file.parent / entry["seed"],
                labels,
                models_dir,
                model=entry["model"],
                features=entry.get("features"),
                params=entry.get("params"),
            )
        )
    return labels, agents


def dawid_skene(
    votes: Sequence[Sequence[Vote]], labels: Sequence[str], *, iterations: int = 100
) -> list[str]:
    """Dawid-Skene (1979) by EM: one full confusion matrix per agent, majority-vote start.

    `votes[a][i]` is agent a's vote on item i; abstentions carry no evidence. Confusion rows
    get add-0.01 smoothing so an unseen (true, given) pair is unlikely, not impossible.
    """
    index = {label: k for k, label in enumerate(labels)}
    n_agents, n_items, n_labels = len(votes), len(votes[0]), len(labels)
    given = np.zeros((n_agents, n_items, n_labels))  # one-hot of each agent's label
    for a, row in enumerate(votes):
        for i, vote in enumerate(row):
            if vote.label is not None:
                given[a, i, index[vote.label]] = 1.0
    counts = given.sum(axis=0)
    posterior = (counts + 1e-9) / (counts + 1e-9).sum(axis=1, keepdims=True)
    for _ in range(iterations):
        prior = posterior.mean(axis=0)
        confusion = np.einsum("it,aig->atg", posterior, given) + 0.01
        confusion /= confusion.sum(axis=2, keepdims=True)
        log_post = np.log(prior)[None, :] + np.einsum("aig,atg->it", given, np.log(confusion))
        log_post -= log_post.max(axis=1, keepdims=True)
        updated = np.exp(log_post)
        updated /= updated.sum(axis=1, keepdims=True)
        done = np.abs(updated - posterior).max() < 1e-9
        posterior = updated
        if done:
            break
    return [labels[k] for k in np.argmax(posterior, axis=1)]


def accuracy(predicted: Sequence[str | None], gold: Sequence[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task-file", type=Path, default=TASK_FILE)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="digits-bench-") as tmp:
        sample = write_digits_sample(Path(tmp) / "sample")
        seed_file = args.task_file.parent / "digits_seed.jsonl"
        if sample.seed.read_bytes() != seed_file.read_bytes():
            print(f"warning: {seed_file} differs from a freshly generated seed")
        gold_rows = [json.loads(line) for line in sample.gold.read_text().splitlines()]
        texts = [row["text"] for row in gold_rows]
        gold = [row["label"] for row in gold_rows]

        start = time.perf_counter()
        labels, agents = build(args.task_file, Path(tmp) / "models")
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
    ds = dawid_skene(votes, labels)
    ties = sum(1 for item in by_item if majority_vote(item).agreement <= 0.4)
    print(
        f"{'majority vote':<40} {accuracy(mv, gold):8.3f}   ({ties} items with <= 2 of 5 agreeing)"
    )
    print(f"{'Dawid-Skene (EM, this script)':<40} {accuracy(ds, gold):8.3f}")


if __name__ == "__main__":
    main()
