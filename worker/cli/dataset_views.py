"""What `labelfabric dataset list | versions | diff` show, as rows (the same for the table and
`--json`), and the message for a dataset name the catalog does not know. No Typer commands
here; the commands in `worker.cli.dataset` import this module when they run."""

from __future__ import annotations

import json
import sys
from typing import Any

from worker.cli.tables import Col, show


def verdict(row: Any) -> str:
    """A snapshot's gate verdict in words: ready, NOT ready (and why), or '-' (no gate)."""
    if row.training_ready is None:
        return "-" if row.item_count else "- (empty)"
    gate = row.gate or {}
    why = f" ({gate.get('policy')}@{gate.get('version')} {gate.get('rule')})" if gate else ""
    return ("ready" if row.training_ready else "NOT ready") + why


def gate_json(row: Any) -> dict[str, Any] | None:
    gate = row.gate or None
    if gate is None:
        return None
    return {k: gate.get(k) for k in ("policy", "version", "outcome", "rule", "error")}


def dataset_rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "dataset": r.dataset,
            "versions": r.versions,
            "newest": r.version,
            "items": r.item_count,
            "at": r.created_at,
            "training_ready": r.training_ready,
            "gate": gate_json(r),
            "verdict": verdict(r),
        }
        for r in rows
    ]


DATASET_COLS = [
    Col("dataset"),
    Col("versions", right=True),
    Col("newest", fmt=lambda v: f"v{v}"),
    Col("items", right=True),
    Col("at"),
    Col("verdict", "gate", wrap=True),
]


def version_rows(rows: list[Any]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        relabel = (r.reason or "").startswith("drift:")
        out.append(
            {
                "version": r.version,
                "at": r.created_at,
                "items": r.item_count,
                "labels": dict(r.label_distribution or {}),
                "training_ready": r.training_ready,
                "gate": gate_json(r),
                "verdict": verdict(r),
                "s3_version_id": r.s3_version_id,
                "manifest_version_id": r.manifest_version_id,
                "content_sha256": r.content_sha256,
                "job_id": r.job_id,
                "reason": r.reason,
                "by": r.job_id + (f" (relabel after {r.reason})" if relabel else ""),
            }
        )
    return out


VERSION_COLS = [
    Col("version", "v", right=True),
    Col("at", fmt=lambda v: f"{v:%Y-%m-%d %H:%M:%S}"),
    Col("items", right=True),
    Col("labels", wrap=True, fmt=lambda d: ", ".join(f"{k} {n}" for k, n in d.items())),
    Col("verdict", "gate", wrap=True),
    Col("s3_version_id", "S3 version id"),
    Col("by", wrap=True),
]


async def unknown_dataset(conn: Any, name: str) -> str:
    """'dataset X has no snapshot versions' with a 'did you mean' when a name is close."""
    from catalog import job_report
    from worker.cli.checks import did_you_mean

    known = await job_report.known_datasets(conn)
    if name in known:
        return f"dataset {name} has no snapshot versions yet (its jobs have not finished one)"
    return (
        f"no dataset {name!r}{did_you_mean(name, known)}; `labelfabric dataset list` shows "
        "the datasets"
    )


async def diff_report(
    conn: Any, name: str, va: int, vb: int, limit: int, as_json: bool
) -> dict[str, int]:
    """Print what changed from `va` to `vb`: a table (the first `limit` rows), or with
    `as_json` one JSON document, streamed (`changes` then `counts`; an empty list when
    nothing changed)."""
    from catalog import datasets

    counts = {"added": 0, "removed": 0, "relabelled": 0}
    shown: list[tuple[str, str, str | None, str | None, str, str | None]] = []
    if as_json:
        head = {"dataset": name, "from": va, "to": vb}
        sys.stdout.write(json.dumps(head)[:-1] + ', "changes": [')
    first = True
    async for item_id, before, after, source, job_id in datasets.net_changes(conn, name, va, vb):
        kind = "added" if before is None else "removed" if after is None else "relabelled"
        counts[kind] += 1
        if as_json:
            entry = {
                "item_id": item_id,
                "change": kind,
                "old": before,
                "new": after,
                "source": source,
                "job_id": job_id,
            }
            sys.stdout.write(("\n  " if first else ",\n  ") + json.dumps(entry))
            first = False
        elif len(shown) < limit:
            shown.append((item_id, kind, before, after, source or "", job_id))
    if as_json:
        sys.stdout.write(("" if first else "\n") + f'], "counts": {json.dumps(counts)}}}\n')
        return counts
    if shown:
        who = await datasets.reviewers_of(
            conn, name, [(i, j) for i, _, _, _, s, j in shown if s == "human" and j]
        )
        rows = []
        for item_id, kind, before, after, source, job_id in shown:
            by = f"{source} {job_id or ''}".strip()
            if (item_id, job_id or "") in who:
                by += f" ({', '.join(who[(item_id, job_id or '')])})"
            rows.append(
                {
                    "item": item_id[:12],
                    "change": kind,
                    "labels": f"{before or '-'} -> {after or '-'}",
                    "by": by,
                }
            )
        show(
            f"{name}@{va} -> {name}@{vb}",
            [
                Col("item"),
                Col("change"),
                Col("labels", "old -> new", wrap=True),
                Col("by", wrap=True),
            ],
            rows,
        )
    return counts
