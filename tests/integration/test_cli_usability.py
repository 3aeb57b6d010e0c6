"""The CLI as a new user meets it (issue 16), on the real stack: one state dir wherever you
stand, tables at 80 columns and `--json`, errors that name the fix, `job show`, and
commands that leave nothing behind (an empty export, an empty snapshot called ready)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from catalog import db
from tests.helpers import cli, settings_env, write_jsonl
from worker.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.slow

NARROW = 80
ELLIPSIS = "…"


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


def review_workflows_end(settings: Settings, job_id: str, wait_s: float = 60) -> bool:
    """Whether every ReviewItem the job opened has closed (waits up to `wait_s`)."""
    from temporalio.client import WorkflowExecutionStatus

    from worker.temporal_client import connect

    query = "SELECT DISTINCT workflow_id FROM review_task WHERE job_id = :j AND state <> 'queued'"
    ids = [r[0] for r in sql(settings, query, j=job_id)]

    async def running() -> list[str]:
        client = await connect(settings)
        out = []
        for wid in ids:
            try:
                desc = await client.get_workflow_handle(wid).describe()
            except Exception:  # never started (it was still waiting): nothing runs
                continue
            if desc.status == WorkflowExecutionStatus.RUNNING:
                out.append(wid)
        return out

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not asyncio.run(running()):
            return True
        time.sleep(0.5)
    return False


def narrow(settings: Settings, *args: str) -> str:
    """`labelfabric ARGS` at 80 columns, as piped: its stdout, checked to fit."""
    out = cli(settings, *args, width=NARROW)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ELLIPSIS not in out.stdout, out.stdout
    return out.stdout


def table_lines_fit(stdout: str) -> None:
    """Every line of a table (box drawing) fits 80 columns."""
    for line in stdout.splitlines():
        if line[:1] in "┏┃┡│└":
            assert len(line) <= NARROW, line


def process(settings: Settings, *args: str, env: dict[str, str], cwd: Path) -> Any:
    """The real `labelfabric` in `cwd` with `env` (the state dir is found, not given)."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=env | {"PYTHONPATH": str(PROJECT_ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


# --- 3. one state dir wherever you stand --------------------------------------------------


def test_status_and_up_from_another_directory_find_the_running_stack(
    stack: Settings, tmp_path: Path
) -> None:
    from worker.home import write_pointer

    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    xdg = tmp_path / "state"
    env = {k: v for k, v in settings_env(stack).items() if k != "LABELFABRIC_HOME"}
    env["XDG_STATE_HOME"] = str(xdg)

    # Nothing to find: status says which state dir it looked at and how to point elsewhere.
    lost = process(stack, "status", env=env, cwd=elsewhere)
    assert lost.returncode == 1
    said = " ".join(lost.stdout.split())
    assert f"state dir: {elsewhere / '.labelfabric'}" in said
    assert "LABELFABRIC_HOME=DIR uses another" in said and "does not exist" in said

    # `up` wrote the pointer (as it does): status from anywhere finds that stack.
    write_pointer(stack.home_dir, env)
    found = process(stack, "status", env=env, cwd=elsewhere)
    assert found.returncode == 0, found.stdout + found.stderr
    assert f"state dir: {stack.home_dir} (the stack `labelfabric up` started last" in found.stdout
    status = json.loads(process(stack, "status", "--json", env=env, cwd=elsewhere).stdout)
    assert status["home"] == str(stack.home_dir) and all(p["answers"] for p in status["parts"])

    # `up` for another state dir on the same ports: the port's holder and its state dir.
    other = env | {"LABELFABRIC_HOME": str(tmp_path / "second")}
    up = process(stack, "up", env=other, cwd=elsewhere)
    assert up.returncode == 1
    said = " ".join(up.stdout.split())
    assert "already in use by pid" in said and f"state dir {stack.home_dir}" in said, said
    assert f"use that stack with LABELFABRIC_HOME={stack.home_dir}" in said


# --- 4, 5, 6, 7. a job at 80 columns; job show; refusals before the start ------------------


