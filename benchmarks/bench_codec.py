"""What payload encryption costs: encode and decode time per payload and size overhead.

Payloads are the product's own, built as a worker builds them: a ReviewItemInput with the
roster and two agents' votes and rationales (what every review opens with), a review
submission with a signed claim, a chunk's activity input and result, and a 64 KiB blob (the
largest kind of payload we write is far smaller). Each is encoded and decoded `--repeat`
times with the codec every client uses (AES-256-GCM; zlib from 1 KiB); the median per
payload is printed, beside the plain converter's own cost for scale.

    python benchmarks/bench_codec.py [--repeat 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities.payloads import (  # noqa: E402
    DATA_CONVERTER,
    ChunkInput,
    ChunkResult,
    OutcomeCounts,
    PolicyRefPayload,
    ReviewerGrant,
    ReviewItemInput,
    ReviewRulesPayload,
    ReviewSubmission,
    VoteView,
)
from worker.codec import EncryptionCodec, ensure_ring  # noqa: E402
from worker.identity import ensure_identity_ring  # noqa: E402


def samples(tmp: Path) -> dict[str, object]:
    ring = ensure_identity_ring(tmp / "identity.json")
    pin = PolicyRefPayload(id="route_default", version=2, sha256="ab" * 32)
    review = ReviewItemInput(
        dataset="rotten_tomatoes",
        item_id="cd" * 32,
        job_id="label:rotten_tomatoes:j1",
        task="sentiment",
        labels=["positive", "negative"],
        sensitivity="normal",
        policy=pin,
        rule_id="low_confidence",
        rules=ReviewRulesPayload(),
        reviewers=[
            ReviewerGrant(id=r, cleared=True, groups=["primary"])
            for r in ("alice", "bob", "carol", "dana")
        ],
        votes=[
            VoteView(
                agent="keywords",
                version="3f1c",
                label="positive",
                confidence=0.66,
                rationale="matched: dazzling, tender, heartfelt; against: overlong",
            ),
            VoteView(
                agent="tfidf_logreg",
                version="9a0e",
                label="negative",
                confidence=0.58,
                rationale="top terms: overlong (-1.2), dazzling (+0.9), tender (+0.7)",
            ),
        ],  # fmt: skip
        gold_label="positive",
        identity=ring.public_keys(),
    )
    submission = ReviewSubmission(
        reviewer="alice", label="positive", note="clear case", token=ring.mint("alice")
    )
    chunk = ChunkInput(job_id="label:rt:j1", dataset="rt", task="sentiment",
                       agents=["keywords", "tfidf_logreg"], policy=pin, chunk=7,
                       start=3500, end=4000)  # fmt: skip
    result = ChunkResult(
        chunk=7, counts=OutcomeCounts(auto_accept=410, human_review=88, quarantine=2)
    )
    return {
        "ReviewItemInput": review,
        "ReviewSubmission+claim": submission,
        "ChunkInput": chunk,
        "ChunkResult": result,
        "64 KiB text": "word " * (64 * 1024 // 5),
    }


async def measure(codec: EncryptionCodec, value: object, repeat: int) -> dict[str, float]:
    convert = DATA_CONVERTER.payload_converter
    to_payload, enc, dec = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        payload = convert.to_payload(value)
        t1 = time.perf_counter()
        [sealed] = await codec.encode([payload])
        t2 = time.perf_counter()
        [opened] = await codec.decode([sealed])
        t3 = time.perf_counter()
        assert opened == payload
        to_payload.append(t1 - t0)
        enc.append(t2 - t1)
        dec.append(t3 - t2)
    return {
        "plain_bytes": payload.ByteSize(),
        "sealed_bytes": sealed.ByteSize(),
        "convert_us": statistics.median(to_payload) * 1e6,
        "encode_us": statistics.median(enc) * 1e6,
        "decode_us": statistics.median(dec) * 1e6,
    }


async def main(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ensure_ring(Path(tmp) / "codec.json")
        codec = EncryptionCodec(Path(tmp) / "codec.json")
        print(f"codec cost per payload (median of {repeat}; AES-256-GCM, zlib from 1 KiB)")
        print(f"{'payload':<24}{'plain B':>9}{'sealed B':>10}{'convert µs':>12}"
              f"{'encode µs':>11}{'decode µs':>11}")  # fmt: skip
        for name, value in samples(Path(tmp)).items():
            r = await measure(codec, value, repeat)
            sizes = f"{r['plain_bytes']:>9.0f}{r['sealed_bytes']:>10.0f}"
            times = f"{r['convert_us']:>12.1f}{r['encode_us']:>11.1f}{r['decode_us']:>11.1f}"
            print(f"{name:<24}{sizes}{times}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5000)
    asyncio.run(main(parser.parse_args().repeat))
