"""Provenance on real jobs: dataset versions, diff, rollback then diff, explain, exports
verified against the content sha256, and the leakage guard across splits and datasets."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from activities.s3 import make_s3_client
from catalog import db
from tests.helpers import cli
from tests.integration.stored import snapshot_bytes
from worker.main import s3_target
from worker.settings import Settings

pytestmark = pytest.mark.slow
SPLITS = ("train", "validation", "test")


def sql(settings: Settings, query: str, **params: Any) -> list[Any]:
    async def run() -> list[Any]:
        engine = db.make_engine(settings.catalog_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(query), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


def source(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def job(settings: Settings, src: Path, dataset: str) -> str:
    out = cli(settings, "job", "start", str(src), "--dataset", dataset, "--task", "sentiment",
              "--policy", "route_default", "--wait")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def diff(settings: Settings, a: str, b: str) -> list[dict[str, Any]]:
    out = cli(settings, "dataset", "diff", a, b, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)  # one document, also when nothing changed
    assert doc["counts"] == {k: sum(c["change"] == k for c in doc["changes"])
                             for k in ("added", "removed", "relabelled")}  # fmt: skip
    return list(doc["changes"])


def current(settings: Settings, dataset: str) -> dict[str, str]:
    rows = sql(settings, "SELECT item_id, label FROM label WHERE dataset = :d AND is_current",
               d=dataset)  # fmt: skip
    return {r[0]: r[1] for r in rows}


def test_versions_diff_rollback_explain_and_exports(
    stack: Settings, cli_worker: None, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    name = f"pv{uuid.uuid4().hex[:6]}"
    first = [{"text": r["text"], "split": SPLITS[i % 3]} for i, r in
             enumerate(gold_rows[1900:1960])]  # fmt: skip
    second = [{"text": r["text"]} for r in gold_rows[1960:2000] + gold_rows[2030:2100]]
    job(stack, source(tmp_path / "a.jsonl", first), name)
    v1 = current(stack, name)
    job(stack, source(tmp_path / "b.jsonl", second), name)
    v2 = current(stack, name)
    assert v1 and len(v2) > len(v1)

    listed = cli(stack, "dataset", "versions", name)
    assert listed.returncode == 0
    snaps = sql(stack, "SELECT version, s3_version_id, item_count FROM snapshot"
                " WHERE dataset = :d ORDER BY version", d=name)  # fmt: skip
    assert [s[0] for s in snaps] == [1, 2] and [s[2] for s in snaps] == [len(v1), len(v2)]
    for _, s3_version, _ in snaps:
        assert s3_version in listed.stdout.replace("\n", "")
    assert name in cli(stack, "dataset", "list").stdout
    manifest = json.loads(cli(stack, "dataset", "show", f"{name}@2").stdout)
    assert manifest["parent"]["version"] == 1 and manifest["item_count"] == len(v2)
    assert manifest["label_distribution"] == {
        k: list(v2.values()).count(k) for k in sorted(set(v2.values()))
    }

    # diff v1 -> v2: exactly the items the second job accepted, all added.
    changes = diff(stack, f"{name}@1", f"{name}@2")
    assert {c["item_id"] for c in changes} == set(v2) - set(v1)
    assert all(c["change"] == "added" and c["new"] == v2[c["item_id"]] for c in changes)
    assert all(c["source"] == "agent" and c["job_id"].startswith("label:") for c in changes)

    # explain an item of the first job: source line, votes, policy rule, both versions.
    item = sorted(v1)[0]
    out = cli(stack, "explain", item[:12], "--dataset", name, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    line = next(i for i, r in enumerate(first, 1) if r["text"] == report["text"])
    assert report["source"] == {"uri": str(tmp_path / "a.jsonl"), "line": line}
    assert report["content_verified"] and report["split"] == first[line - 1]["split"]
    (decision,) = report["decisions"]
    assert {v["agent"] for v in decision["votes"]} == {"keywords", "tfidf_logreg"}
    assert decision["policy"]["id"] == "route_default" and len(decision["policy"]["sha256"]) == 64
    assert decision["outcome"] == "auto_accept" and decision["ensemble_label"] == v1[item]
    assert [s["version"] for s in report["snapshots"]] == [1, 2]
    assert [s["s3_version_id"] for s in report["snapshots"]] == [snaps[0][1], snaps[1][1]]
    assert [lbl["label"] for lbl in report["labels"]] == [v1[item]]
    tree = cli(stack, "explain", item, "--dataset", name)
    assert f"rule {decision['rule']} -> auto_accept" in tree.stdout, tree.stdout

    # rollback to v1: a new version v3 with v1's labels; S3 keeps v2.
    back = cli(stack, "dataset", "rollback", name, "--to", "1", "--reason", "bad second batch")
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"{name}@3: {len(v1)} items" in back.stdout
    assert current(stack, name) == v1
    assert diff(stack, f"{name}@1", f"{name}@3") == []
    removed = diff(stack, f"{name}@2", f"{name}@3")
    assert {c["item_id"] for c in removed} == set(v2) - set(v1)
    assert all(c["change"] == "removed" for c in removed)
    gone = report_of(stack, sorted(set(v2) - set(v1))[0], name)
    assert [s["version"] for s in gone["snapshots"]] == [2]
    audit = sql(stack, "SELECT payload FROM audit_event WHERE kind = 'dataset_rollback'"
                " AND subject = :s", s=f"dataset:{name}")  # fmt: skip
    assert audit[0][0]["to"] == 1 and audit[0][0]["reason"] == "bad second batch"

    # exports of v3: jsonl by split, parquet, Label Studio; each verified.
    train = tmp_path / "train.jsonl"
    out = cli(stack, "dataset", "export", f"{name}@3", "--split", "train", "--out", str(train))
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [json.loads(x) for x in train.read_text().splitlines()]
    want = {i for i in v1 if next(r for r in first if _id(r["text"]) == i)["split"] == "train"}
    assert {r["id"] for r in rows} == want and all(r["split"] == "train" for r in rows)
    parquet = tmp_path / "v3.parquet"
    assert cli(stack, "dataset", "export", f"{name}@3", "--format", "parquet",
               "--out", str(parquet)).returncode == 0  # fmt: skip
    table = pq.read_table(parquet).to_pylist()
    assert {r["id"]: r["label"] for r in table} == v1
    studio = tmp_path / "v3.json"
    assert cli(stack, "dataset", "export", f"{name}@3", "--format", "label-studio",
               "--out", str(studio)).returncode == 0  # fmt: skip
    tasks = json.loads(studio.read_text())
    assert len(tasks) == len(v1)
    agents = [p for t in tasks for p in t["predictions"] if p["model_version"] != "labelfabric"]
    assert agents and all("@" in p["model_version"] and 0 <= p["score"] <= 1 for p in agents)
    # To S3: byte-identical to the stored version (a full JSONL export is the snapshot).
    s3 = make_s3_client(s3_target(stack))
    key = f"exports/{name}@3.jsonl"
    out = cli(stack, "dataset", "export", f"{name}@3", "--out", f"s3://{stack.s3_bucket}/{key}")
    assert out.returncode == 0, out.stdout + out.stderr
    v3 = sql(stack, "SELECT s3_key, s3_version_id FROM snapshot WHERE dataset = :d"
             " AND version = 3", d=name)[0]  # fmt: skip
    stored = snapshot_bytes(stack, v3[0], v3[1])  # in clear (sealed at rest)
    assert s3.get_object(Bucket=stack.s3_bucket, Key=key)["Body"].read() == stored
    exports = sql(stack, "SELECT count(*) FROM audit_event WHERE kind = 'export'"
                  " AND subject = :s", s=f"{name}@3")  # fmt: skip
    assert exports[0][0] == 4
    # A bucket that does not exist: the S3 answer, not a traceback.
    out = cli(stack, "dataset", "export", f"{name}@3", "--out", "s3://no-such-bucket-lf/x.jsonl")
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "NoSuchBucket" in out.stdout, out.stdout + out.stderr

    # A stored version that no longer matches its catalog sha256 is refused, nothing written.
    real = sql(stack, "SELECT content_sha256 FROM snapshot WHERE dataset = :d AND version = 1",
               d=name)[0][0]  # fmt: skip
    sql(stack, "UPDATE snapshot SET content_sha256 = :s WHERE dataset = :d AND version = 1",
        s="0" * 64, d=name)  # fmt: skip
    try:
        bad = tmp_path / "bad.jsonl"
        out = cli(stack, "dataset", "export", f"{name}@1", "--out", str(bad))
        assert out.returncode == 1 and "content sha256 mismatch" in out.stdout.replace("\n", " ")
        assert not bad.exists() and not list(tmp_path.glob(".bad.jsonl.*"))
    finally:
        sql(stack, "UPDATE snapshot SET content_sha256 = :s WHERE dataset = :d AND version = 1",
            s=real, d=name)  # fmt: skip


def _id(text_: str) -> str:
    import hashlib

    return hashlib.sha256(text_.encode()).hexdigest()


def report_of(settings: Settings, item: str, dataset: str) -> dict[str, Any]:
    out = cli(settings, "explain", item, "--dataset", dataset, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return dict(json.loads(out.stdout))


def test_leakage_across_splits_and_held_out_datasets(
    stack: Settings, cli_worker: None, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    texts = [r["text"] for r in gold_rows[2400:2420]]
    main, held = f"lk{uuid.uuid4().hex[:6]}", f"lkh{uuid.uuid4().hex[:6]}"
    # The same content twice in one source, in two splits: the second is quarantined.
    rows = [{"text": t, "split": "train"} for t in texts[:10]]
    rows.append({"text": texts[0], "split": "test"})
    out = job(stack, source(tmp_path / "main.jsonl", rows), main)
    refused = sql(stack, "SELECT r.line, r.reason FROM rejected_record r JOIN job j"
                  " ON j.id = r.job_id WHERE j.dataset = :d", d=main)  # fmt: skip
    assert refused == [(11, "content also in split 'train' earlier in this source (leakage)")]
    assert "refused at ingest" in out

    # A later source naming another split for an item already in the catalog: quarantined.
    again = [{"text": texts[1], "split": "validation"}, {"text": texts[10], "split": "test"}]
    job(stack, source(tmp_path / "again.jsonl", again), main)
    reasons = [r[0] for r in sql(stack, "SELECT r.reason FROM rejected_record r JOIN job j"
                                 " ON j.id = r.job_id WHERE j.dataset = :d", d=main)]  # fmt: skip
    assert f"content already in split 'train' of '{main}'; this record says 'validation'" \
        " (leakage)" in reasons  # fmt: skip

    # A held-out set may share nothing with the dataset it is held out for.
    declared = cli(stack, "dataset", "holdout", held, "--of", main, "--reason", "eval set")
    assert declared.returncode == 0, declared.stdout
    job(stack, source(tmp_path / "held.jsonl", [{"text": texts[2]}, {"text": texts[15]}]), held)
    reasons = [r[0] for r in sql(stack, "SELECT r.reason FROM rejected_record r JOIN job j"
                                 " ON j.id = r.job_id WHERE j.dataset = :d", d=held)]  # fmt: skip
    assert reasons == [f"content also in held-out-related dataset '{main}' (train)"]
    items = {r[0] for r in sql(stack, "SELECT id FROM item WHERE dataset = :d", d=held)}
    assert items == {_id(texts[15])}
    assert cli(stack, "dataset", "check", main).returncode == 0

    # Content shared before the relation was declared: `dataset check` reports it.
    other = f"lko{uuid.uuid4().hex[:6]}"
    job(stack, source(tmp_path / "other.jsonl", [{"text": texts[3]}, {"text": texts[19]}]), other)
    assert cli(stack, "dataset", "holdout", other, "--of", main, "--reason", "late").returncode == 0
    check = cli(stack, "dataset", "check", main)
    assert check.returncode == 1 and "1 leak(s)" in check.stdout, check.stdout
    assert _id(texts[3])[:12] in check.stdout and f"{other}:pool" in check.stdout


def test_label_studio_round_trip(
    stack: Settings, cli_worker: None, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    """Export a version as Label Studio JSON, review one task "there", import it into another
    dataset: same labels, predictions back as votes with model_version, the annotation as a
    review with who; a task with a label outside the set is refused by index."""
    name, back = f"ls{uuid.uuid4().hex[:6]}", f"lsb{uuid.uuid4().hex[:6]}"
    job(stack, source(tmp_path / "a.jsonl", [{"text": r["text"]} for r in gold_rows[1800:1860]]),
        name)  # fmt: skip
    labels = current(stack, name)
    studio = tmp_path / "tasks.json"
    assert cli(stack, "dataset", "export", name, "--format", "label-studio",
               "--out", str(studio)).returncode == 0  # fmt: skip
    tasks = json.loads(studio.read_text())
    # Someone corrects the first task in Label Studio; someone else adds a bad one.
    first = tasks[0]
    flipped = "negative" if labels[first["data"]["item_id"]] == "positive" else "positive"
    first["annotations"] = [{
        "completed_by": {"id": 7, "email": "ana@example.org"},
        "created_at": "2026-11-28T10:00:00Z",
        "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                    "value": {"choices": [flipped]}}],
    }]  # fmt: skip
    tasks.append({"data": {"text": "a new review"}, "annotations": [{"result": [
        {"type": "choices", "value": {"choices": ["meh"]}}]}]})  # fmt: skip
    studio.write_text(json.dumps(tasks))

    out = cli(stack, "dataset", "import", str(studio), "--dataset", back, "--task", "sentiment")
    assert out.returncode == 0, out.stdout + out.stderr
    text_out = " ".join(out.stdout.split())
    assert f"refused task {len(tasks)}: label 'meh' is not one of positive, negative" in text_out
    imported = current(stack, back)
    want = dict(labels) | {first["data"]["item_id"]: flipped}
    assert imported == want
    reviews = sql(stack, "SELECT reviewer, label, via FROM review WHERE dataset = :d", d=back)
    assert reviews == [("ana@example.org", flipped, "label_studio")]
    item = first["data"]["item_id"]
    q = ("SELECT agent, agent_version, confidence FROM vote WHERE dataset = :d AND item_id = :i"
         " AND label IS NOT NULL ORDER BY agent")  # fmt: skip
    origin = sql(stack, q, d=name, i=item)
    assert origin  # the job's agents voted on it
    assert sql(stack, q, d=back, i=item) == [(f"label_studio:{a}", v, c) for a, v, c in origin]
    ambiguous = cli(stack, "explain", item)
    assert ambiguous.returncode == 1 and "in several datasets" in ambiguous.stdout
    explained = json.loads(cli(stack, "explain", first["data"]["item_id"], "--dataset", back,
                               "--json").stdout)  # fmt: skip
    assert explained["reviews"][0]["reviewer"] == "ana@example.org"
    assert explained["labels"][-1]["source"] == "import" and explained["snapshots"]
    # Importing the same file again changes nothing, even after someone relabelled an item.
    relabel(stack, back, item, labels[item])
    again = cli(stack, "dataset", "import", str(studio), "--dataset", back, "--task", "sentiment")
    assert again.returncode == 0 and "imported into" in again.stdout and "before" in again.stdout
    assert current(stack, back) == want | {item: labels[item]}
    assert len(sql(stack, "SELECT 1 FROM review WHERE dataset = :d", d=back)) == 1

    # A held-out set takes none of the content of the dataset it is held out for.
    held = f"lsh{uuid.uuid4().hex[:6]}"
    assert cli(stack, "dataset", "holdout", held, "--of", name, "--reason", "t").returncode == 0
    out = cli(stack, "dataset", "import", str(studio), "--dataset", held, "--task", "sentiment")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"content also in held-out-related dataset '{name}'" in " ".join(out.stdout.split())
    assert not sql(stack, "SELECT 1 FROM item WHERE dataset = :d", d=held)


def relabel(settings: Settings, dataset: str, item: str, label: str) -> None:
    async def run() -> None:
        engine = db.make_engine(settings.catalog_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                # As a closed review writes it: the label and the close event that vouches
                # for it (audit verify checks one against the other).
                await db.set_labels(
                    conn, dataset=dataset, job_id="test:relabel", labels={item: label},
                    source="human", reviewers=["t"],
                )  # fmt: skip
                await db.append_audit(
                    conn, key="test:relabel:closed", actor="t", kind="review_done",
                    subject="test:relabel", payload={"label": label, "reviewers": ["t"]},
                )  # fmt: skip
        finally:
            await engine.dispose()

    asyncio.run(run())