@pytest.fixture(scope="module")
def shown_job(
    stack: Settings, cli_worker: None, gold_rows: list[dict[str, str]], tmp_path_factory: Any
) -> tuple[str, str, str]:
    """A finished job with two records refused at ingest; (dataset, workflow id, stdout)."""
    folder = tmp_path_factory.mktemp("show")
    texts = [r["text"] for r in gold_rows[600:640]]
    source = write_jsonl(folder / "items.jsonl", texts, extra_lines=[b"{not json", b'{"x": 1}'])
    dataset = f"sh{uuid.uuid4().hex[:6]}"
    out = cli(stack, "job", "start", str(source), "--dataset", dataset, "--task", "sentiment",
              "--job", "j1", "--wait", width=NARROW)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return dataset, f"label:{dataset}:j1", out.stdout


def test_job_start_at_80_columns_keeps_links_and_ids_whole(
    stack: Settings, shown_job: tuple[str, str, str]
) -> None:
    dataset, wid, stdout = shown_job
    link = f"{stack.temporal_ui_url}/namespaces/{stack.temporal_namespace}/workflows/{wid}"
    assert any(line.strip().endswith(link) for line in stdout.splitlines()), stdout
    version = sql(stack, "SELECT s3_version_id FROM snapshot WHERE dataset = :d", d=dataset)[0][0]
    assert any(version in line for line in stdout.splitlines()), stdout
    # Piped: no progress bar, nothing but the lines and the summary.
    assert "━" not in stdout and ELLIPSIS not in stdout
    assert f"labelfabric job show {wid}" in stdout  # where the refused records are


