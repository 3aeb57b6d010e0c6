"""The CLI's output without servers (issue 16): tables that fit 80 columns (or become blocks,
never cut), `--json` with nothing else on stdout, refusals that name the fix before a job
starts, `policy show` whole, and `explain`'s reviews nested under their workflow."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from policy_rules.engine import Policy
from tests.helpers import cli, write_jsonl
from worker.settings import PROJECT_ROOT, Settings

ELLIPSIS = "…"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def narrow_console() -> Any:
    """The CLI's console, 80 columns into a buffer, as piped."""
    from rich.console import Console

    from worker.cli import console as module

    saved = module._Console._made
    module._Console._made = Console(file=io.StringIO(), width=80)
    yield module._Console._made
    module._Console._made = saved


def test_a_table_fits_by_wrapping_text_and_never_cuts_an_id(narrow_console: Any) -> None:
    from worker.cli.tables import Col, show

    rows = [{"id": "0123456789abcdef0123", "at": "2025-01-02 03:04:05",
             "note": "a long explanation " * 6}]  # fmt: skip
    show("t", [Col("id"), Col("at"), Col("note", wrap=True)], rows)
    out = narrow_console.file.getvalue()
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "0123456789abcdef0123" in out and "2025-01-02 03:04:05" in out and ELLIPSIS not in out


def test_a_table_too_wide_for_the_console_becomes_blocks(narrow_console: Any) -> None:
    from worker.cli.tables import Col, show

    key = "s3://labelfabric-snapshots/models/sentiment/tfidf_logreg/0123456789abcdef.pkl"
    rows = [{"agent": "tfidf_logreg", "version": "0123456789abcdef", "artifact": key}]
    show("agents", [Col("agent"), Col("version"), Col("artifact")], rows)
    out = narrow_console.file.getvalue()
    assert f"artifact  {key}" in out and "version   0123456789abcdef" in out
    assert ELLIPSIS not in out


def test_widths_share_the_room_without_splitting_a_word() -> None:
    from worker.cli.tables import Col, widths

    cols = [Col("a"), Col("b", wrap=True)]
    assert widths(cols, [["x" * 10, "word " * 20]], 80) == [10, 80 - 7 - 10]
    assert widths(cols, [["x" * 70, "unsplittable" * 2]], 80) is None


def test_job_start_refuses_a_typo_before_anything_starts(
    settings: Settings, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "x.jsonl", ["fine"])
    base = ["job", "start", str(source), "--dataset", "d"]
    cases = {
        ("--task", "sentimnet"): "unknown task 'sentimnet' (did you mean 'sentiment'?)",
        ("--task", "sentiment", "--policy", "route_defualt"): (
            "unknown policy 'route_defualt' (did you mean 'route_default'?)"
        ),
        ("--task", "sentiment", "--policy", "quality_default"): (
            "quality_default@2 is a gate policy: a job needs a routing policy"
        ),
        ("--task", "sentiment", "--agent", "keyword"): (
            "task 'sentiment' has no agent 'keyword' (did you mean 'keywords'?)"
        ),
    }
    for args, message in cases.items():
        out = cli(settings, *base, *args, width=80)
        assert out.returncode == 1 and "started" not in out.stdout, out.stdout
        assert message in " ".join(out.stdout.split()), out.stdout
    for source_, message in [
        (str(tmp_path / "missing.jsonl"), "source not found"),
        (str(tmp_path), "is a folder"),
        ("s3://bucket", "malformed S3 uri 's3://bucket'"),
        (str(write_jsonl(tmp_path / "x.txt", ["t"])), "unsupported source format '.txt'"),
    ]:
        out = cli(settings, "job", "start", source_, "--dataset", "d", "--task", "sentiment")
        assert out.returncode == 1 and message in " ".join(out.stdout.split()), out.stdout


def test_policy_show_prints_every_rule_whole_at_80_columns(settings: Settings) -> None:
    out = cli(settings, "policy", "show", "route_default", width=80)
    assert out.returncode == 0, out.stdout
    text = " ".join(out.stdout.split())
    policy = Policy.load(PROJECT_ROOT / "policy_rules", "route_default")
    for rule in policy.rules:
        assert f"{rule.id} -> {rule.outcome}" in text
        assert " ".join(rule.when.split()) in text, rule.when  # whole, only wrapped
    assert "ReviewRules(" not in out.stdout and "reviewers_needed" in out.stdout
    assert all(len(line) <= 80 for line in out.stdout.splitlines()), out.stdout
    doc = json.loads(cli(settings, "policy", "show", "route_default", "--json").stdout)
    assert [r["when"] for r in doc["rules"]] == [r.when for r in policy.rules]
    assert doc["review"]["reviewers_needed"] >= 1 and doc["sha256"] == policy.ref.sha256


def test_task_list_at_80_columns_and_json(settings: Settings) -> None:
    out = cli(settings, "task", "list", width=80)
    assert out.returncode == 0 and ELLIPSIS not in out.stdout
    for name in ("sentiment", "digits", "tfidf_logreg"):
        assert name in out.stdout
    doc = json.loads(cli(settings, "task", "list", "--json").stdout)
    assert {t["task"] for t in doc["tasks"]} >= {"sentiment", "digits"}


def test_explain_prints_each_review_once_under_its_workflow(narrow_console: Any) -> None:
    from worker.cli.explain import _tree

    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    wid = "review:ds:abc"
    task = {"workflow_id": wid, "state": "done", "label": "positive", "rule": "unsure",
            "policy": "route_default@2", "opened_at": at, "closed_at": at}  # fmt: skip
    review = {"reviewer": "alice", "label": "positive", "note": "", "at": at, "via": "update",
              "accepted": True, "reason": None, "workflow_id": wid}  # fmt: skip
    report = {
        "dataset": "ds", "item_id": "abc", "content_sha256": "abc" * 20,
        "content_verified": True, "text": "t", "source": {"uri": "/x.jsonl", "line": 1},
        "split": None, "sensitivity": "normal", "redactions": [], "decisions": [],
        "imported_votes": [], "labels": [], "snapshots": [],
        # The same workflow id reused by a second job: one node, each review once.
        "review_tasks": [task | {"job_id": "label:ds:j1"}, task | {"job_id": "label:ds:j2"}],
        "reviews": [review, review | {"reviewer": "bob", "accepted": False, "reason": "late",
                                      "workflow_id": "review:ds:other"}],
    }  # fmt: skip
    narrow_console.print(_tree(report))
    lines = narrow_console.file.getvalue().splitlines()
    heads = [i for i, line in enumerate(lines) if line.rstrip().endswith(f"review {wid}")]
    alice = [i for i, line in enumerate(lines) if "alice said positive" in line]
    assert len(heads) == 1 and len(alice) == 1 and alice[0] > heads[0], lines
    assert sum("label:ds:j" in line for line in lines) == 2
    bob = next(i for i, line in enumerate(lines) if "bob said" in line)
    assert lines[bob - 1].rstrip().endswith("review review:ds:other")


def test_progress_shows_only_on_a_terminal(narrow_console: Any) -> None:
    from worker.cli.tables import interactive, status

    assert not interactive()
    with status("working…") as say:
        say("still working…")
    assert narrow_console.file.getvalue() == ""
