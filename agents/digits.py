"""Sample data for the `digits` task: scikit-learn's bundled 8x8 handwritten digits as text.

Role: every item in this pipeline is a string, so an image travels as text too. `encode` turns
an 8x8 image into its 64 pixel intensities (integers 0-16, row by row) joined by single spaces,
`decode` turns such a string back into a vector, and `write_digits_sample` writes the same
three JSONL files as `agents.samples.write_sample`: a labeled seed to train on, unlabeled items
to ingest and the items' held-out gold labels.

Invariants:
- The data is `sklearn.datasets.load_digits` (shipped inside scikit-learn, no network).
  Labels are the digit names "0".."9".
- `decode(encode(x)) == x` for every valid image; `decode` refuses anything else (wrong number
  of values, a non-integer, a value outside 0-16) with a `ValueError` that says what is wrong.
- Duplicate images (equal text, so equal item id) are dropped, first occurrence kept.
- The split is `agents.samples.split`: rows ordered by sha256 of the text, the seed takes the
  first seed_size / 10 rows of each digit, items/gold are the rest in the same order. It is
  deterministic and byte-stable, which is how `tasks/digits_seed.jsonl` is checked.
- Items carry no label field: the ground truth is never shown to agents.

Regenerating the committed seed (a test checks it is byte-identical):
    python -c "import shutil, tempfile; from pathlib import Path; from agents.digits import \
      write_digits_sample; shutil.copy(write_digits_sample(Path(tempfile.mkdtemp())).seed, \
      'tasks/digits_seed.jsonl')"
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from agents.samples import SampleFiles, split

N_PIXELS = 64  # 8 x 8
MAX_INTENSITY = 16
LABELS = tuple(str(d) for d in range(10))
# 30 examples per digit: enough for every agent of tasks/digits.yaml, and leaves ~1,500 items.
DEFAULT_SEED_SIZE = 300


def encode(pixels: Sequence[float] | np.ndarray) -> str:
    """64 intensities (integers 0-16, row-major) -> "0 0 5 13 9 1 ...". Refuses other input."""
    values = np.asarray(pixels, dtype=np.float64).reshape(-1)
    if values.size != N_PIXELS:
        raise ValueError(f"an 8x8 digit has {N_PIXELS} pixels, got {values.size}")
    ints = values.astype(np.int64)
    if not np.array_equal(ints, values) or ints.min() < 0 or ints.max() > MAX_INTENSITY:
        raise ValueError(f"pixel values must be integers from 0 to {MAX_INTENSITY}")
    return " ".join(str(int(v)) for v in ints)


def decode(text: str) -> np.ndarray:
    """Parse "0 0 5 13 ..." into a float64 array of shape (64,); ValueError naming the fault."""
    tokens = text.split()
    if len(tokens) != N_PIXELS:
        raise ValueError(
            f"expected {N_PIXELS} space-separated pixel values (8x8), got {len(tokens)}"
        )
    values = np.empty(N_PIXELS, dtype=np.float64)
    for i, token in enumerate(tokens):
        # isdecimal() and not int(): int() also accepts "+3", "1_0" and non-ASCII digits.
        if not (token.isascii() and token.isdecimal()):
            raise ValueError(f"pixel {i} is {token[:20]!r}, not an integer from 0 to 16")
        value = int(token)
        if value > MAX_INTENSITY:
            raise ValueError(f"pixel {i} is {value}, outside 0 to {MAX_INTENSITY}")
        values[i] = value
    return values


def digits_rows() -> list[dict[str, str]]:
    """`{"text", "label"}` per distinct image, in load_digits' order (duplicates: first kept)."""
    from sklearn.datasets import load_digits  # slow import; only needed to build the sample

    bunch = load_digits()
    first: dict[str, dict[str, str]] = {}
    for image, target in zip(bunch.data, bunch.target, strict=True):
        text = encode(image)
        first.setdefault(text, {"text": text, "label": str(int(target))})
    return list(first.values())


def write_digits_sample(out_dir: Path, seed_size: int = DEFAULT_SEED_SIZE) -> SampleFiles:
    """items.jsonl ({"text"}), seed.jsonl and gold.jsonl ({"text", "label"}) in out_dir."""
    seed, rest = split(digits_rows(), seed_size=seed_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = SampleFiles(
        items=out_dir / "items.jsonl", seed=out_dir / "seed.jsonl", gold=out_dir / "gold.jsonl"
    )
    files.seed.write_bytes(_jsonl({"text": r["text"], "label": r["label"]} for r in seed))
    files.items.write_bytes(_jsonl({"text": r["text"]} for r in rest))
    files.gold.write_bytes(_jsonl({"text": r["text"], "label": r["label"]} for r in rest))
    return files


def _jsonl(records: Iterable[Mapping[str, str]]) -> bytes:
    # Texts are ASCII digits and spaces: plain json.dumps lines are byte-stable.
    return b"".join(json.dumps(dict(r)).encode("ascii") + b"\n" for r in records)
