"""Calibrated routing: the threshold search, and the policy version it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agents.calibrate import CalibrationError, curve, find_threshold
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


def test_threshold_is_the_loosest_that_meets_the_target() -> None:
    # 10 right at 0.95, then one wrong at 0.9, 9 right at 0.8, 10 wrong at 0.6.
    conf = [0.95] * 10 + [0.9] + [0.8] * 9 + [0.6] * 10
    right = [True] * 10 + [False] + [True] * 9 + [False] * 10
    point = find_threshold(conf, right, target=0.95, min_accepted=5)
    assert (point.threshold, point.accepted, point.correct) == (0.8, 20, 19)
    # Accuracy is not monotone: 0.9 alone would fail (10/11), but 0.8 passes again.
    assert find_threshold(conf, right, target=0.95, min_accepted=15).threshold == 0.8
    with pytest.raises(
        CalibrationError, match=r"the best is 95.0% on 20 items \(confidence >= 0.8000"
    ):
        find_threshold(conf, right, target=0.99, min_accepted=11)


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
    # A threshold the cases contradict (certainty no longer accepted) is refused, not kept.
    with pytest.raises(PolicyError, match="fails its cases"):
        with_params(tmp_path, "rc", {"min_confidence": 1.5}, note="bad")
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
    out = cli(local, "calibrate", "--task", "sentiment", "--gold", str(gold), "--target", "0.9")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "wrote policy route_calibrated@2" in out.stdout
    threshold = Policy.load(policies, "route_calibrated@2").params["min_confidence"]
    assert f"{threshold:.6f}" in out.stdout and 0 < float(threshold) < 1
    refused = cli(
        local,
        "calibrate",
        "--task",
        "sentiment",
        "--gold",
        str(gold),
        "--target",
        "1.0",
        "--min-accepted",
        "500",
    )
    assert refused.returncode == 1 and "no threshold reaches 100.0% accuracy" in refused.stdout
    assert not (policies / "route_calibrated" / "v3.yaml").exists()
