"""Staged rollout through real jobs: a candidate shadowing the active version, a quality gate
judging each snapshot, and a newly activated version rolled back when its snapshot fails.

The worker sees its own copies: `route_gate` (v1 = route_default's v2; v2 = the same rules with
both confidence thresholds at 0, so every item the agents agree on is auto-accepted), the gate
`gate_trial` (quality_default with min_gold_items 10), and the sentiment task naming that gate.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from catalog import db
from tests.helpers import ThreadWorker, cli, write_jsonl
from worker.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.slow
POLICY, GATE = "route_gate", "gate_trial"
LOOSE = {"min_confidence_corroborated": 0.67, "min_confidence": 0.72}


@pytest.fixture(scope="module")
def rollout(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("rollout")
    src = PROJECT_ROOT / "policy_rules"
    route = root / "policies" / POLICY
    route.mkdir(parents=True)
    v1 = (src / "route_default" / "v2.yaml").read_text()
    v1 = v1.replace("id: route_default", f"id: {POLICY}").replace("version: 2", "version: 1")
    (route / "v1.yaml").write_text(v1)
    v2 = v1.replace("version: 1", "version: 2")
    for name, value in LOOSE.items():
        v2 = v2.replace(f"{name}: {value}", f"{name}: 0.0")
    assert v2.count(": 0.0\n") == 2
    (route / "v2.yaml").write_text(v2)
    # route_default's cases, the threshold-dependent ones pinned to v1, plus v2's own.
    cases = yaml.safe_load((src / "route_default" / "cases.yaml").read_text())
    for case in cases:
        if case["expect"]["rule"] == "default":
            case["versions"] = [1]
    cases += [
        {
            "name": "v2 accepts agreeing votes however unsure",
            "versions": [2],
            "input": {
                **cases[0]["input"],
                "item.chars": 120,
                "votes.abstained": 1,
                "ensemble.label": "positive",
                "ensemble.confidence": 0.1,
                "ensemble.agreement": 1.0,
            },
            "expect": {"outcome": "auto_accept", "rule": "confident"},
        }
    ]
    (route / "cases.yaml").write_text(yaml.safe_dump(cases, sort_keys=False))

    gate = root / "policies" / GATE
    gate.mkdir()
    text_ = (src / "quality_default" / "v1.yaml").read_text()
    text_ = text_.replace("id: quality_default", f"id: {GATE}")
    (gate / "v1.yaml").write_text(text_.replace("min_gold_items: 20", "min_gold_items: 10"))
    shutil.copy(src / "quality_default" / "cases.yaml", gate / "cases.yaml")

    shutil.copytree(src / "route_reliability", root / "policies" / "route_reliability")

    tasks = root / "tasks"
    tasks.mkdir()
    task = (PROJECT_ROOT / "tasks" / "sentiment.yaml").read_text()
    (tasks / "sentiment.yaml").write_text(task.replace("gate: quality_default", f"gate: {GATE}"))
    strict = task.replace("name: sentiment", "name: sentiment_strict") + "leakage: refuse\n"
    (tasks / "sentiment_strict.yaml").write_text(strict)
    shutil.copy(PROJECT_ROOT / "tasks" / "sentiment_seed.jsonl", tasks)

    local = stack.model_copy(
        update={
            "policies_dir": root / "policies",
            "tasks_dir": tasks,
            "task_queue": f"rollout-{uuid.uuid4().hex[:6]}",
        }
    )
    db.migrate(local.catalog_url)  # the CLI may reach the catalog before the worker migrates
    with ThreadWorker(local):
        yield local


def sql(settings: Settings, query: str, **params: Any) -> list[Any]:
    async def run() -> list[Any]:
        engine = db.make_engine(settings.catalog_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(text(query), params)).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def run_job(
    settings: Settings, source: Path, policy_id: str = POLICY, dataset: str = ""
) -> tuple[str, str, str]:
    """(dataset, job id, policy@version) of a finished job on the policy's active version."""
    dataset = dataset or f"ro{uuid.uuid4().hex[:6]}"
    out = cli(
        settings, "job", "start", str(source), "--dataset", dataset, "--task", "sentiment",
        "--policy", policy_id, "--wait",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    policy = re.search(rf"policy\s*│\s*({policy_id}@\d+)", out.stdout)
    job = re.search(r"job (label:\S+)", out.stdout)
    assert policy and job, out.stdout
    return dataset, job[1], policy[1]


def test_shadow_then_gate_rolls_back_a_bad_activation(
    rollout: Settings, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    rows = gold_rows[2100:2160]
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n"
                            for r in rows))  # fmt: skip
    loaded = cli(rollout, "review", "gold", str(gold), "--task", "sentiment")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    source = write_jsonl(tmp_path / "items.jsonl", [r["text"] for r in rows])

    on = cli(rollout, "policy", "activate", f"{POLICY}@1", "--reason", "baseline")
    assert on.returncode == 0, on.stdout

    # --- shadow: v2 beside v1 on real traffic; v1 still decides everything ----------------
    sh = cli(rollout, "policy", "shadow", f"{POLICY}@2", "--reason", "try lower thresholds")
    assert sh.returncode == 0 and f"{POLICY}@2 now shadows {POLICY}" in sh.stdout, sh.stdout
    listed = cli(rollout, "policy", "list")
    assert re.search(rf"{POLICY}\s*│\s*1, 2\s*│\s*v1\s*│\s*v2", listed.stdout), listed.stdout
    dataset, job, used = run_job(rollout, source)
    assert used == f"{POLICY}@1"
    decided = sql(
        rollout,
        "SELECT d.outcome, s.active_outcome, s.outcome, d.policy_version FROM decision d"
        " JOIN shadow_decision s ON s.job_id = d.job_id AND s.item_id = d.item_id"
        " WHERE d.job_id = :j AND s.candidate_version = 2",
        j=job,
    )
    assert len(decided) == len(rows)  # every item evaluated by both
    assert all(r[0] == r[1] and r[3] == 1 for r in decided)  # v1's outcome was recorded
    promoted = sum(r[1] == "human_review" and r[2] == "auto_accept" for r in decided)
    assert promoted > 0  # v2 would accept what v1 sent to people

    report = cli(rollout, "policy", "shadow-report", f"{POLICY}@2", "--json", "--on", POLICY)
    assert report.returncode == 0, report.stdout
    data = json.loads(report.stdout)
    elsewhere = cli(rollout, "policy", "shadow-report", f"{POLICY}@2", "--json", "--on", GATE)
    assert json.loads(elsewhere.stdout)["items"] == 0
    assert data["items"] == len(rows)
    cells = {(c["decided"], c["candidate"]): c["items"] for c in data["confusion"]}
    assert cells[("human_review", "auto_accept")] == promoted
    assert data["agree"] == sum(n for (a, c), n in cells.items() if a == c)
    examples = [e for e in data["examples"] if e["candidate"] == "auto_accept"]
    assert 0 < len(examples) <= 3 and examples[0]["decided"] == "human_review"
    assert examples[0]["text"] in [r["text"] for r in rows]
    table = cli(rollout, "policy", "shadow-report", f"{POLICY}@2")
    assert f"{len(rows)} items, same outcome on {data['agree']}" in table.stdout, table.stdout

    off = cli(rollout, "policy", "shadow", f"{POLICY}@2", "--stop", "--reason", "seen enough")
    assert off.returncode == 0 and "no longer shadows" in off.stdout
    assert [r[0] for r in sql(rollout, "SELECT kind FROM audit_event WHERE subject = :s"
                              " AND kind LIKE 'policy_shadow%' ORDER BY id",
                              s=f"policy:{POLICY}")][-2:] == [
        "policy_shadow_attached", "policy_shadow_detached"]  # fmt: skip

    # --- activate v2: its first snapshot fails the gate, and the activation rolls back ----
    on = cli(rollout, "policy", "activate", f"{POLICY}@2", "--reason", "shadow looked fine")
    assert on.returncode == 0, on.stdout
    dataset, job, used = run_job(rollout, source)
    assert used == f"{POLICY}@2"
    assert not sql(rollout, "SELECT 1 FROM shadow_decision WHERE job_id = :j", j=job)

    # The gate's metrics, recomputed here from the catalog.
    labels = sql(
        rollout,
        "SELECT l.label, g.label FROM label l LEFT JOIN gold_label g"
        " ON g.item_id = l.item_id AND g.task = 'sentiment'"
        " WHERE l.dataset = :d AND l.is_current",
        d=dataset,
    )
    with_gold = [(a, b) for a, b in labels if b is not None]
    accuracy = sum(a == b for a, b in with_gold) / len(with_gold)
    assert len(with_gold) >= 10 and accuracy < 0.85  # the premise: v2 is worse than the bar
    snap = sql(
        rollout,
        "SELECT training_ready, gate, gate_result, item_count, label_distribution"
        " FROM snapshot WHERE dataset = :d",
        d=dataset,
    )
    assert len(snap) == 1
    ready, verdict, result, count, distribution = snap[0]
    assert ready is False and result == "fail" and count == len(labels)
    assert (verdict["policy"], verdict["version"], verdict["rule"]) == (
        GATE,
        1,
        "gold_accuracy_low",
    )
    assert verdict["metrics"]["snapshot.gold_count"] == len(with_gold)
    assert verdict["metrics"]["snapshot.gold_accuracy"] == pytest.approx(accuracy)
    assert set(verdict["read"]) == {"snapshot.gold_count", "snapshot.gold_accuracy"}
    assert sum(distribution.values()) == count

    back = sql(
        rollout,
        "SELECT version, action, actor, reason FROM policy_activation WHERE policy_id = :p"
        " ORDER BY id DESC LIMIT 1",
        p=POLICY,
    )[0]
    assert (back[0], back[1], back[2]) == (1, "rollback", f"gate:{GATE}@1")
    assert f"snapshot {dataset}@1 failed gate {GATE}@1" in back[3]
    assert f"snapshot.gold_accuracy = {accuracy:.4g}" in back[3]
    audit = sql(
        rollout,
        "SELECT payload FROM audit_event WHERE kind = 'gate_verdict' AND subject = :s",
        s=f"{dataset}@1",
    )
    assert audit[0][0]["rolled_back"] == f"{POLICY}: v2 -> v1"

    # The next job takes the previous version; a rollback's version is not on probation.
    dataset, job, used = run_job(rollout, source)
    assert used == f"{POLICY}@1"
    active = sql(
        rollout,
        "SELECT version FROM policy_activation WHERE policy_id = :p ORDER BY id DESC LIMIT 1",
        p=POLICY,
    )
    assert active[0][0] == 1
    # v1's verdict, whatever it is, agrees with the gate's rule on its own metrics.
    verdict = sql(rollout, "SELECT gate, training_ready FROM snapshot WHERE dataset = :d",
                  d=dataset)[0]  # fmt: skip
    m = verdict[0]["metrics"]
    fails = m["snapshot.gold_count"] >= 10 and m["snapshot.gold_accuracy"] < 0.85
    assert verdict[1] is (not fails)


