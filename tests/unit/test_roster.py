"""The roster's simulated reviewers: on duty only when allowed, and always marked `sim:`."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.base import TaskError
from agents.roster import load_roster
from worker.reviewbot import answer
from worker.settings import PROJECT_ROOT

ROSTER = PROJECT_ROOT / "config" / "roster.yaml"


def test_simulated_reviewers_are_on_the_roster_only_when_allowed() -> None:
    people = {r.id for r in load_roster(ROSTER)}
    everyone = {r.id for r in load_roster(ROSTER, simulated=True)}
    assert "sim:gold" not in people and everyone - people == {"sim:gold"}


@pytest.mark.parametrize(
    "entry",
    ['{id: "sim:x", tasks: [t]}', "{id: mallory, simulated: true, tasks: [t]}",
     '{id: "sim:x", simulated: "yes", tasks: [t]}'],
)  # fmt: skip
def test_a_simulated_reviewer_is_marked_by_its_id_and_nothing_else(
    tmp_path: Path, entry: str
) -> None:
    roster = tmp_path / "roster.yaml"
    roster.write_text(f"reviewers:\n  - {entry}\n")
    with pytest.raises(TaskError, match="starting 'sim:', and only a simulated one does"):
        load_roster(roster, simulated=True)


def test_the_bot_is_wrong_on_a_stable_share_of_items() -> None:
    labels = ["positive", "negative"]
    answers = [answer(f"item{i}", "positive", labels, 0.8) for i in range(2000)]
    assert answers == [answer(f"item{i}", "positive", labels, 0.8) for i in range(2000)]
    assert 0.17 < answers.count("negative") / 2000 < 0.23
    assert {answer(f"i{i}", "positive", labels, 1.0) for i in range(200)} == {"positive"}
