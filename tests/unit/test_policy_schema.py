"""Policy engine, second part: collection inputs, per-rule params, the cost bound, gate
policies, per-version cases and what a rule reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy_rules.engine import (
    MAX_ENTRIES,
    MAX_RULE_COST,
    Decision,
    Policy,
    PolicyError,
    check_cases,
    estimate_cost,
)

HEAD = """\
id: demo
version: 1
{kind}description: test policy
inputs:
  ensemble.confidence: double
  agents.reliability: map<string,double>
  labels.seen: list<string>
params:
  min_confidence: 0.8
  min_reliability: 0.6
rules:
"""
ROUTE_TAIL = "default:\n  outcome: human_review\n"
INPUTS = {
    "ensemble.confidence": 0.75,
    "agents.reliability": {"keywords": 0.9, "model": 0.7},
    "labels.seen": ["positive", "negative"],
}


def write(root: Path, rules: str, *, kind: str = "", tail: str = ROUTE_TAIL) -> Path:
    folder = root / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "v1.yaml"
    path.write_text(HEAD.format(kind=kind) + rules + tail)
    return path


def refused(tmp_path: Path, rules: str, **kw: str) -> str:
    write(tmp_path, rules, **kw)
    with pytest.raises(PolicyError) as err:
        Policy.load(tmp_path, "demo")
    return str(err.value)


def test_map_and_list_inputs_with_comprehensions(tmp_path: Path) -> None:
    write(
        tmp_path,
        "  - id: trusted\n"
        "    when: >-\n"
        "      agents.reliability.all(a, agents.reliability[a] >= params.min_reliability)\n"
        '      && "positive" in labels.seen\n'
        "    outcome: auto_accept\n",
    )
    policy = Policy.load(tmp_path, "demo")
    assert policy.evaluate(INPUTS) == Decision(outcome="auto_accept", rule_id="trusted")
    doubtful = {**INPUTS, "agents.reliability": {"keywords": 0.9, "model": 0.5}}
    assert policy.evaluate(doubtful).rule_id == "default"
    # Ints are fine doubles inside a map too; a string value is not.
    assert policy.evaluate({**INPUTS, "agents.reliability": {"a": 1}}).rule_id == "trusted"
    bad = policy.evaluate({**INPUTS, "agents.reliability": {"a": "high"}})
    assert (bad.outcome, bad.rule_id) == ("human_review", "inputs")
    assert bad.error == "input 'agents.reliability' must be map<string,double>, got dict"
    # More entries than the cost bound assumes: refused before any rule runs.
    big = {f"agent{i}": 0.9 for i in range(MAX_ENTRIES + 1)}
    over = policy.evaluate({**INPUTS, "agents.reliability": big})
    assert over.rule_id == "inputs"
    assert over.error == f"input 'agents.reliability' has {MAX_ENTRIES + 1} entries, more than 64"


def test_a_missing_map_key_is_a_rule_error_routed_to_people(tmp_path: Path) -> None:
    write(
        tmp_path,
        '  - id: by_name\n    when: agents.reliability["llm"] > 0.5\n    outcome: auto_accept\n',
    )
    decision = Policy.load(tmp_path, "demo").evaluate(INPUTS)
    assert (decision.outcome, decision.rule_id) == ("human_review", "by_name")
    assert decision.error is not None and "llm" in decision.error


def test_unknown_collection_type_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "  - id: r\n    when: ensemble.confidence > 0.5\n    outcome: reject\n")
    path.write_text(path.read_text().replace("list<string>", "list<float>"))
    with pytest.raises(PolicyError) as err:
        Policy.load(tmp_path, "demo")
    assert "input 'labels.seen' has type 'list<float>'" in str(err.value)
    assert f"{path}:7:" in str(err.value)


def test_per_rule_params_override_the_policy_value_for_that_rule_only(tmp_path: Path) -> None:
    write(
        tmp_path,
        "  - id: reliable\n"
        "    when: >-\n"
        "      agents.reliability.all(a, agents.reliability[a] >= params.min_reliability)\n"
        "      && ensemble.confidence >= params.min_confidence\n"
        "    outcome: auto_accept\n"
        "    params: {min_confidence: 0.7}\n"
        "  - id: confident\n"
        "    when: ensemble.confidence >= params.min_confidence\n"
        "    outcome: auto_accept\n",
    )
    policy = Policy.load(tmp_path, "demo")
    assert policy.rules[0].params == {"min_confidence": 0.7}
    assert policy.evaluate(INPUTS).rule_id == "reliable"  # 0.75 >= the rule's own 0.7
    doubtful = {**INPUTS, "agents.reliability": {"model": 0.1}}
    assert policy.evaluate(doubtful).rule_id == "default"  # 0.75 < the policy's 0.8
    assert policy.evaluate({**doubtful, "ensemble.confidence": 0.8}).rule_id == "confident"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("{min_confidnce: 0.7}", "param 'min_confidnce' is not declared; declared: "),
        ('{min_confidence: "0.7"}', "param 'min_confidence' must be float like the policy's"),
        ("{}", "params must be a non-empty mapping"),
    ],
)
def test_bad_rule_params_are_refused(tmp_path: Path, params: str, expected: str) -> None:
    message = refused(
        tmp_path,
        "  - id: r\n    when: ensemble.confidence >= params.min_confidence\n"
        f"    outcome: auto_accept\n    params: {params}\n",
    )
    assert expected in message and "rule 'r'" in message and "v1.yaml:" in message


def test_cost_estimate_multiplies_nested_comprehensions() -> None:
    flat = estimate_cost("a.b > 1 && c < 2")
    one = estimate_cost("m.all(k, m[k] > 0.5)")
    two = estimate_cost("m.all(k, m.exists(j, m[j] > m[k]))")
    assert flat == 8  # a, b, >, 1, &&, c, <, 2
    assert one > MAX_ENTRIES and two > MAX_ENTRIES * one / 2
    # Parentheses inside a string literal are not structure.
    assert estimate_cost('x == "(((" ') == 3
    # Nor can a triple-quoted string holding a quote hide a nested comprehension.
    hidden = '"""q"z""" == "" && ' + "m.all(a, m.all(b, m.all(c, a < b)))" + ' && "" == ""'
    assert estimate_cost(hidden) > MAX_RULE_COST