def test_jobs_supply_reliabilities_and_drift_to_policies(
    rollout: Settings, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    """route_reliability reads agents.reliability (a map), ensemble.support and drift.*: two
    jobs on one dataset (the second with a snapshot to drift from) decide every item by a
    rule of the policy, none by an input error."""
    first = write_jsonl(tmp_path / "a.jsonl", [r["text"] for r in gold_rows[2200:2260]])
    second = write_jsonl(tmp_path / "b.jsonl", [r["text"] for r in gold_rows[2260:2300]])
    dataset, job_a, used = run_job(rollout, first, "route_reliability")
    assert used == "route_reliability@1"
    _, job_b, _ = run_job(rollout, second, "route_reliability", dataset)
    rules = {"too_long", "all_abstained", "drifted", "reliable_fabric", "supported", "default"}
    for job, n in ((job_a, 60), (job_b, 40)):
        rows = sql(rollout, "SELECT rule_id, error FROM decision WHERE job_id = :j", j=job)
        assert len(rows) == n
        assert all(rule in rules and error is None for rule, error in rows), rows
    fired = {r[0] for r in sql(rollout, "SELECT rule_id FROM decision WHERE dataset = :d",
                               d=dataset)}  # fmt: skip
    assert fired & {"reliable_fabric", "supported"}  # some labels were backed by reliability


def test_jobs_refuse_gate_policies_repeated_agents_and_leaky_sources(
    rollout: Settings, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", [r["text"] for r in gold_rows[2300:2305]])
    start = ["job", "start", str(source), "--dataset", f"ro{uuid.uuid4().hex[:6]}", "--wait"]
    gate = cli(rollout, *start, "--task", "sentiment", "--policy", GATE)
    assert gate.returncode == 1
    assert f"{GATE}@1 is a gate policy: a job needs a routing policy" in " ".join(
        gate.stdout.split()
    )
    twice = cli(rollout, *start, "--task", "sentiment", "--policy", POLICY, "--agent",
                "keywords", "--agent", "keywords")  # fmt: skip
    assert twice.returncode == 1 and "an agent is named twice" in twice.stdout

    # leakage: refuse is all or nothing: a leak on the last line stores none of the source.
    rows = [{"text": r["text"], "split": "train"} for r in gold_rows[2305:2310]]
    rows.append({"text": rows[0]["text"], "split": "test"})
    leaky = tmp_path / "leaky.jsonl"
    leaky.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = f"ro{uuid.uuid4().hex[:6]}"
    out = cli(rollout, "job", "start", str(leaky), "--dataset", dataset, "--task",
              "sentiment_strict", "--policy", POLICY, "--wait")  # fmt: skip
    assert out.returncode == 1, out.stdout
    assert "line 6: content also in split 'train' earlier in this source" in " ".join(
        out.stdout.split()
    )
    assert sql(rollout, "SELECT count(*) FROM item WHERE dataset = :d", d=dataset)[0][0] == 0
