"""Routing decisions per second on one core: a realistic 7-rule policy over 100,000 generated
items, input conversion included, in labelfabric's engine (`policy_rules.engine`, Google's
CEL through cel-expr-python) and, on the same rules and items, in cel-python (celpy, pure
Python) and common-expression-language (Rust). All three must decide every item alike.

    python benchmarks/bench_policy.py [--items 100000] [--celpy-items 10000]

cel-python and common-expression-language come from the `bench` extra (`make bench` installs
it); without them only labelfabric's figure is printed.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy_rules.engine import Policy  # noqa: E402

PARAMS = {
    "min_chars": 1,
    "max_chars": 1000,
    "min_agreement": 1.0,
    "min_confidence_corroborated": 0.67,
    "min_confidence": 0.72,
    "min_alpha": 0.2,
}
RULES = [
    ("empty_text", "item.chars < params.min_chars", "reject"),
    ("too_long", "item.chars > params.max_chars", "quarantine"),
    ("all_abstained", "votes.abstained >= votes.count", "human_review"),
    ("agents_disagree", "ensemble.agreement < params.min_agreement", "human_review"),
    (
        "chunk_in_doubt",
        "chunk.alpha < params.min_alpha && ensemble.confidence < 0.9",
        "human_review",
    ),
    (
        "corroborated",
        "votes.count - votes.abstained >= 2 && ensemble.confidence >= "
        "params.min_confidence_corroborated",
        "auto_accept",
    ),
    (
        "confident",
        'ensemble.label != "" && ensemble.confidence >= params.min_confidence',
        "auto_accept",
    ),
]
DEFAULT = "human_review"
INPUTS = {
    "item.chars": "int",
    "votes.count": "int",
    "votes.abstained": "int",
    "ensemble.label": "string",
    "ensemble.confidence": "double",
    "ensemble.agreement": "double",
    "chunk.alpha": "double",
}


def policy_yaml() -> str:
    lines = ["id: bench_route", "version: 1", "inputs:"]
    lines += [f"  {k}: {t}" for k, t in INPUTS.items()]
    lines += ["params:"] + [f"  {k}: {v}" for k, v in PARAMS.items()] + ["rules:"]
    for rid, when, outcome in RULES:
        lines += [f"  - id: {rid}", f"    when: '{when}'", f"    outcome: {outcome}"]
    return "\n".join([*lines, "default:", f"  outcome: {DEFAULT}", ""])


def generate(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Inputs as `label_chunk` builds them, spread so that every rule fires on some items."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        count = rng.choice((2, 2, 3, 5))
        abstained = rng.choice((0, 0, 0, 1, count))
        label = "" if abstained >= count else rng.choice(("positive", "negative"))
        out.append(
            {
                "item.chars": rng.choice((0, 40, 120, 300, 800, 1500)),
                "votes.count": count,
                "votes.abstained": abstained,
                "ensemble.label": label,
                "ensemble.confidence": 0.0 if not label else round(rng.random(), 4),
                "ensemble.agreement": 0.0 if not label else rng.choice((0.5, 1.0, 1.0)),
                "chunk.alpha": round(rng.uniform(-0.1, 0.9), 3),
            }
        )
    return out


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """`item.chars` -> {"item": {"chars": …}}, params included: what the other engines read."""
    out: dict[str, Any] = {"params": dict(PARAMS)}
    for key, value in flat.items():
        head, tail = key.split(".", 1)
        out.setdefault(head, {})[tail] = value
    return out


def ours(items: Sequence[dict[str, Any]]) -> tuple[list[str], float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench_route"
        folder.mkdir()
        (folder / "v1.yaml").write_text(policy_yaml())
        policy = Policy.load(Path(tmp), "bench_route@1")
    started = time.perf_counter()
    outcomes = [policy.evaluate(x).outcome for x in items]
    return outcomes, time.perf_counter() - started


def first_match(run: Callable[[int, Any], bool], context: Any) -> str:
    for i, (_, _, outcome) in enumerate(RULES):
        if run(i, context):
            return outcome
    return DEFAULT


def rust_cel(items: Sequence[dict[str, Any]]) -> tuple[list[str], float] | None:
    try:
        import cel  # type: ignore[import-not-found]
    except ImportError:
        return None
    programs = [cel.compile(when) for _, when, _ in RULES]
    started = time.perf_counter()
    outcomes = [
        first_match(lambda i, ctx: programs[i].execute(ctx) is True, nested(x)) for x in items
    ]
    return outcomes, time.perf_counter() - started


def celpy_engine(items: Sequence[dict[str, Any]]) -> tuple[list[str], float] | None:
    try:
        import celpy  # type: ignore[import-not-found]
    except ImportError:
        return None
    env = celpy.Environment()
    programs = [env.program(env.compile(when)) for _, when, _ in RULES]
    started = time.perf_counter()
    outcomes = [
        first_match(
            lambda i, ctx: bool(programs[i].evaluate(ctx)),
            {k: celpy.json_to_cel(v) for k, v in nested(x).items()},
        )
        for x in items
    ]
    return outcomes, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--celpy-items", type=int, default=10_000, help="celpy is slow")
    args = parser.parse_args()
    items = generate(args.items)
    reference, seconds = ours(items)
    hits = {o: reference.count(o) for o in sorted(set(reference))}
    print(f"{len(RULES)}-rule policy, {len(items):,} generated items, one thread; outcomes {hits}")
    print(f"{'engine':<44} {'items':>8} {'decisions/s':>12} {'agree':>7}")
    print(
        f"{'labelfabric (cel-expr-python, Google CEL)':<44} {len(items):>8,} "
        f"{len(items) / seconds:>12,.0f} {'-':>7}"
    )
    for name, run, n in (
        ("common-expression-language (Rust)", rust_cel, len(items)),
        ("cel-python (celpy, pure Python)", celpy_engine, min(args.celpy_items, len(items))),
    ):
        result = run(items[:n])
        if result is None:
            print(f"{name:<44} not installed (pip install 'labelfabric[bench]')")
            continue
        outcomes, secs = result
        agree = sum(a == b for a, b in zip(outcomes, reference, strict=False)) / n
        print(f"{name:<44} {n:>8,} {n / secs:>12,.0f} {agree:>7.1%}")


if __name__ == "__main__":
    main()