def test_a_rule_over_the_cost_bound_is_refused(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        "  - id: quadratic\n"
        "    when: >-\n"
        "      agents.reliability.all(a, agents.reliability.all(b,\n"
        "        agents.reliability[a] >= agents.reliability[b] - 0.5))\n"
        "    outcome: auto_accept\n",
    )
    assert "rule 'quadratic'" in message and f"over the bound {MAX_RULE_COST}" in message
    assert "v1.yaml:13:11:" in message  # where the expression starts


def test_gate_policies_pass_or_fail_and_fail_on_errors(tmp_path: Path) -> None:
    write(
        tmp_path,
        "  - id: unsure\n    when: ensemble.confidence < params.min_confidence\n"
        "    outcome: fail\n",
        kind="kind: gate\n",
        tail="default:\n  outcome: pass\n",
    )
    gate = Policy.load(tmp_path, "demo")
    assert gate.kind == "gate" and gate.error_outcome == "fail"
    assert gate.evaluate({**INPUTS, "ensemble.confidence": 0.9}).outcome == "pass"
    assert gate.evaluate(INPUTS) == Decision(outcome="fail", rule_id="unsure")
    assert gate.rules[0].reads == ("ensemble.confidence",)
    missing = gate.evaluate({})
    assert (missing.outcome, missing.rule_id) == ("fail", "inputs")


def test_gate_and_route_outcomes_do_not_mix(tmp_path: Path) -> None:
    gate_rule = "  - id: r\n    when: ensemble.confidence < 0.5\n    outcome: auto_accept\n"
    message = refused(tmp_path, gate_rule, kind="kind: gate\n", tail="default:\n  outcome: pass\n")
    assert "outcome 'auto_accept' is not one of pass, fail" in message
    message = refused(tmp_path, gate_rule.replace("auto_accept", "fail"))
    assert "outcome 'fail' is not one of auto_accept" in message
    assert "kind 'audit' is not one of route, gate, drift" in refused(
        tmp_path, gate_rule, kind="kind: audit\n"
    )
    message = refused(
        tmp_path,
        gate_rule.replace("auto_accept", "fail"),
        kind="kind: gate\n",
        tail="default:\n  outcome: pass\nreview:\n  reviewers_needed: 1\n",
    )
    assert "a gate has no review" in message


