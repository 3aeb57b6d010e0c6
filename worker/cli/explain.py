"""`labelfabric explain ITEM`: why an item has its label, from source line to every snapshot."""

from __future__ import annotations

import hashlib
import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.tree import Tree


from worker.cli import group
from worker.cli.console import console, fail, in_catalog

commands = group()  # top-level commands: labelfabric explain


@commands.command("explain")
def explain(
    item: Annotated[str, typer.Argument(help="Item id (its content sha256), or a prefix.")],
    dataset: Annotated[str | None, typer.Option(help="The dataset, when several hold it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The whole chain for one item: source, votes, aggregation, policy and rule, reviews,
    label history, and every snapshot version that holds it (with S3 version ids)."""

    import asyncio

    from worker.settings import Settings

    if len(item) < 8:
        raise fail("give at least 8 characters of the item id")
    settings = Settings()
    report = asyncio.run(in_catalog(settings, _explain, item.lower(), dataset))
    if as_json:
        sys.stdout.write(json.dumps(report, default=str, ensure_ascii=False, indent=2) + "\n")
        return
    console.print(_tree(report))


async def _reason(conn: Any, reason: str) -> str:
    """A job's reason in words: a relabel names its drift check, metrics and rule."""
    from catalog import db

    if not reason.startswith("drift:"):
        return reason
    check_id = reason.removeprefix("drift:")
    check = await db.check_of(conn, check_id)
    if check is None:
        return f"relabelled after drift check {check_id} (no longer recorded)"
    shown = ", ".join(
        f"{k} = {v:.3f}"
        for k, v in check.metrics.items()
        if isinstance(v, float) and k != "window.items"
    )
    return (
        f"relabelled after drift check {check_id} ({shown}; {check.policy_id}@"
        f"{check.policy_version} rule {check.rule_id})"
    )


async def _explain(conn: Any, prefix: str, dataset: str | None) -> dict[str, Any]:
    from catalog import datasets, db

    found = await datasets.item_datasets(conn, prefix)
    if dataset is not None:
        found = [f for f in found if f[0] == dataset]
    ids = sorted({i for _, i in found})
    if not found:
        where = f" in dataset {dataset}" if dataset else ""
        if dataset is not None:
            from catalog import job_report
            from worker.cli.checks import did_you_mean

            known = await job_report.known_datasets(conn)
            if dataset not in known:
                where = f": no dataset {dataset!r}{did_you_mean(dataset, known)}"
        raise fail(f"no item {prefix}…{where}")
    if len(ids) > 1:
        raise fail(f"{prefix}… matches {len(ids)} items: give more of the id")
    if len(found) > 1:
        names = ", ".join(d for d, _ in found)
        raise fail(f"item {ids[0][:12]} is in several datasets ({names}): add --dataset")
    name, item_id = found[0]
    h = await datasets.item_history(conn, name, item_id)
    item = h["item"]
    learned = await db.learned_from(conn, {(v.agent, v.agent_version) for v in h["votes"]})
    why: dict[str, str] = {}
    for d in h["decisions"]:
        job = await db.job(conn, d.job_id)
        if job is not None and job.reason:
            why[d.job_id] = await _reason(conn, job.reason)
    votes_by_job: dict[str, list[dict[str, Any]]] = {}
    for v in h["votes"]:
        votes_by_job.setdefault(v.job_id, []).append(
            {"agent": v.agent, "version": v.agent_version, "label": v.label,
             "confidence": v.confidence, "rationale": v.rationale, "latency_ms": v.latency_ms,
             "input_sha256": v.input_sha256,
             "learned": learned.get((v.agent, v.agent_version))}
        )  # fmt: skip
    return {
        "dataset": name,
        "item_id": item_id,
        "content_sha256": item_id,
        "content_verified": hashlib.sha256(item.text.encode()).hexdigest() == item_id,
        "text": item.text,
        "source": {"uri": item.source_uri, "line": item.source_line},
        "split": item.split,
        "sensitivity": item.sensitivity,
        "redactions": list(item.redactions),
        "decisions": [
            {
                "job_id": d.job_id,
                "workflow_id": d.job_id,
                "reason": why.get(d.job_id),
                "decided_at": d.decided_at,
                "votes": votes_by_job.get(d.job_id, []),
                "aggregator": d.aggregator,
                "ensemble_label": d.ensemble_label,
                # For dawid_skene the posterior of the label, else the vote confidence.
                "ensemble_confidence": d.ensemble_confidence,
                "policy": {
                    "id": d.policy_id,
                    "version": d.policy_version,
                    "sha256": d.policy_sha256,
                },
                "rule": d.rule_id,
                "outcome": d.outcome,
                "error": d.error,
            }  # fmt: skip
            for d in h["decisions"]
        ],
        # Votes recorded without a routing decision: imported predictions (Label Studio).
        "imported_votes": [
            {"job_id": job_id, "votes": votes}
            for job_id, votes in votes_by_job.items()
            if job_id not in {d.job_id for d in h["decisions"]}
        ],
        "review_tasks": [
            {
                "workflow_id": t.workflow_id,
                "job_id": t.job_id,
                "state": t.state,
                "rule": t.rule_id,
                "policy": f"{t.policy_id}@{t.policy_version}",
                "opened_at": t.opened_at,
                "closed_at": t.closed_at,
                "label": t.label,
                "outcome": t.outcome,
            }
            for t in h["review_tasks"]
        ],  # fmt: skip
        "reviews": [
            {
                "reviewer": r.reviewer,
                "label": r.label,
                "note": r.note,
                "at": r.submitted_at,
                "via": r.via,
                "accepted": r.accepted,
                "reason": r.reason,
                "workflow_id": r.workflow_id,
                "gold_label": r.gold_label,
                "correct": r.correct,
            }
            for r in h["reviews"]
        ],  # fmt: skip
        "labels": [
            {
                "label": lbl.label,
                "source": lbl.source,
                "job_id": lbl.job_id,
                "reviewers": list(lbl.reviewers),
                "at": lbl.created_at,
                "current": lbl.is_current,
                "supersedes": lbl.supersedes_id,
                "id": lbl.id,
            }
            for lbl in h["labels"]
        ],  # fmt: skip
        "snapshots": [
            {
                "version": s.version,
                "label": label,
                "s3_key": s.s3_key,
                "s3_version_id": s.s3_version_id,
                "manifest_version_id": s.manifest_version_id,
                "content_sha256": s.content_sha256,
                "workflow_id": s.job_id,
                "at": s.created_at,
                "training_ready": s.training_ready,
            }
            for s, label in datasets.versions_containing(h["changes"], h["snapshots"])
        ],  # fmt: skip
    }


def _redactions(found: list[Any]) -> str:
    """PII spans as `TYPE start-end`, in text order (the values are never stored)."""
    shown = [
        f"{x.get('type')} {x.get('start')}-{x.get('end')}" if isinstance(x, dict) else str(x)
        for x in found
    ]
    return ", ".join(shown) if shown else "none"


def _tree(r: dict[str, Any]) -> Tree:
    from rich.markup import escape
    from rich.tree import Tree

    ok = "verified" if r["content_verified"] else "MISMATCH: the stored text does not hash to it"
    root = Tree(f"[bold]{r['dataset']}[/] item {r['item_id']}")
    src = root.add(f"source {escape(r['source']['uri'])}, line {r['source']['line']}")
    src.add(f"content sha256 {r['content_sha256'][:16]}… ({ok})")
    src.add(
        escape(
            f"split {r['split'] or 'pool'}; sensitivity {r['sensitivity']}; "
            f"redactions {_redactions(r['redactions'])}"
        )
    )
    src.add(escape(f"text: {r['text'][:120]}"))
    for d in r["decisions"]:
        p = d["policy"]
        node = root.add(f"job {escape(d['job_id'])} at {d['decided_at']:%Y-%m-%d %H:%M:%S}")
        if d.get("reason"):
            node.add(escape(d["reason"]))
        votes = node.add("votes")
        for v in d["votes"]:
            vote = votes.add(escape(f"{v['agent']}@{v['version'][:12]}: "
                                    f"{v['label'] or 'abstained'} ({v['confidence']:.2f}) "
                                    f"{v['rationale'][:80]}"))  # fmt: skip
            if v.get("learned"):
                on, gate = v["learned"]["trained_on"], v["learned"]["gate"]
                vote.add(escape(f"retrained on {on['seed']} + {on['human_labels']} human "
                                f"labels; {v['learned']['state']} by {gate['policy']}@"
                                f"{gate['version']} rule {gate['rule']}"))  # fmt: skip
        node.add(escape(f"{d['aggregator']}: {d['ensemble_label'] or '-'} "
                        f"(confidence {d['ensemble_confidence']:.3f})"))  # fmt: skip
        node.add(escape(f"policy {p['id']}@{p['version']} ({p['sha256'][:12]}), rule "
                        f"{d['rule']} -> {d['outcome']}"
                        + (f" (error: {d['error']})" if d["error"] else "")))  # fmt: skip
    for imp in r["imported_votes"]:
        node = root.add(escape(f"imported by {imp['job_id']}"))
        for v in imp["votes"]:
            node.add(escape(f"{v['agent']}@{v['version'][:12]}: {v['label']} "
                            f"({v['confidence']:.2f})"))  # fmt: skip
    _reviews(root, r)
    hist = root.add("label history")
    for lbl in r["labels"]:
        mark = " (current)" if lbl["current"] else ""
        who = f" by {', '.join(lbl['reviewers'])}" if lbl["reviewers"] else ""
        hist.add(escape(f"{lbl['at']:%Y-%m-%d %H:%M:%S} {lbl['label']} from {lbl['source']}"
                        f"{who}, {lbl['job_id']}{mark}"))  # fmt: skip
    snaps = root.add("in snapshot versions")
    for s in r["snapshots"]:
        snaps.add(escape(f"{r['dataset']}@{s['version']} as {s['label']}: s3 version "
                         f"{s['s3_version_id']}, by {s['workflow_id']}"))  # fmt: skip
    return root


def _reviews(root: Tree, r: dict[str, Any]) -> None:
    """One node per review workflow, its tasks (one per job that routed the item there) and
    under it each review once, oldest first; a review whose workflow has no task recorded
    gets a node of its own."""
    from rich.markup import escape

    nodes: dict[str, Tree] = {}
    for t in r["review_tasks"]:
        node = nodes.get(t["workflow_id"])
        if node is None:
            node = nodes[t["workflow_id"]] = root.add(escape(f"review {t['workflow_id']}"))
        node.add(escape(f"{t['job_id']}: {t['state']}, label {t['label'] or '-'} (rule "
                        f"{t['rule']}, {t['policy']})"))  # fmt: skip
    for rv in r["reviews"]:
        node = nodes.get(rv["workflow_id"])
        if node is None:
            node = nodes[rv["workflow_id"]] = root.add(escape(f"review {rv['workflow_id']}"))
        verdict = "accepted" if rv["accepted"] else f"refused: {rv['reason']}"
        node.add(escape(f"{rv['at']:%Y-%m-%d %H:%M:%S} {rv['reviewer']} said {rv['label']} "
                        f"({verdict}) {rv['note']}".rstrip()))  # fmt: skip
