"""Small helpers shared by the integration tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def write_jsonl(path: Path, texts: Sequence[str], extra_lines: Sequence[bytes] = ()) -> Path:
    with path.open("wb") as fh:
        for text in texts:
            fh.write(json.dumps({"text": text}).encode() + b"\n")
        for raw in extra_lines:
            fh.write(raw + b"\n")
    return path