def test_drift_policies_choose_an_action_and_alert_when_a_rule_errors(tmp_path: Path) -> None:
    rule = (
        "  - id: moved\n    when: ensemble.confidence < params.min_confidence\n    outcome: {o}\n"
    )
    drift = {"kind": "kind: drift\n", "tail": "default:\n  outcome: none\n"}
    write(tmp_path, rule.format(o="relabel"), **drift)
    policy = Policy.load(tmp_path, "demo")
    assert policy.kind == "drift" and policy.error_outcome == "alert"
    assert policy.evaluate(INPUTS) == Decision(outcome="relabel", rule_id="moved")
    assert policy.evaluate({**INPUTS, "ensemble.confidence": 0.9}).outcome == "none"
    assert policy.evaluate({}).outcome == "alert"  # unusable inputs: say so, change nothing
    message = refused(tmp_path, rule.format(o="auto_accept"), **drift)
    assert "outcome 'auto_accept' is not one of none, alert, sample_review, relabel, retrain" in (
        message
    )
    review = {**drift, "tail": drift["tail"] + "review:\n  reviewers_needed: 1\n"}
    assert "a drift has no review" in refused(tmp_path, rule.format(o="alert"), **review)


def test_cases_can_be_about_some_versions_only(tmp_path: Path) -> None:
    rule = "  - id: sure\n    when: ensemble.confidence >= params.min_confidence\n"
    write(tmp_path, rule + "    outcome: auto_accept\n")
    v2 = tmp_path / "demo" / "v2.yaml"
    v2.write_text(
        (tmp_path / "demo" / "v1.yaml")
        .read_text()
        .replace("version: 1", "version: 2")
        .replace("min_confidence: 0.8", "min_confidence: 0.7")
    )
    cases = tmp_path / "demo" / "cases.yaml"
    base = {"input": INPUTS}
    cases.write_text(
        json.dumps(
            [
                {
                    **base,
                    "name": "v1 holds back",
                    "expect": {"outcome": "human_review", "rule": "default"},
                    "versions": [1],
                },
                {
                    **base,
                    "name": "v2 accepts",
                    "expect": {"outcome": "auto_accept", "rule": "sure"},
                    "versions": [2],
                },
                {
                    "input": {**INPUTS, "ensemble.confidence": 0.95},
                    "name": "both accept",
                    "expect": {"outcome": "auto_accept", "rule": "sure"},
                },
            ]
        )
    )
    assert check_cases(Policy.load(tmp_path, "demo@1"), cases) == []
    assert check_cases(Policy.load(tmp_path, "demo@2"), cases) == []
    cases.write_text(cases.read_text().replace('"versions": [1]', '"versions": "1"'))
    failures = check_cases(Policy.load(tmp_path, "demo@1"), cases)
    assert any("versions must be a list of version numbers" in f for f in failures)


# --- the figures jobs and snapshots supply --------------------------------------------------


def test_reliabilities_from_the_chunk_or_the_dawid_skene_model() -> None:
    from agents.base import Vote
    from agents.pipeline import combine, label_shift, reliabilities
    from agents.tasks import AgentSpec, TaskSpec

    def task(aggregator: str) -> TaskSpec:
        agents = tuple(AgentSpec(name=n, kind="rules", settings={}) for n in "abcd")
        return TaskSpec(
            name="t", path=Path("t.yaml"), description="", labels=("x", "y"), text_field="text",
            max_chars=100, agents=agents, aggregator=aggregator,
        )  # fmt: skip

    def v(label: str | None) -> Vote:
        return Vote(label=label, confidence=0.9 if label else 0.0, rationale="")

    # a and d agree with the majority everywhere, b on 2 of its 3 votes, c never votes.
    names, keys = ["a", "b", "c", "d"], ["a@1", "b@1", "c@1", "d@1"]
    per_agent = [
        [v("x"), v("y"), v("x"), v("x")],
        [v("x"), v("y"), v(None), v("y")],
        [v(None)] * 4,
        [v("x"), v("y"), v("x"), v("x")],
    ]
    combined = combine(task("majority_vote"), keys, per_agent)
    assert [e.label for e in combined.ensembles] == ["x", "y", "x", "x"]
    rel = reliabilities(names, per_agent, combined)
    assert rel == {"a": 1.0, "b": pytest.approx(2 / 3), "c": 0.0, "d": 1.0}
    ds = combine(task("dawid_skene"), keys, per_agent)
    assert ds.model is not None
    from_model = reliabilities(names, per_agent, ds)
    assert from_model == dict(zip(names, ds.model.accuracies().values(), strict=True))
    assert from_model["a"] > from_model["b"]
    # Drift: total variation distance to the reference distribution.
    ensembles = combined.ensembles
    assert label_shift(ensembles, {"x": 1, "y": 1}) == pytest.approx(0.25)  # 3/4 x vs 1/2
    assert label_shift(ensembles, None) == 0.0 and label_shift([], {"x": 3}) == 0.0


