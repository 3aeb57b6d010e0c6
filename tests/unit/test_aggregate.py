"""Aggregators beyond majority vote: weighted vote, Dawid-Skene, Krippendorff's alpha."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from agents.aggregate import DawidSkene, krippendorff_alpha, majority_vote, weighted_vote
from agents.base import Vote

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def v(label: str | None, confidence: float = 1.0) -> Vote:
    return Vote(label=label, confidence=confidence if label else 0.0, rationale="")


# --- weighted vote ---------------------------------------------------------------------------


def test_weighted_vote_lets_confident_minority_win() -> None:
    votes = [v("pos", 0.9), v("neg", 0.3), v("neg", 0.4), v(None)]
    ens = weighted_vote(votes)
    assert majority_vote(votes).label == "neg"
    assert (ens.label, ens.method, ens.votes, ens.abstained) == ("pos", "weighted_vote", 4, 1)
    assert ens.confidence == pytest.approx(0.9 / 1.6)
    assert ens.agreement == pytest.approx(1 / 3)


def test_weighted_vote_ties_go_to_more_votes_then_name_and_ignore_order() -> None:
    votes = [v("b", 0.6), v("a", 0.3), v("a", 0.3), v("c", 0.6)]
    assert weighted_vote(votes).label == "a"  # 0.6 each; "a" has two votes
    results = {weighted_vote(votes[i:] + votes[:i]) for i in range(len(votes))}
    results |= {weighted_vote(list(reversed(votes)))}
    assert len(results) == 1
    assert weighted_vote([v("c", 0.5), v("b", 0.5)]).label == "b"


def test_weighted_vote_all_abstain_and_all_zero_confidence() -> None:
    ens = weighted_vote([v(None), v(None)])
    assert (ens.label, ens.confidence, ens.agreement, ens.abstained) == (None, 0.0, 0.0, 2)
    zero = weighted_vote([v("x", 0.0), v("y", 0.0)])
    assert (zero.label, zero.confidence, zero.agreement) == ("x", 0.0, 0.5)


# --- Dawid-Skene -----------------------------------------------------------------------------


def test_dawid_skene_matches_crowd_kit() -> None:
    # Fixture from tests/fixtures/make_ds_fixture.py (crowd-kit's DawidSkene, n_iter=100,
    # tol=1e-5). crowd-kit's probas_ come from the last E-step *before* its last M-step; our
    # `posterior` uses the final parameters, so it is compared with crowd-kit's own `_e_step`
    # on its final priors_/errors_ (stored as crowdkit_final_estep). Observed max abs diff:
    # ~5e-13 (the fixture is rounded to 12 decimals); probas_ itself differs by ~5e-4.
    fx = json.loads((FIXTURES / "ds_crowdkit.json").read_text(encoding="utf-8"))
    labels, votes = fx["labels"], fx["votes"]
    model = DawidSkene.fit(labels, fx["agents"], votes, max_iter=100, tol=1e-5)
    assert model.iterations == fx["iterations"]
    assert model.items == sum(label is not None for label in fx["crowdkit_labels"])
    assert model.priors == pytest.approx(fx["crowdkit_priors"], abs=1e-9)
    for ours, theirs in zip(model.confusions, fx["crowdkit_confusions"], strict=True):
        for row, ref in zip(ours, theirs, strict=True):
            assert row == pytest.approx(ref, abs=1e-9)
    for row, ref_label, ref_post in zip(
        votes, fx["crowdkit_labels"], fx["crowdkit_final_estep"], strict=True
    ):
        ens = model.ensemble([v(label) for label in row])
        assert ens.label == ref_label
        if ref_post is not None:
            post = model.posterior(row)
            assert [post[label] for label in labels] == pytest.approx(ref_post, abs=1e-9)
    accuracy = sum(
        model.ensemble([v(x) for x in row]).label == t
        for row, t in zip(votes, fx["truth"], strict=True)
    ) / len(votes)
    assert accuracy > 0.9


def confused_votes(seed: int, n: int = 500) -> tuple[list[str], list[list[str | None]]]:
    """One good agent, three that say "a" for most true "b" items, one that votes at random."""
    rng, labels = random.Random(seed), ["a", "b", "c"]

    def noisy(true: str, accuracy: float) -> str:
        return true if rng.random() < accuracy else rng.choice([x for x in labels if x != true])

    truth, votes = [], []
    for _ in range(n):
        true = rng.choice(labels)
        row: list[str | None] = [noisy(true, 0.85)]
        row += ["a" if true == "b" and rng.random() < 0.7 else noisy(true, 0.8) for _ in "123"]
        row.append(rng.choice(labels))
        truth.append(true)
        votes.append(row)
    return truth, votes


def test_dawid_skene_beats_majority_vote_when_agents_are_biased() -> None:
    truth, votes = confused_votes(0)
    model = DawidSkene.fit(["a", "b", "c"], [f"g{j}@1" for j in range(5)], votes)
    ds = [model.ensemble([v(x) for x in row]).label for row in votes]
    mv = [majority_vote([v(x) for x in row]).label for row in votes]
    ds_acc = sum(a == t for a, t in zip(ds, truth, strict=True)) / len(truth)
    mv_acc = sum(a == t for a, t in zip(mv, truth, strict=True)) / len(truth)
    assert ds_acc > mv_acc + 0.05  # observed 0.756 vs 0.678
    # Learned (partly: crowd-kit's stopping rule ends EM after 3 iterations here) that agent 1
    # says "a" for a true "b" far more often than it says "c" (observed 0.44 vs 0.05).
    assert model.confusions[1][1][0] > 0.3 > model.confusions[1][1][2]


def small_model() -> DawidSkene:
    _, votes = confused_votes(1, n=200)
    return DawidSkene.fit(["a", "b", "c"], [f"g{j}@1" for j in range(5)], votes)


def test_dawid_skene_posterior_and_ensemble_on_a_new_item() -> None:
    model = small_model()
    post = model.posterior(["c", "c", None, "c", "a"])
    assert math.fsum(post.values()) == pytest.approx(1.0)
    ens = model.ensemble([v("c"), v("c"), v(None), v("c"), v("a")])
    assert (ens.label, ens.method, ens.votes, ens.abstained) == ("c", "dawid_skene", 5, 1)
    assert ens.confidence == post["c"] and ens.confidence > 0.9
    assert ens.agreement == 0.75
    with pytest.raises(ValueError):
        model.posterior(["a"])  # one vote per agent
    with pytest.raises(ValueError):
        model.posterior(["z", None, None, None, None])


def test_dawid_skene_label_an_agent_never_gave_is_no_evidence() -> None:
    _, votes = confused_votes(3, n=200)
    votes = [[row[0], None if row[1] == "c" else row[1], *row[2:]] for row in votes]
    model = DawidSkene.fit(["a", "b", "c"], [f"g{j}@1" for j in range(5)], votes)
    # As crowd-kit: no (agent, label) row at all, so that cell is 0 and the others sum to 1.
    assert [row[2] for row in model.confusions[1]] == [0.0, 0.0, 0.0]
    assert all(math.fsum(row) == pytest.approx(1.0) for m in model.confusions for row in m)
    assert model.posterior(["b", "c", "a", None, "b"]) == model.posterior(
        ["b", None, "a", None, "b"]
    )


def test_dawid_skene_all_abstain_gives_priors_and_no_label() -> None:
    model = small_model()
    post = model.posterior([None] * 5)
    total = math.fsum(model.priors)
    assert [post[x] for x in model.labels] == pytest.approx([p / total for p in model.priors])
    ens = model.ensemble([v(None)] * 5)
    assert (ens.label, ens.confidence, ens.agreement, ens.abstained) == (None, 0.0, 0.0, 5)


def test_dawid_skene_is_deterministic_and_round_trips() -> None:
    model = small_model()
    again = small_model()
    assert again == model and again.version == model.version
    assert len(model.version) == 16
    assert isinstance(model.to_dict()["confusions"][0][0], list)
    data = json.loads(json.dumps(model.to_dict()))
    restored = DawidSkene.from_dict(data)
    assert restored == model and restored.version == model.version
    assert restored.posterior(["b", "a", "a", "a", "c"]) == model.posterior(
        ["b", "a", "a", "a", "c"]
    )
    other = DawidSkene.fit(["a", "b", "c"], [f"g{j}@1" for j in range(5)], confused_votes(2)[1])
    assert other.version != model.version


# --- Krippendorff's alpha --------------------------------------------------------------------

# Reference values from the `krippendorff` PyPI package 0.9.0, computed in a throwaway venv:
#   cats = sorted(values); data = coders x items array of cats.index(value), np.nan if missing
#   krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
# The first matrix is Krippendorff (2011), "Computing Krippendorff's alpha-reliability"
# (published nominal alpha 0.743).
ALPHA_CASES = [
    (
        [
            ["1", "1", None, "1"],
            ["2", "2", "3", "2"],
            ["3", "3", "3", "3"],
            ["3", "3", "3", "3"],
            ["2", "2", "2", "2"],
            ["1", "2", "3", "4"],
            ["4", "4", "4", "4"],
            ["1", "1", "2", "1"],
            ["2", "2", "2", "2"],
            [None, "5", "5", "5"],
            [None, None, "1", "1"],
            [None, None, "3", None],
        ],
        0.743421052631579,
    ),
    (
        [
            ["a", "a", "b"],
            ["b", "b", "b"],
            ["a", None, "a"],
            ["c", "c", None],
            ["a", "b", "c"],
            [None, "b", "b"],
            ["c", None, None],
            ["a", "a", "a"],
        ],
        0.5792079207920793,
    ),
    ([["x", "y"], ["y", "x"], ["x", "y"], ["y", "x"], ["x", "x"]], -0.5),
    (
        [["p", "n"], ["p", "p"], ["n", "n"], ["p", "p"], ["n", "p"], ["p", "p"], ["n", "n"]]
        + [[None, "p"]],
        0.45833333333333337,
    ),
]


@pytest.mark.parametrize(("matrix", "expected"), ALPHA_CASES)
def test_krippendorff_alpha_matches_reference(
    matrix: list[list[str | None]], expected: float
) -> None:
    assert krippendorff_alpha(matrix) == pytest.approx(expected, abs=1e-12)


def test_krippendorff_alpha_edge_cases() -> None:
    assert krippendorff_alpha([["a", "a"], ["b", "b", None], ["c", None, "c"]]) == 1.0
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) == 1.0  # no expected disagreement
    assert math.isnan(krippendorff_alpha([["a", None], [None, "b"], []]))
    assert math.isnan(krippendorff_alpha([]))


def test_smoothing_keeps_rows_normalised_and_grades_the_posteriors() -> None:
    votes = [["a", "a", "b"], ["a", "a", "a"], ["b", "b", "b"], ["b", "a", "b"]] * 10
    ds = DawidSkene.fit(["a", "b"], ["x", "y", "z"], votes)
    smooth = ds.smoothed(1.0)
    conf = np.asarray(smooth.confusions)
    assert np.allclose(conf.sum(axis=2), 1.0) and (conf > 0).all()
    assert smooth.version != ds.version and ds.smoothed(0) is ds
    item = ["a", "a", "a"]
    raw, graded = ds.posterior(item), smooth.posterior(item)
    assert max(raw, key=raw.__getitem__) == max(graded, key=graded.__getitem__) == "a"
    assert graded["a"] < raw["a"]
