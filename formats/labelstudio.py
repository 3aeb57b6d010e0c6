"""Importing Label Studio task JSON: texts become items, predictions become votes and
annotations become reviews, each with its provenance; the resulting labels are current.

A task is `{"data": {"text": ...}, "predictions": [{"model_version", "score", "result"}],
"annotations": [{"result", "completed_by", "created_at", "was_cancelled"}]}`, where a result
is `[{"type": "choices", "value": {"choices": [LABEL]}}]`. The label is the newest
non-cancelled annotation's; without one, the prediction `labelfabric` (what `dataset export
--format label-studio` writes for an agent-accepted label). Each refused task is named by
index with the reason; nothing else of it is stored. Importing the same file again changes
nothing (the job id is derived from the file's sha256). `mark` gives each item its PII
redactions and sensitivity, as ingest does (the task's `pii:`; `agents.pii.mark`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from formats.leakage import leak
from formats.sources import Record

AGENT_PREFIX = "label_studio"
# text -> (redactions, sensitivity) an item is stored with
Marker = Callable[[str], tuple[list[dict[str, Any]], str]]


@dataclass
class Parsed:
    items: list[dict[str, Any]] = field(default_factory=list)
    votes: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # id -> label, who
    refused: list[dict[str, Any]] = field(default_factory=list)
    agents: set[str] = field(default_factory=set)


def _choice(result: Any, labels: tuple[str, ...]) -> str:
    if not isinstance(result, list) or not result:
        raise ValueError("result must be a non-empty list")
    for part in result:
        if isinstance(part, dict) and part.get("type") == "choices":
            choices = (part.get("value") or {}).get("choices") or []
            if len(choices) != 1:
                raise ValueError(f"expected exactly one choice, got {choices!r}")
            if choices[0] not in labels:
                raise ValueError(f"label {choices[0]!r} is not one of {', '.join(labels)}")
            return str(choices[0])
    raise ValueError("no 'choices' result")


def _who(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "label-studio")
    return f"label-studio:{completed_by}" if completed_by is not None else "label-studio"


def _when(raw: Any) -> datetime:
    if isinstance(raw, str):
        try:
            at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            return at if at.tzinfo else at.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def parse(
    path: Path,
    *,
    dataset: str,
    job_id: str,
    labels: tuple[str, ...],
    text_field: str,
    mark: Marker | None = None,
) -> Parsed:
    """Read and check every task; refusals carry the task's index (1-based) and reason."""
    try:
        tasks = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a Label Studio JSON export: {err}") from err
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: expected a JSON array of tasks, got {type(tasks).__name__}")
    out = Parsed()
    seen: set[str] = set()
    for n, task in enumerate(tasks, start=1):
        try:
            _parse_task(out, task, n, seen, dataset, job_id, labels, text_field, str(path), mark)
        except (ValueError, TypeError, AttributeError) as err:
            out.refused.append(
                {"job_id": job_id, "line": n, "reason": f"task {n}: {err}",
                 "excerpt": json.dumps(task)[:200]}
            )  # fmt: skip
    return out


def _parse_task(
    out: Parsed,
    task: Any,
    n: int,
    seen: set[str],
    dataset: str,
    job_id: str,
    labels: tuple[str, ...],
    text_field: str,
    uri: str,
    mark: Marker | None = None,
) -> None:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise ValueError("expected an object with a 'data' object")
    text = task["data"].get(text_field)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"data.{text_field} must be non-empty text")
    item_id = hashlib.sha256(text.encode()).hexdigest()
    if item_id in seen:
        raise ValueError("the same text as an earlier task (duplicate)")
    split = task["data"].get("split")
    if split not in (None, "train", "validation", "test"):
        raise ValueError(f"data.split {split!r} is not train, validation or test")
    votes: list[dict[str, Any]] = []
    fallback: str | None = None
    for p in task.get("predictions") or []:
        label = _choice(p.get("result"), labels)
        version = str(p.get("model_version") or "")
        if version == "labelfabric":
            fallback = label
            continue
        agent, _, agent_version = version.partition("@")
        name = f"{AGENT_PREFIX}:{agent or 'model'}"
        votes.append({"job_id": job_id, "item_id": item_id, "agent": name,
                      "agent_version": agent_version or version, "dataset": dataset,
                      "label": label, "confidence": float(p.get("score") or 0.0),
                      "rationale": f"Label Studio prediction {version or '(no model_version)'}",
                      "input_sha256": item_id, "chunk": 0, "latency_ms": 0.0})  # fmt: skip
    reviews: list[dict[str, Any]] = []
    for k, a in enumerate(task.get("annotations") or [], start=1):
        if a.get("was_cancelled"):
            continue
        label = _choice(a.get("result"), labels)
        reviews.append({"review_key": f"{job_id}:{n}:{k}", "dataset": dataset,
                        "item_id": item_id, "job_id": job_id, "workflow_id": job_id,
                        "reviewer": _who(a.get("completed_by")), "label": label,
                        "note": "imported from Label Studio", "via": "label_studio",
                        "accepted": True, "submitted_at": _when(a.get("created_at"))})  # fmt: skip
    seen.add(item_id)
    redactions, sensitivity = mark(text) if mark is not None else ([], "normal")
    out.items.append({"dataset": dataset, "id": item_id, "text": text, "source_uri": uri,
                      "source_line": n, "split": split, "sensitivity": sensitivity,
                      "redactions": redactions, "created_at": datetime.now(UTC)})  # fmt: skip
    out.votes += votes
    out.reviews += reviews
    out.agents.update(v["agent"] for v in votes)
    if reviews:
        last = max(reviews, key=lambda r: r["submitted_at"])
        out.labels[item_id] = (last["label"], sorted({r["reviewer"] for r in reviews}))
    elif fallback is not None:
        out.labels[item_id] = (fallback, [])


def drop_leaks(
    parsed: Parsed, placed: dict[str, list[tuple[str, str | None]]], dataset: str
) -> None:
    """Refuse the tasks whose content would leak (ingest's rule: another split of the dataset,
    or a held-out-related dataset), with all their votes, reviews and label."""
    keep = []
    for item in parsed.items:
        rec = Record(item["source_line"], item["id"], item["text"], None, item["split"])
        reason = leak(rec, {}, placed.get(item["id"], []), dataset)
        if reason is None:
            keep.append(item)
            continue
        parsed.refused.append({"job_id": "", "line": item["source_line"],  # caller sets it
                               "reason": f"task {item['source_line']}: {reason}",
                               "excerpt": item["text"][:200]})  # fmt: skip
        parsed.labels.pop(item["id"], None)
        parsed.votes = [v for v in parsed.votes if v["item_id"] != item["id"]]
        parsed.reviews = [r for r in parsed.reviews if r["item_id"] != item["id"]]
    parsed.items = keep