def test_snapshot_metrics_and_rollback_target() -> None:
    from types import SimpleNamespace

    from activities.gates import SnapshotMetrics
    from catalog.db import rollback_target

    m = SnapshotMetrics()
    gold = {"i1": "x", "i2": "y", "i3": "x"}
    for item, label, source in [("i1", "x", "agent"), ("i2", "x", "human"), ("i4", "y", "agent"),
                                ("i5", "y", "agent")]:  # fmt: skip
        m.add(item, label, source, gold)
    m.agreement.add(["x", "x"])
    m.agreement.add(["x", "y"])
    inputs = m.inputs({"x": 3, "y": 1})
    assert inputs["snapshot.count"] == 4 and inputs["snapshot.gold_count"] == 2
    assert inputs["snapshot.gold_accuracy"] == 0.5 and inputs["snapshot.review_rate"] == 0.25
    assert inputs["snapshot.label_shift"] == pytest.approx(0.25)  # 0.5/0.5 vs 0.75/0.25
    assert inputs["snapshot.parent_count"] == 4
    assert inputs["snapshot.agreement"] < 0.5
    empty = SnapshotMetrics().inputs(None)
    assert empty["snapshot.gold_accuracy"] == 0.0 and empty["snapshot.agreement"] == 1.0

    def rows(*versions: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(version=v) for v in versions]

    assert rollback_target(rows(1, 2)) == 1
    assert rollback_target(rows(1, 2, 2)) == 1  # re-activating the same version changes nothing
    assert rollback_target(rows(1, 2, 1, 3)) == 1
    assert rollback_target(rows(2)) is None and rollback_target([]) is None


async def test_a_gate_that_cannot_judge_rolls_nothing_back() -> None:
    from activities.gates import rollback_on_failure, verdict

    judged = verdict(None, "gate quality_x cannot be loaded: unknown policy", {"snapshot.count": 3})
    assert judged["outcome"] == "fail" and "cannot be loaded" in judged["error"]
    # Returns before touching the catalog (there is none here), so conn is never used.
    rolled = await rollback_on_failure(
        None,  # type: ignore[arg-type]
        job_id="label:x:y",
        subject="x@1",
        judged=judged,
        at=None,
    )
    assert rolled is None


def test_params_and_regex_literals_are_checked_at_load(tmp_path: Path) -> None:
    """Values CEL cannot hold, and patterns its regex engine refuses, fail the load with
    file, rule and position: not every item's evaluation afterwards."""
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "v1.yaml").write_text(
        "id: big\nversion: 1\ninputs:\n  ensemble.label: string\nparams:\n"
        f"  huge: {2**70}\nrules:\n  - id: r\n    when: params.huge > 0\n"
        "    outcome: auto_accept\ndefault:\n  outcome: human_review\n"
    )
    with pytest.raises(PolicyError, match="param 'huge' is outside CEL's 64-bit integer range"):
        Policy.load(tmp_path, "big")
    message = refused(
        tmp_path,
        "  - id: pattern\n    when: labels.seen.exists(l, l.matches('pos[itive'))\n"
        "    outcome: auto_accept\n",
    )
    assert "rule 'pattern'" in message
    assert "regex 'pos[itive' in matches() does not compile" in message
    assert "missing ]" in message
    ok = write(
        tmp_path,
        "  - id: pattern\n    when: labels.seen.exists(l, l.matches('^pos'))\n"
        "    outcome: auto_accept\n",
    )
    assert Policy.load(tmp_path, "demo").evaluate(INPUTS).rule_id == "pattern", ok


def test_string_growth_is_bounded(tmp_path: Path) -> None:
    """`.map(s, s + s + s + s)` chained stays under the operation count but would build
    gigabytes: the number of `+` is bounded, and so are string inputs."""
    chain = "labels.seen" + ".map(s, s + s + s + s)" * 4 + ".size() > 0"
    message = refused(tmp_path, f"  - id: grow\n    when: {chain}\n    outcome: auto_accept\n")
    assert "rule 'grow'" in message and "12 '+' operators, over the bound 8" in message
    write(tmp_path, "  - id: seen\n    when: labels.seen.size() > 0\n    outcome: auto_accept\n")
    policy = Policy.load(tmp_path, "demo")
    huge = INPUTS | {"labels.seen": ["x" * 5000]}
    decision = policy.evaluate(huge)
    assert decision.rule_id == "inputs" and "labels.seen" in (decision.error or "")