def test_job_show_counts_phases_and_refused_records(
    stack: Settings, shown_job: tuple[str, str, str]
) -> None:
    dataset, wid, _ = shown_job
    out = cli(stack, "job", "show", wid, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["job_id"] == wid and report["status"] == "completed"
    assert report["counts"]["items"] == 40 and report["counts"]["refused"] == 2
    c = report["counts"]
    assert c["auto_accept"] + c["human_review"] + c["quarantine"] + c["reject"] == 40
    assert [r["line"] for r in report["refused"]] == [41, 42]
    assert all(r["reason"] for r in report["refused"]) and report["refused_total"] == 2
    assert report["workflow"]["status"] == "completed"
    phases = [p["activity"] for p in report["phases"]]
    assert phases[:2] == ["prepare_job", "ingest"] and "label_chunk" in phases, phases
    assert "snapshot" in phases and all(p["seconds"] is not None for p in report["phases"])

    # The short name with --dataset, or alone when one job has it; the table at 80 columns.
    table = narrow(stack, "job", "show", "j1", "--dataset", dataset)
    table_lines_fit(table)
    assert "refused at ingest: 2 record(s)" in table and "prepare_job" in table
    for r in report["refused"]:
        assert re.search(rf"│\s+{r['line']} │", table), table
    typo = cli(stack, "job", "show", f"label:{dataset}:j2")
    assert typo.returncode == 1 and f"did you mean 'label:{dataset}:j1'" in typo.stdout


def test_job_show_of_a_job_refused_before_the_catalog_had_it(
    stack: Settings, cli_worker: None, tmp_path: Path
) -> None:
    from temporalio.client import WorkflowFailureError

    from activities.payloads import LabelDatasetInput
    from worker.temporal_client import connect

    source = write_jsonl(tmp_path / "x.jsonl", ["fine"])
    wid = f"label:raw{uuid.uuid4().hex[:6]}:j1"

    async def raw_start() -> None:  # as `temporal workflow start` would: no client checks
        client = await connect(stack)
        inp = LabelDatasetInput(dataset=wid.split(":")[1], source=str(source), task="nosuch")
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow("LabelDataset", inp, id=wid, task_queue=stack.task_queue)

    asyncio.run(raw_start())
    report = json.loads(cli(stack, "job", "show", wid, "--json").stdout)
    assert report["status"] == "not in the catalog" and report["workflow"]["status"] == "failed"
    assert "unknown task 'nosuch'" in report["workflow"]["failure"]
    shown = cli(stack, "job", "show", wid, width=NARROW)
    said = " ".join(shown.stdout.split())
    assert shown.returncode == 0 and "failed: " in said and "unknown task 'nosuch'" in said
    assert "prepare_job" in said and "items" not in said


def test_job_start_refuses_bad_names_before_anything_starts(
    stack: Settings, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "x.jsonl", ["fine"])
    base = ["job", "start", str(source), "--dataset", "typos"]
    task = cli(stack, *base, "--task", "sentimnet")
    assert task.returncode == 1 and "started" not in task.stdout
    assert "did you mean 'sentiment'?" in " ".join(task.stdout.split())
    policy = cli(stack, *base, "--task", "sentiment", "--policy", "route_defualt")
    assert policy.returncode == 1 and "did you mean 'route_default'?" in " ".join(
        policy.stdout.split()
    )
    s3 = cli(stack, "job", "start", "s3://bucket-only", "--dataset", "typos", "--task", "sentiment")
    assert s3.returncode == 1 and "malformed S3 uri" in s3.stdout
    assert not sql(stack, "SELECT id FROM job WHERE dataset = 'typos'")


# --- 4. list commands at 80 columns, and --json ----------------------------------------------


def test_review_list_at_80_columns_and_why_a_reviewer_sees_nothing(
    stack: Settings, shown_job: tuple[str, str, str]
) -> None:
    dataset, wid, _ = shown_job
    waiting = sql(stack, "SELECT item_id FROM review_task WHERE job_id = :j AND state <> 'queued'",
                  j=wid)  # fmt: skip
    assert waiting, "the job routed no item to people"
    table = narrow(stack, "review", "list", "--dataset", dataset)
    table_lines_fit(table)
    for (item,) in waiting:
        assert f"│ {item[:12]} │" in table, table
    doc = json.loads(cli(stack, "review", "list", "--dataset", dataset, "--json").stdout)
    assert {r["item_id"] for r in doc["items"]} == {r[0] for r in waiting}
    assert doc["count"] == len(waiting) and set(doc["items"][0]) >= {"workflow_id", "reviewers"}

    # dana (clearance public) is on the task, but every item is `normal`: the list says so.
    dana = cli(stack, "review", "list", "--dataset", dataset, "--reviewer", "dana", width=NARROW)
    said = " ".join(dana.stdout.split())
    assert dana.returncode == 0 and "0 item(s) open for review to dana" in said
    assert "above dana's clearance public" in said and "normal" in said, said
    typo = cli(stack, "review", "list", "--dataset", dataset[:-1] + "x")
    assert "no dataset" in typo.stdout and f"did you mean '{dataset}'" in typo.stdout
    nobody = cli(stack, "review", "list", "--dataset", dataset, "--reviewer", "alise")
    assert "not on the roster" in nobody.stdout and "did you mean 'alice'" in nobody.stdout

    roster = narrow(stack, "review", "list", "--reviewers")
    table_lines_fit(roster)
    for rid in ("alice", "bob", "carol", "dana", "erin"):
        assert rid in roster
    reviewers = json.loads(cli(stack, "review", "list", "--reviewers", "--json").stdout)
    assert {"alice", "dana"} <= {r["reviewer"] for r in reviewers["reviewers"]}


def test_dataset_and_policy_lists_at_80_columns_and_json(
    stack: Settings, shown_job: tuple[str, str, str]
) -> None:
    dataset, _, _ = shown_job
    versions = narrow(stack, "dataset", "versions", dataset)
    rows = sql(stack, "SELECT s3_version_id, created_at FROM snapshot WHERE dataset = :d",
               d=dataset)  # fmt: skip
    for version_id, _ in rows:  # never split across lines
        assert version_id in versions, versions
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", versions)) == len(rows)
    doc = json.loads(cli(stack, "dataset", "versions", dataset, "--json").stdout)
    assert [v["s3_version_id"] for v in doc["versions"]] == [r[0] for r in rows]
    listed = json.loads(cli(stack, "dataset", "list", "--json").stdout)
    assert dataset in {d["dataset"] for d in listed["datasets"]}
    typo = cli(stack, "dataset", "versions", dataset[:-1] + "x")
    assert typo.returncode == 1 and "did you mean" in typo.stdout and f"'{dataset}'" in typo.stdout

    policies = narrow(stack, "policy", "list")
    table_lines_fit(policies)
    assert "route_default" in policies and "quality_default" in policies
    doc = json.loads(cli(stack, "policy", "list", "--json").stdout)
    assert {"route_default", "quality_default"} <= {p["policy"] for p in doc["policies"]}


def test_agent_train_at_80_columns(stack: Settings) -> None:
    out = narrow(stack, "agent", "train", "--task", "sentiment")
    assert re.search(r"s3://\S+/models/sentiment/tfidf_logreg/[0-9a-f]{16}\.pkl", out), out
    assert "(configuration only)" in out
    doc = json.loads(cli(stack, "agent", "train", "--task", "sentiment", "--json").stdout)
    assert {a["agent"] for a in doc["agents"]} == {"keywords", "tfidf_logreg"}


# --- 5. nothing to say is said, not left empty ------------------------------------------------


def test_diff_json_when_nothing_changed_and_an_empty_export_is_refused(
    stack: Settings, shown_job: tuple[str, str, str], tmp_path: Path
) -> None:
    dataset, _, _ = shown_job
    out = cli(stack, "dataset", "diff", f"{dataset}@1", f"{dataset}@1", "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout) == {
        "dataset": dataset, "from": 1, "to": 1, "changes": [],
        "counts": {"added": 0, "removed": 0, "relabelled": 0},
    }  # fmt: skip

    target = tmp_path / "train.jsonl"  # the job's source names no split: no item is in train
    refused = cli(stack, "dataset", "export", f"{dataset}@1", "--split", "train",
                  "--out", str(target))  # fmt: skip
    assert refused.returncode == 1 and "no items in split 'train'" in " ".join(
        refused.stdout.split()
    )
    assert not target.exists() and not list(tmp_path.iterdir())
    target.write_text("kept\n")  # an existing file is not replaced by nothing
    assert cli(stack, "dataset", "export", f"{dataset}@1", "--split", "train",
               "--out", str(target)).returncode == 1  # fmt: skip
    assert target.read_text() == "kept\n"


def test_an_empty_snapshot_is_not_training_ready(
    stack: Settings, cli_worker: None, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "bad.jsonl", [], extra_lines=[b"{broken", b"[1, 2]"])
    dataset = f"em{uuid.uuid4().hex[:6]}"
    out = cli(stack, "job", "start", str(source), "--dataset", dataset, "--task", "sentiment",
              "--wait")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no: the snapshot is empty, nothing to train on" in out.stdout
    (version,) = json.loads(cli(stack, "dataset", "versions", dataset, "--json").stdout)["versions"]
    assert version["items"] == 0 and version["training_ready"] is False
    assert version["gate"]["rule"] == "empty" and version["gate"]["version"] >= 2


# --- 11. explain: each review once, under its workflow -----------------------------------------


def test_explain_nests_each_review_under_its_workflow(
    stack: Settings, shown_job: tuple[str, str, str]
) -> None:
    from tests.helpers import claim

    dataset, wid, _ = shown_job
    (item,) = sql(stack, "SELECT item_id FROM review_task WHERE job_id = :j AND state <> 'queued'"
                  " ORDER BY item_id LIMIT 1", j=wid)[0]  # fmt: skip
    token = claim("alice", task="sentiment")
    done = cli(stack, "review", "submit", item[:12], "--dataset", dataset, "--label", "positive",
               "--note", "once", "--token", token)  # fmt: skip
    assert done.returncode == 0, done.stdout
    tree = cli(stack, "explain", item, "--dataset", dataset).stdout
    lines = tree.splitlines()
    said = [i for i, line in enumerate(lines) if "alice said positive" in line]
    assert len(said) == 1, tree
    head = max(i for i, line in enumerate(lines[: said[0]]) if f"review:{dataset}:" in line)
    indent = len(lines[head]) - len(lines[head].lstrip("│├└─ "))
    assert len(lines[said[0]]) - len(lines[said[0]].lstrip("│├└─ ")) > indent, tree
