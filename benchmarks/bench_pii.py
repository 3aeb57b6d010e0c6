"""PII detection (`agents/pii.py`) on a generated corpus: precision, recall and F1 per entity
type, and texts per second on one core.

The corpus: real film-review sentences (`tasks/sentiment_seed.jsonl`), each carrying one value
Faker makes (seeded: the same corpus on every run) at the start, in the middle or at the end:
emails, phone numbers (US, UK and German formats), card numbers (Luhn-valid, bare or grouped),
IBANs (bare or grouped), IPv4/IPv6 addresses, URLs and US SSNs; plus as many sentences left as
they are, whose every detection is a false positive.

A detected span counts for its type when it overlaps a value of that type ("exact": same
boundaries). `hidden` is what redaction needs: the share of values a span of any type covers
whole (an SSN read as a phone number is still redacted).

    python benchmarks/bench_pii.py [--per-type 300] [--clean 2000] [--seed 15] [--task T]

`--task sentiment` uses that task's entities and minimum scores instead of the defaults.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import pii  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sample:
    text: str
    truth: list[pii.Span]  # the values put in, by type and offsets


def generators(seed: int) -> dict[str, Callable[[random.Random], str]]:
    from faker import Faker

    fakes = {loc: Faker(loc) for loc in ("en_US", "en_GB", "de_DE")}
    for i, fake in enumerate(fakes.values()):
        fake.seed_instance(seed + i)
    us, gb, de = fakes["en_US"], fakes["en_GB"], fakes["de_DE"]

    def grouped(value: str, rng: random.Random) -> str:
        return (
            " ".join(value[i : i + 4] for i in range(0, len(value), 4))
            if rng.random() < 0.5
            else value
        )

    return {
        "EMAIL_ADDRESS": lambda rng: rng.choice([us.email, gb.free_email, de.email])(),
        "PHONE_NUMBER": lambda rng: rng.choice([us, gb, de]).phone_number(),
        "CREDIT_CARD": lambda rng: grouped(us.credit_card_number(), rng),
        "IBAN_CODE": lambda rng: grouped(rng.choice([gb, de]).iban(), rng),
        "IP_ADDRESS": lambda rng: us.ipv4() if rng.random() < 0.7 else us.ipv6(),
        "URL": lambda rng: us.url() + rng.choice(["", "reviews/", "film?id=42"]),
        "US_SSN": lambda rng: us.ssn(),
    }  # fmt: skip


def corpus(per_type: int, clean: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    lines = (ROOT / "tasks" / "sentiment_seed.jsonl").read_text().splitlines()
    sentences = [json.loads(line)["text"].strip() for line in lines]
    out = [Sample(s, []) for s in rng.sample(sentences, clean)]
    lead = ["Contact me at", "My number is", "Paid with", "Details:", "see", "from"]
    for kind, make in generators(seed).items():
        for _ in range(per_type):
            sentence, value, words = rng.choice(sentences), make(rng), rng.choice(lead)
            where = rng.choice(("start", "middle", "end"))
            if where == "start":
                head, tail = f"{words} ", f". {sentence}"
            elif where == "end":
                head, tail = f"{sentence} {words} ", "."
            else:
                cut = sentence.rfind(" ", 0, len(sentence) // 2) + 1
                head, tail = f"{sentence[:cut]}({words} ", f") {sentence[cut:]}"
            out.append(
                Sample(head + value + tail, [pii.Span(kind, len(head), len(head) + len(value))])
            )
    rng.shuffle(out)
    return out


def overlaps(a: pii.Span, b: pii.Span) -> bool:
    return a.start < b.end and b.start < a.end


def evaluate(samples: list[Sample], detected: list[list[pii.Span]], types: list[str]) -> None:
    print(f"{'entity':15} {'values':>6} {'found':>6} {'TP':>5} {'prec':>6} {'recall':>6} "
          f"{'F1':>6} {'exact':>6} {'hidden':>6}")  # fmt: skip
    totals = [0, 0, 0, 0]
    for kind in types:
        truth = [
            (t, d)
            for s, d in zip(samples, detected, strict=True)
            for t in s.truth
            if t.type == kind
        ]
        found = [
            (p, s) for s, d in zip(samples, detected, strict=True) for p in d if p.type == kind
        ]
        hits = sum(any(overlaps(p, t) for t in s.truth if t.type == kind) for p, s in found)
        recalled = sum(any(p.type == kind and overlaps(p, t) for p in d) for t, d in truth)
        exact = sum(
            any(p.type == kind and (p.start, p.end) == (t.start, t.end) for p in d)
            for t, d in truth
        )
        hidden = sum(any(p.start <= t.start and t.end <= p.end for p in d) for t, d in truth)
        prec = hits / len(found) if found else 1.0
        rec = recalled / len(truth) if truth else 1.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        print(f"{kind:15} {len(truth):6} {len(found):6} {hits:5} {prec:6.3f} {rec:6.3f} {f1:6.3f} "
              f"{exact / max(len(truth), 1):6.3f} {hidden / max(len(truth), 1):6.3f}")  # fmt: skip
        totals = [
            totals[0] + len(truth),
            totals[1] + len(found),
            totals[2] + hits,
            totals[3] + recalled,
        ]
    n, f, h, r = totals
    prec, rec = (h / f if f else 1.0), (r / n if n else 1.0)
    print(
        f"{'all':15} {n:6} {f:6} {h:5} {prec:6.3f} {rec:6.3f} {2 * prec * rec / (prec + rec):6.3f}"
    )
    clean = [d for s, d in zip(samples, detected, strict=True) if not s.truth]
    flagged = sum(bool(d) for d in clean)
    print(
        f"clean sentences: {len(clean)}, with any detection: {flagged} ({flagged / len(clean):.2%})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-type", type=int, default=300)
    ap.add_argument("--clean", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--task", default="", help="use this task's `pii:` entities and scores")
    args = ap.parse_args()

    entities, scores = list(pii.DEFAULT_ENTITIES), None
    if args.task:
        from agents.tasks import load_task

        spec = load_task(ROOT / "tasks", args.task).pii
        if spec is None:
            raise SystemExit(f"task {args.task} has no pii: section")
        entities, scores = list(spec.entities), spec.min_score
    samples = corpus(args.per_type, args.clean, args.seed)
    started = time.perf_counter()
    pii.detect("warm up: a@example.com", entities)  # builds the recognizers (imports presidio)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    detected = [pii.detect(s.text, entities, scores) for s in samples]
    took = time.perf_counter() - started
    chars = sum(len(s.text) for s in samples) / len(samples)
    print(f"corpus: {len(samples)} texts (mean {chars:.0f} chars), seed {args.seed}; "
          f"entities: {'task ' + args.task if args.task else 'defaults'}")  # fmt: skip
    evaluate(samples, detected, entities)
    print(f"throughput: {len(samples) / took:,.0f} texts/s on one core "
          f"({took:.2f} s; first use, presidio import and recognizers: {warm:.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
