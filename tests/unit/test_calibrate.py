"""Calibrated routing: the threshold search, and the policy version it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agents.base import Vote
from agents.calibrate import (
    ACCEPT_NOTHING,
    CalibrationError,
    calibrate,
    curve,
    find_threshold,
    wilson_lower,
)
from agents.pipeline import aggregator_of, combine
from agents.tasks import load_task
from policy_rules.engine import Policy, PolicyError
from policy_rules.versions import with_params
from tests.helpers import cli
from worker.settings import PROJECT_ROOT, Settings


def copy_v1(folder: Path) -> None:
    """route_calibrated as released (v1 and its cases), without later calibrated versions."""
    folder.mkdir(parents=True)
    for name in ("v1.yaml", "cases.yaml"):
        shutil.copy(PROJECT_ROOT / "policy_rules" / "route_calibrated" / name, folder / name)


def test_curve_has_one_point_per_distinct_confidence() -> None:
    points = curve([0.9, 0.5, 0.9, 0.7], [True, False, False, True])
    assert [(p.threshold, p.accepted, p.correct) for p in points] == [
        (0.9, 2, 1),
        (0.7, 3, 2),
        (0.5, 4, 2),
    ]
    assert points[1].rate == 0.75 and points[1].accuracy == pytest.approx(2 / 3)


def test_wilson_lower_bound() -> None:
    # One-sided 95 %: 20 of 20 right shows 88.1 %, 19 of 20 only 80.4 %; more items, tighter.
    assert wilson_lower(20, 20) == pytest.approx(0.88084, abs=1e-5)
    assert wilson_lower(19, 20) == pytest.approx(0.80399, abs=1e-5)
    assert wilson_lower(190, 200) > wilson_lower(19, 20) and wilson_lower(0, 0) == 0.0
    assert wilson_lower(19, 20, confidence=0.99) < wilson_lower(19, 20)


def test_threshold_is_the_loosest_whose_lower_bound_meets_the_target() -> None:
    # 300 right at 0.95, 10 wrong at 0.9, 300 right at 0.8, 100 wrong at 0.6.
    conf = [0.95] * 300 + [0.9] * 10 + [0.8] * 300 + [0.6] * 100
    right = [True] * 300 + [False] * 10 + [True] * 300 + [False] * 100
    point = find_threshold(conf, right, target=0.95)
    assert (point.threshold, point.accepted, point.correct) == (0.8, 610, 600)
    assert point.lower() >= 0.95
    # Not monotone: at 0.9 (300 of 310, 96.8 % measured) the bound is 94.7 %, under the target.
    assert find_threshold(conf, right, target=0.95, min_accepted=305).threshold == 0.8


def test_a_measured_accuracy_over_the_target_is_not_enough() -> None:
    # 29 of 30 right is 96.7 % measured, but it shows only 86 %: no threshold, never 0.95.
    conf, right = [0.9] * 30, [True] * 29 + [False]
    with pytest.raises(CalibrationError, match=r"no threshold shows 95.0% accuracy") as err:
        find_threshold(conf, right, target=0.95, min_accepted=20)
    assert "the best shows 86.4% (96.7% measured on 30 items" in str(err.value)
    assert find_threshold(conf, right, target=0.85).threshold == 0.9


def test_calibration_chooses_the_aggregator_that_labels_the_slice_best(
    settings: Settings,
) -> None:
    task = load_task(settings.tasks_dir, "sentiment")
    # Two sloppy agents that agree, unsure, on the wrong label for the first 40 items; a
    # careful one that is always right and very sure. Majority follows the pair.
    truth = ["positive"] * 40 + ["negative"] * 60
    wrong = [("negative" if i < 40 else t) for i, t in enumerate(truth)]
    sloppy = [Vote(label=w, confidence=0.3, rationale="") for w in wrong]
    careful = [Vote(label=t, confidence=0.99, rationale="") for t in truth]
    per_agent = [sloppy, sloppy, careful]
    keys = ["a@1", "b@1", "c@1"]
    cal = calibrate(task, keys, per_agent, truth, target=0.9)
    assert cal.accuracy["majority_vote"] == pytest.approx(0.6)
    assert max(cal.accuracy.values()) == cal.accuracy[cal.aggregator] > 0.6
    assert cal.combined.method.split("@")[0] == cal.aggregator
    # Only the task's aggregator when the policy has no param to record a choice.
    only = calibrate(task, keys, per_agent, truth, target=0.9, choose=False)
    assert set(only.accuracy) == {task.aggregator}
    # Unreachable: no point, a reason, and a threshold no confidence reaches.
    none = calibrate(task, keys, per_agent, truth, target=1.0, min_accepted=100)
    assert none.point is None and none.threshold == ACCEPT_NOTHING > 1
    assert "no threshold shows 100.0%" in none.reason


def test_a_new_version_is_written_once_and_must_pass_its_cases(tmp_path: Path) -> None:
    copy_v1(tmp_path / "rc")
    (tmp_path / "rc" / "v1.yaml").write_text(
        (tmp_path / "rc" / "v1.yaml").read_text().replace("route_calibrated", "rc")
    )
    ref, created = with_params(tmp_path, "rc", {"min_confidence": 0.8125}, note="test")
    assert (ref.version, created) == (2, True)
    assert Policy.load(tmp_path, "rc@2").params["min_confidence"] == 0.8125
    assert "# v2: test" in (tmp_path / "rc" / "v2.yaml").read_text()
    assert with_params(tmp_path, "rc", {"min_confidence": 0.8125}, note="again") == (ref, False)
    # Tiny thresholds stay numbers (PyYAML reads `3e-05` as a string); strings stay strings.
    tiny, _ = with_params(
        tmp_path, "rc", {"min_confidence": 3e-05, "reliability": "ab12"}, note="t"
    )
    assert Policy.load(tmp_path, str(tiny)).params == {
        "min_chars": 1,
        "max_chars": 20000,
        "min_confidence": 3e-05,
        "reliability": "ab12",
    }
    # A threshold the cases contradict (a confidence of zero accepted) is refused, not kept.
    with pytest.raises(PolicyError, match="fails its cases"):
        with_params(tmp_path, "rc", {"min_confidence": 0.0}, note="bad")
    assert not (tmp_path / "rc" / "v4.yaml").exists()
    with pytest.raises(PolicyError, match="no single param line 'nope:'"):
        with_params(tmp_path, "rc", {"nope": 1.0}, note="bad")


def test_calibrate_cli_writes_a_policy_version(
    settings: Settings, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    copy_v1(policies / "route_calibrated")
    gold = tmp_path / "cal.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in gold_rows[:600]))
    local = settings.model_copy(update={"policies_dir": policies})
    out = cli(local, "calibrate", "--task", "sentiment", "--gold", str(gold), "--target", "0.8")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "wrote policy route_calibrated@2" in out.stdout
    threshold = Policy.load(policies, "route_calibrated@2").params["min_confidence"]
    assert f"{threshold:.6f}" in out.stdout and 0 < float(threshold) < 1
    assert "lower bound" in out.stdout
    # Unreachable: a version that auto-accepts nothing, and the reason, rather than a
    # threshold that misses the target.
    none = cli(local, "calibrate", "--task", "sentiment", "--gold", str(gold), "--target", "1.0")
    assert none.returncode == 0, none.stdout + none.stderr
    said = " ".join(none.stdout.split())  # rich wraps at the terminal width
    assert "no threshold shows 100.0% accuracy" in said and "auto-accepts nothing" in said
    assert Policy.load(policies, "route_calibrated@3").params["min_confidence"] == 2.0


def test_calibrate_records_the_aggregator_it_chose(
    settings: Settings, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    copy_v1(policies / "route_calibrated")
    shipped = PROJECT_ROOT / "policy_rules" / "route_calibrated" / "v4.yaml"
    shutil.copy(shipped, policies / "route_calibrated" / "v4.yaml")
    gold = tmp_path / "cal.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in gold_rows[:300]))
    local = settings.model_copy(update={"policies_dir": policies})
    out = cli(local, "calibrate", "--task", "sentiment", "--gold", str(gold), "--target", "0.8")
    assert out.returncode == 0, out.stdout + out.stderr
    chosen = Policy.load(policies, "route_calibrated@5").params["aggregator"]
    assert chosen in ("majority_vote", "weighted_vote", "dawid_skene")
    said = " ".join(out.stdout.split())
    assert f"accuracy, {chosen}" in said and "chosen by accuracy" in said


def test_jobs_aggregate_with_the_aggregator_the_policy_version_names(
    settings: Settings, tmp_path: Path
) -> None:
    task = load_task(settings.tasks_dir, "sentiment")
    folder = tmp_path / "route_calibrated"
    copy_v1(folder)
    shutil.copy(PROJECT_ROOT / "policy_rules" / "route_calibrated" / "v4.yaml", folder / "v4.yaml")
    shipped = Policy.load(tmp_path, "route_calibrated@4")
    assert aggregator_of(task, shipped) == task.aggregator == "majority_vote"  # "": the task's
    ref, _ = with_params(tmp_path, "route_calibrated", {"aggregator": "weighted_vote"}, note="t")
    chosen = Policy.load(tmp_path, str(ref))
    assert aggregator_of(task, chosen) == "weighted_vote"
    votes = [[Vote(label="positive", confidence=0.9, rationale="")]] * 2
    assert combine(task, ["a@1", "b@1"], votes, aggregator="weighted_vote").method == (
        "weighted_vote"
    )
    ref, _ = with_params(tmp_path, "route_calibrated", {"aggregator": "coin_flip"}, note="t")
    with pytest.raises(ValueError, match="param aggregator 'coin_flip' is not one of"):
        aggregator_of(task, Policy.load(tmp_path, str(ref)))
