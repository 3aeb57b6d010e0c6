"""PII on a real job: what ingest records, what routing sees, what an LLM agent receives, and
what `explain`, reviewers and exports read, against the real stack and the session's worker."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from temporalio.testing import WorkflowEnvironment

from activities import ids
from activities.payloads import LabelDatasetInput, LabelDatasetResult
from agents import pii
from agents.tasks import load_task
from tests.helpers import ThreadWorker, cli, write_jsonl
from tests.unit.fake_llm import POSITIVE, serving
from worker import reviews
from worker.main import Runtime
from worker.settings import Settings

TASK = """\
name: {name}
labels: [positive, negative]
aggregator: majority_vote
pii:
  entities: [EMAIL_ADDRESS, PHONE_NUMBER, US_SSN]
  modes: {{agents: redact, llm: redact, reviewers: mask, exports: redact}}
  sensitivity: {{US_SSN: confidential}}
agents:
  - {{name: keywords, kind: rules, rules: [{{label: positive, patterns: [gem, wonderful]}}]}}
  - {{name: llm, kind: llm, model: fake-model-1, base_url: "{base_url}", request_timeout_s: 5}}
"""
# Routing reads `item.pii`: an item holding a national id is quarantined, whatever the votes.
POLICY = """\
id: {name}
version: 1
inputs:
  item.chars: int
  item.pii: map<string,int>
rules:
  - id: national_id
    when: "'US_SSN' in item.pii"
    outcome: quarantine
  - id: empty
    when: item.chars == 0 || item.pii.size() > 3
    outcome: reject
default:
  outcome: auto_accept
"""
EMAIL, PHONE, SSN = "jane.roe@example.com", "(415) 555-2671", "536-22-8726"
TEXTS = [
    f"A gem of a film. Mail {EMAIL} for the screener.",
    f"Dull and far too long. My SSN is {SSN}, sue me.",
    "A wonderful, warm film.",
    f"Call {PHONE} if you loved it as much as I did.",
]


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def test_pii_recorded_routed_withheld_and_rewritten(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    name = f"pii_{uuid.uuid4().hex[:6]}"
    (stack.policies_dir / name).mkdir()
    (stack.policies_dir / name / "v1.yaml").write_text(POLICY.format(name=name))
    dataset = f"pii{uuid.uuid4().hex[:6]}"
    source = write_jsonl(tmp_path / "pii.jsonl", TEXTS)
    ids_ = [sha(t) for t in TEXTS]
    with serving() as fake:
        (stack.tasks_dir / f"{name}.yaml").write_text(
            TASK.format(name=name, base_url=fake.base_url)
        )
        spec = load_task(stack.tasks_dir, name).pii
        assert spec is not None
        redacted = [pii.view(t, pii.scan(t, spec), spec, "llm") for t in TEXTS]
        assert redacted[0] == "A gem of a film. Mail <EMAIL_ADDRESS> for the screener."
        fake.replies = {t: POSITIVE for t in redacted}
        wid = ids.label_workflow_id(dataset, "j1")
        result = await env.client.execute_workflow(
            ids.LABEL_DATASET_WORKFLOW,
            LabelDatasetInput(dataset=dataset, source=str(source), task=name, policy=name),
            id=wid,
            task_queue=stack.task_queue,
            result_type=LabelDatasetResult,
        )
    raw = (EMAIL, PHONE, SSN)

    # The LLM agent read the `llm` mode's rewrite of every item, never a value.
    sent = [r.body["messages"][-1]["content"] for r in fake.received]
    assert sorted(sent) == sorted(redacted)
    assert not any(v in json.dumps(r.body) for v in raw for r in fake.received)

    # Ingest recorded type and span (never the value) and raised the SSN item's sensitivity.
    async with runtime.engine.connect() as conn:
        rows = {
            r[0]: (r[1], r[2])
            for r in await conn.execute(
                text("SELECT id, redactions, sensitivity FROM item WHERE dataset = :d"),
                {"d": dataset},
            )
        }
        decided = {
            r[0]: (r[1], r[2])
            for r in await conn.execute(
                text("SELECT item_id, rule_id, outcome FROM decision WHERE job_id = :j"),
                {"j": wid},
            )
        }
        seen = {
            (r[0], r[1]): r[2]
            for r in await conn.execute(
                text("SELECT item_id, agent, input_sha256 FROM vote WHERE job_id = :j"), {"j": wid}
            )
        }
        audit = [
            json.dumps(r[0])
            for r in await conn.execute(
                text("SELECT payload FROM audit_event WHERE subject = :j"), {"j": wid}
            )
        ]
    start = TEXTS[0].index(EMAIL)
    assert rows[ids_[0]] == (
        [{"type": "EMAIL_ADDRESS", "start": start, "end": start + len(EMAIL)}],
        "normal",
    )
    assert rows[ids_[1]][1] == "confidential" and rows[ids_[1]][0][0]["type"] == "US_SSN"
    assert rows[ids_[2]] == ([], "normal")
    assert rows[ids_[3]][0][0]["type"] == "PHONE_NUMBER" and rows[ids_[3]][1] == "normal"
    assert not any(v in json.dumps(list(rows.values())) for v in raw)
    assert not any(v in a for v in raw for a in audit)

    # `item.pii` reached the routing policy: the SSN item is quarantined by its rule.
    assert decided[ids_[1]] == ("national_id", "quarantine")
    assert {decided[i] for i in (ids_[0], ids_[2], ids_[3])} == {("default", "auto_accept")}
    assert result.counts.quarantine == 1 and result.counts.auto_accept == 3
    # Votes name what each agent read: a rewrite's sha256, or the item's own for a clean text.
    assert seen[(ids_[0], "llm")] == sha(redacted[0]) == seen[(ids_[0], "keywords")]
    assert seen[(ids_[2], "llm")] == ids_[2]

    # No value in the workflow's history (item ids and counts only).
    history = await env.client.get_workflow_handle(wid).fetch_history()
    assert not any(v in history.to_json() for v in raw)

    # explain shows the spans; a reviewer reads the masked text; an export the redacted one.
    shown = cli(stack, "explain", ids_[0], "--dataset", dataset)
    assert shown.returncode == 0, shown.stdout
    assert f"redactions EMAIL_ADDRESS {start}-{start + len(EMAIL)}" in shown.stdout
    explained = json.loads(cli(stack, "explain", ids_[0], "--dataset", dataset, "--json").stdout)
    assert explained["redactions"] == rows[ids_[0]][0]
    masked = await reviews.item_text(runtime.engine, dataset, ids_[0], tasks_dir=stack.tasks_dir)
    assert masked == TEXTS[0].replace(EMAIL, "*" * len(EMAIL))
    # Without the tasks folder (a caller that cannot read the task), still masked.
    assert await reviews.item_text(runtime.engine, dataset, ids_[0]) == masked
    out = tmp_path / "export.jsonl"
    done = cli(
        stack, "dataset", "export", f"{dataset}@{result.snapshot.version}", "--out", str(out)
    )
    assert done.returncode == 0, done.stdout
    exported = {row["id"]: row["text"] for row in map(json.loads, out.read_text().splitlines())}
    assert exported[ids_[0]] == redacted[0]
    assert exported[ids_[3]] == TEXTS[3].replace(PHONE, "<PHONE_NUMBER>")
    assert exported[ids_[2]] == TEXTS[2]
    assert not any(v in out.read_text() for v in raw)
