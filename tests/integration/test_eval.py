"""`labelfabric eval --data FILE --task T` end to end on the test stack: calibration on one
slice, a real LabelDataset job on the rest, a report scored against the held-out labels."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from catalog import db
from policy_rules.engine import Policy
from tests.helpers import ThreadWorker, cli
from tests.integration.test_cli_usability import review_workflows_end, sql
from tests.unit.test_calibrate import copy_v1
from worker.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def eval_settings(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The stack, with its own policies folder (eval writes a version) and its own worker."""
    root = tmp_path_factory.mktemp("eval")
    copy_v1(root / "policies" / "route_calibrated")
    local = stack.model_copy(
        update={"policies_dir": root / "policies", "task_queue": f"eval-{uuid.uuid4().hex[:6]}"}
    )
    with ThreadWorker(local):
        yield local


def test_eval_on_a_labeled_file(
    eval_settings: Settings, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    rows = gold_rows[1500:1900]
    data = tmp_path / "mine.jsonl"
    data.write_text(
        "".join(json.dumps({"review": r["text"], "y": r["label"]}) + "\n" for r in rows)
    )
    out = cli(
        eval_settings,
        "eval",
        "--data",
        str(data),
        "--task",
        "sentiment",
        "--text-field",
        "review",
        "--label-field",
        "y",
        "--target",
        "0.7",  # shown with 95 % confidence on ~120 calibration items
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    folder = eval_settings.home_dir / "eval" / "mine"
    report = json.loads((folder / "report.json").read_text())
    assert report["calibration_items"] + report["items"] == len(rows)
    assert 0.15 < report["calibration_items"] / len(rows) < 0.45
    assert set(report["agents"]) == {"keywords", "tfidf_logreg"}
    assert report["agents"]["tfidf_logreg"]["coverage"] == 1.0
    assert 0.5 < report["aggregator_accuracy"]["majority_vote"] < 1.0
    assert 0 < report["auto_accept_rate"] < 1 and report["review_rate"] > 0
    assert report["auto_accept_rate"] + report["review_rate"] <= 1.0
    # The calibrated version is state (the state dir), not a released version in policies_dir.
    calibrated = Policy.load(eval_settings.eval_policies_dir, report["policy"])
    assert calibrated.params["min_confidence"] == report["threshold"]
    assert calibrated.ref.id == "route_calibrated_eval"
    released = eval_settings.policies_dir / "route_calibrated"
    assert sorted(p.name for p in released.iterdir()) == ["cases.yaml", "v1.yaml"]
    # Its job asks no one: every review it routed is withdrawn, no ReviewItem stays open.
    job = report["job"]
    assert sql(eval_settings, "SELECT count(*) FROM review_task WHERE job_id = :j"
               " AND closed_at IS NULL", j=job)[0][0] == 0  # fmt: skip
    routed = sql(eval_settings, "SELECT count(*) FROM review_task WHERE job_id = :j", j=job)
    assert report["reviews_withdrawn"] == routed[0][0] > 0
    assert review_workflows_end(eval_settings, job)
    assert (folder / "accuracy_vs_auto_accept.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy of auto-accepted" in out.stdout and "Krippendorff" in out.stdout


async def test_eval_on_digits_routes_with_the_calibrated_reliability_model(
    eval_settings: Settings,
) -> None:
    out = cli(eval_settings, "eval", "--dataset", "digits", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((eval_settings.home_dir / "eval" / "digits" / "report.json").read_text())
    acc = report["aggregator_accuracy"]
    assert report["aggregator"] == "dawid_skene" and len(report["agents"]) == 5
    assert acc["dawid_skene"] > acc["majority_vote"]
    # Every chunk of the job aggregated with the model calibration stored, not its own fit.
    engine = db.make_engine(eval_settings.catalog_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            cited = (
                await conn.execute(
                    text(
                        "SELECT DISTINCT d.aggregator, r.fitted_on FROM decision d"
                        " LEFT JOIN agent_reliability r ON r.task = 'digits'"
                        " AND d.aggregator = 'dawid_skene@' || r.version WHERE d.job_id = :j"
                    ),
                    {"j": report["job"]},
                )
            ).all()
    finally:
        await engine.dispose()
    assert len(cited) == 1 and str(cited[0][1]).startswith("calibrate:"), cited


def test_eval_on_a_tabular_csv_with_feature_columns(
    eval_settings: Settings, tmp_path: Path
) -> None:
    from agents.digits import digits_rows

    rows = digits_rows()[:400]
    data = tmp_path / "pixels.csv"
    cols = [f"p{i}" for i in range(64)]
    with data.open("w") as fh:
        fh.write(",".join(["digit", *cols]) + "\n")
        for r in rows:
            fh.write(",".join([r["label"], *r["text"].split()]) + "\n")
    args = ["eval", "--data", str(data), "--task", "digits", "--label-field", "digit"]
    out = cli(eval_settings, *args, "--feature-fields", ",".join(cols), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((eval_settings.home_dir / "eval" / "pixels" / "report.json").read_text())
    assert report["calibration_items"] + report["items"] == len(rows)
    assert report["aggregator_accuracy"]["dawid_skene"] > 0.6

    bad = tmp_path / "bad.csv"
    bad.write_text("digit,p0\n3,0\n4,x\n")
    refused = cli(
        eval_settings,
        "eval",
        "--data",
        str(bad),
        "--task",
        "digits",
        "--label-field",
        "digit",
        "--feature-fields",
        "p0",
    )
    assert refused.returncode == 1 and f"{bad}:3: a feature is not a number" in refused.stdout


def test_eval_never_over_promises_when_the_target_is_out_of_reach(
    eval_settings: Settings, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    """Tried as a new user would: two text agents, a target they cannot show. The job then
    auto-accepts nothing (it used to fall back to the most accurate threshold and accept 83 %
    of items at 74 %)."""
    rows = gold_rows[1900:2300]
    data = tmp_path / "hard.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = cli(
        eval_settings,
        "eval",
        "--data",
        str(data),
        "--task",
        "sentiment",
        "--target",
        "0.99",
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((eval_settings.home_dir / "eval" / "hard" / "report.json").read_text())
    assert report["target_reached_on_calibration"] is False
    assert report["threshold"] == 2.0 and report["calibration_auto_rate"] == 0.0
    assert report["auto_accept_rate"] == 0.0 and report["review_rate"] > 0.9
    said = " ".join(out.stdout.split())
    assert "no threshold shows 99.0% accuracy" in said and "auto-accepting nothing" in said
