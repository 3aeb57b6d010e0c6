"""PII detection and redaction (`agents/pii.py`): what each entity type finds, overlaps, the
four modes, hostile texts, the task's `pii:` section, and what reaches agents and routing."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from agents import pii
from agents.base import TaskError
from agents.pii import PiiSpec, Span
from agents.tasks import parse_task
from tests.unit.fake_llm import POSITIVE, FakeLLM

FOUND = [
    ("EMAIL_ADDRESS", "write to jane.roe+tv@example.co.uk now", "jane.roe+tv@example.co.uk"),
    ("PHONE_NUMBER", "call me on (415) 555-2671 tonight", "(415) 555-2671"),
    ("PHONE_NUMBER", "or +44 20 7946 0958 in London", "+44 20 7946 0958"),
    ("CREDIT_CARD", "charged to 4111 1111 1111 1111 twice", "4111 1111 1111 1111"),
    ("IBAN_CODE", "refund to GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN_CODE", "or DE89370400440532013000.", "DE89370400440532013000"),
    ("IP_ADDRESS", "streamed from 192.168.10.24 all night", "192.168.10.24"),
    ("IP_ADDRESS", "over 2001:db8:85a3::8a2e:370:7334 too", "2001:db8:85a3::8a2e:370:7334"),
    ("URL", "it is at https://www.example.com/reviews/42 now", "https://www.example.com/reviews/42"),
    ("US_SSN", "my SSN 536-22-8726 leaked", "536-22-8726"),
    ("US_ITIN", "ITIN 917-99-9325 on file", "917-99-9325"),
    ("ES_NIF", "con NIF 18034063Q pagado", "18034063Q"),
    ("IT_FISCAL_CODE", "codice BCCFRC15M25E852P ok", "BCCFRC15M25E852P"),
    ("PL_PESEL", "PESEL 26070114179 here", "26070114179"),
    ("SE_PERSONNUMMER", "nummer 961115-5822 här", "961115-5822"),
]  # fmt: skip


@pytest.mark.parametrize(("entity", "text", "value"), FOUND)
def test_each_entity_type_is_found(entity: str, text: str, value: str) -> None:
    spans = pii.detect(text, [entity])
    assert [(s.type, text[s.start : s.end]) for s in spans] == [(entity, value)]


def test_checksums_and_clean_text_find_nothing() -> None:
    assert pii.detect("charged to 4111 1111 1111 1112 twice", ["CREDIT_CARD"]) == []  # Luhn
    assert pii.detect("refund to GB82 WEST 1234 5698 7654 33", ["IBAN_CODE"]) == []  # mod 97
    clean = "A tender, funny film; 9 out of 10, and the best of 1999. Not a dull minute."
    assert pii.detect(clean, pii.ENTITIES) == []


def test_overlaps_resolve_to_one_span() -> None:
    # presidio's URL recognizer also matches inside the email ("example.com"): the email wins.
    text = "mail john.doe@example.com now"
    spans = pii.detect(text, ["URL", "EMAIL_ADDRESS"])
    assert [(s.type, text[s.start : s.end]) for s in spans] == [
        ("EMAIL_ADDRESS", "john.doe@example.com")
    ]
    # Higher score first, then longer, then earlier; one type's overlapping spans merge.
    got = pii.resolve(
        [
            Span("PHONE_NUMBER", 0, 10, 0.4),
            Span("US_SSN", 2, 8, 0.5),
            Span("URL", 20, 30, 0.5),
            Span("IP_ADDRESS", 22, 34, 0.5),
            Span("URL", 40, 45, 0.6),
            Span("URL", 43, 50, 0.5),
        ]
    )
    assert got == [
        Span("US_SSN", 2, 8, 0.5),
        Span("IP_ADDRESS", 22, 34, 0.5),
        Span("URL", 40, 50, 0.6),
    ]


def test_modes_redact_mask_hash_off() -> None:
    text = "mail a@example.com or b@example.com, a@example.com again"
    spans = pii.detect(text, ["EMAIL_ADDRESS"])
    spec = PiiSpec(task="t")
    assert pii.apply(text, spans, "redact") == (
        "mail <EMAIL_ADDRESS> or <EMAIL_ADDRESS>, <EMAIL_ADDRESS> again"
    )
    masked = pii.apply(text, spans, "mask")
    assert len(masked) == len(text) and "example" not in masked and masked.startswith("mail ****")
    hashed = pii.apply(text, spans, "hash", spec.key)
    tags = [w.strip(",") for w in hashed.split() if w.startswith("<")]
    assert len(tags) == 3 and tags[0] == tags[2] != tags[1]  # same value, same pseudonym
    assert tags[0].startswith("<EMAIL_ADDRESS:") and len(tags[0]) == len("<EMAIL_ADDRESS:>") + 8
    other = pii.apply(text, spans, "hash", PiiSpec(task="t", salt="pepper").key)
    assert other != hashed  # the salt (and the task) key the hash
    assert pii.apply(text, spans, "off") == text
    with pytest.raises(ValueError, match="unknown PII mode"):
        pii.apply(text, spans, "shred")
    # Stored form: type and span, never the value.
    stored = pii.redactions(spans)
    assert stored[0] == {"type": "EMAIL_ADDRESS", "start": 5, "end": 18}
    assert "example" not in json.dumps(stored)
    assert pii.spans_of(stored) == [Span(s.type, s.start, s.end) for s in spans]
    assert pii.spans_of([{"type": 1}, "x", {"type": "URL", "start": 0, "end": 2}]) == [
        Span("URL", 0, 2)
    ]


def test_hostile_texts_never_crash_and_fail_closed() -> None:
    spec = PiiSpec(task="t")
    # NUL and lone surrogates: found around them, offsets unchanged, nothing raised.
    text = "\x00\ud800 x a@example.com \udfff\x00 4111 1111 1111 1111"
    spans = pii.detect(text, pii.DEFAULT_ENTITIES)
    assert {(s.type, text[s.start : s.end]) for s in spans} == {
        ("EMAIL_ADDRESS", "a@example.com"),
        ("CREDIT_CARD", "4111 1111 1111 1111"),
    }
    assert pii.apply(text, spans, "hash", spec.key).count("<") == 2
    # Too long for detection: refused, and `scan` withholds the whole text.
    huge = "a" * (pii.MAX_TEXT_CHARS + 1)
    with pytest.raises(pii.PiiError, match="over"):
        pii.detect(huge)
    assert pii.scan(huge, spec) == [Span(pii.UNCHECKED, 0, len(huge), 1.0)]
    assert pii.apply(huge, pii.scan(huge, spec), "redact") == "<UNCHECKED>"
    # A regex past its time limit (presidio would skip it silently) fails closed, quickly.
    slow = "a." * 10_000
    started = time.monotonic()
    assert pii.scan(slow, spec) == [Span(pii.UNCHECKED, 0, len(slow), 1.0)]
    assert time.monotonic() - started < pii.DETECT_BUDGET_S + 4 * pii.REGEX_TIMEOUT_S
    # Also when presidio's logger is switched off (its timeout note cannot be read).
    presidio_log = logging.getLogger("presidio-analyzer")
    presidio_log.disabled = True
    try:
        assert pii.scan(slow, spec) == [Span(pii.UNCHECKED, 0, len(slow), 1.0)]
    finally:
        presidio_log.disabled = False
    # Windows overlap: an email across a window's edge, and one far along, are found whole.
    edge = "x" * (pii.WINDOW - 8) + " bob@example.com " + "y " * 5000 + "end c@example.org"
    found = [edge[s.start : s.end] for s in pii.detect(edge, ["EMAIL_ADDRESS"])]
    assert found == ["bob@example.com", "c@example.org"]
    assert pii.detect("", pii.ENTITIES) == []


def test_sensitivity_and_counts() -> None:
    spec = PiiSpec(sensitivity={"US_SSN": "confidential", "CREDIT_CARD": "restricted"})
    email, ssn = Span("EMAIL_ADDRESS", 0, 1), Span("US_SSN", 2, 3)
    assert pii.sensitivity([email], spec) == "normal"
    assert pii.sensitivity([email, ssn], spec) == "confidential"
    assert pii.sensitivity([Span(pii.UNCHECKED, 0, 9)], spec) == "restricted"
    assert pii.sensitivity([ssn], None) == "normal"
    assert pii.counts([email, ssn, email]) == {"EMAIL_ADDRESS": 2, "US_SSN": 1}
    assert pii.mark("no pii here", None) == ([], "normal")
    redactions, level = pii.mark("SSN 536-22-8726", spec)
    assert redactions == [{"type": "US_SSN", "start": 4, "end": 15}] and level == "confidential"


# --- the task's `pii:` section --------------------------------------------------------------

TASK = """\
name: {name}
labels: [positive, negative]
{extra}agents:
  - {{name: kw, kind: rules, rules: [{{label: positive, patterns: [good]}}]}}
{more}"""


def task_file(tmp_path: Path, extra: str, name: str = "t", more: str = "") -> tuple[Path, bytes]:
    path = tmp_path / f"{name}.yaml"
    data = TASK.format(name=name, extra=extra, more=more).encode()
    path.write_bytes(data)
    return path, data


def test_task_pii_section(tmp_path: Path) -> None:
    assert parse_task(*task_file(tmp_path, "")).pii is None  # absent: as before, nothing
    assert parse_task(*task_file(tmp_path, "pii: false\n")).pii is None
    spec = parse_task(
        *task_file(
            tmp_path,
            "pii:\n  entities: [EMAIL_ADDRESS, US_SSN]\n"
            "  modes: {agents: off, llm: hash, reviewers: 'off'}\n"
            "  sensitivity: {US_SSN: restricted}\n  min_score: {EMAIL_ADDRESS: 0.9}\n"
            "  salt: s1\n",
        )
    ).pii
    assert spec is not None
    assert spec.entities == ("EMAIL_ADDRESS", "US_SSN")
    # A bare `off` is YAML's false: read as off; left out: the defaults.
    assert dict(spec.modes) == {
        "agents": "off",
        "llm": "hash",
        "reviewers": "off",
        "exports": "redact",
    }
    assert dict(spec.sensitivity) == {"US_SSN": "restricted"} and spec.salt == "s1"
    assert spec.task == "t" and dict(spec.min_score) == {"EMAIL_ADDRESS": 0.9}
    defaults = parse_task(*task_file(tmp_path, "pii: {}\n")).pii
    assert defaults is not None and defaults.entities == pii.DEFAULT_ENTITIES


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("pii: [EMAIL]\n", "field 'pii' must be a mapping"),
        ("pii: {entities: [EMAIL]}\n", "field 'pii.entities': unknown PII entity 'EMAIL'"),
        ("pii: {entities: []}\n", "field 'pii.entities' must be a non-empty list"),
        ("pii: {entities: [URL, URL]}\n", "names an entity twice"),
        ("pii: {modes: {llm: shred}}\n", "field 'pii.modes.llm' must be one of redact"),
        ("pii: {modes: {robots: mask}}\n", "unknown consumer 'robots'"),
        ("pii: {sensitivity: {US_SSN: secret}}\n", "'pii.sensitivity.US_SSN' must be one of"),
        ("pii: {entities: [URL], sensitivity: {US_SSN: restricted}}\n", "not in pii.entities"),
        ("pii: {min_score: {URL: 2}}\n", "'pii.min_score.URL' must be a number in (0, 1]"),
        ("pii: {salt: 7}\n", "field 'pii.salt' must be a string"),
        ("pii: {mode: redact}\n", "field 'pii' has unknown field(s) 'mode'"),
        ("max_chars: 900000\npii: {}\n", "field 'max_chars' must be at most"),
    ],
)
def test_task_pii_errors_name_file_and_field(tmp_path: Path, extra: str, message: str) -> None:
    path, data = task_file(tmp_path, extra)
    with pytest.raises(TaskError) as err:
        parse_task(path, data)
    assert str(path) in str(err.value) and message in str(err.value)


# --- what agents read, and what routing sees ------------------------------------------------

RAW = [
    ("A gem. Mail jane.roe@example.com for the screener.", "jane.roe@example.com"),
    ("Dull. Call (415) 555-2671 to complain.", "(415) 555-2671"),
    ("Great! Card 4111 1111 1111 1111 was charged.", "4111 1111 1111 1111"),
    ("Fine, from 192.168.10.24, SSN 536-22-8726.", "536-22-8726"),
]


def test_llm_agent_never_receives_raw_pii(tmp_path: Path, fake: FakeLLM) -> None:
    from agents.pipeline import agent_inputs, timed_predict
    from agents.tasks import build_agents

    llm_agent = f"  - {{name: llm, kind: llm, model: fake-model-1, base_url: '{fake.base_url}'}}\n"
    pii_section = "pii:\n  modes: {agents: 'off', llm: redact}\n"
    task = parse_task(*task_file(tmp_path, pii_section, more=llm_agent))
    agents = build_agents(task, None, models_dir=tmp_path)
    texts = [text for text, _ in RAW]
    found, inputs = agent_inputs(task, agents, texts)
    by_name = dict(zip([a.name for a in agents], inputs, strict=True))
    assert by_name["kw"] == texts  # agents: off reads the text as it is
    assert by_name["llm"][0] == "A gem. Mail <EMAIL_ADDRESS> for the screener."
    fake.replies = {text: POSITIVE for text in by_name["llm"]}
    llm = next(a for a in agents if a.name == "llm")
    votes = asyncio.run(timed_predict(llm, task, by_name["llm"]))
    assert [v.label for v in votes] == ["positive"] * len(texts)
    sent = [r.body["messages"][-1]["content"] for r in fake.received]
    assert len(sent) == len(texts)
    assert not any(value in body for _, value in RAW for body in sent)
    assert not any(value in json.dumps(r.body) for _, value in RAW for r in fake.received)
    assert found[3] == {"IP_ADDRESS": 1, "US_SSN": 1}


def test_item_pii_reaches_a_routing_rule(tmp_path: Path) -> None:
    from agents.aggregate import majority_vote
    from agents.base import Vote
    from agents.pipeline import policy_inputs
    from policy_rules.engine import Policy

    folder = tmp_path / "route_pii"
    folder.mkdir()
    (folder / "v1.yaml").write_text(
        "id: route_pii\nversion: 1\ninputs:\n  item.chars: int\n  item.pii: map<string,int>\n"
        "rules:\n  - id: has_pii\n    when: item.pii.size() > 0\n    outcome: quarantine\n"
        "  - id: has_ssn\n    when: \"'US_SSN' in item.pii\"\n    outcome: reject\n"
        "default: {outcome: auto_accept}\n"
    )
    policy = Policy.load(tmp_path, "route_pii")
    ens = majority_vote([Vote(label="positive", confidence=0.9, rationale="")])
    found = pii.counts(pii.detect(RAW[0][0]))
    assert policy.evaluate(policy_inputs(RAW[0][0], ens, found)).rule_id == "has_pii"
    assert policy.evaluate(policy_inputs("clean text", ens)).outcome == "auto_accept"
    # Policies that do not declare it ignore it: the shipped versions decide as before.
    shipped = Policy.load(Path(__file__).resolve().parents[2] / "policy_rules", "route_default@2")
    assert "item.pii" not in shipped.inputs
    assert policy_inputs("x", ens, found)["item.pii"] == {"EMAIL_ADDRESS": 1}


# --- exports and imports --------------------------------------------------------------------


def test_exports_rewrite_texts_in_every_format(tmp_path: Path) -> None:
    import hashlib
    import io

    import pyarrow.parquet as pq

    from formats import snapshot_files
    from formats.export import export

    rows: list[dict[str, Any]] = [
        {"id": "a" * 64, "text": RAW[0][0], "label": "positive", "label_source": "agent",
         "job_id": "label:d:j", "split": None},
        {"id": "b" * 64, "text": "A wonderful, warm film.", "label": "positive",
         "label_source": "human", "job_id": "label:d:j", "split": "train"},
    ]  # fmt: skip
    data = b"".join(snapshot_files.encode(r) for r in rows)
    spec = PiiSpec(task="t")

    def rewrite(text: str) -> str:
        return pii.view(text, pii.scan(text, spec), spec, "exports")

    def run(fmt: str) -> Path:
        out = tmp_path / f"out.{fmt}"
        export(io.BytesIO(data), expected_sha256=hashlib.sha256(data).hexdigest(), fmt=fmt,
               out=out, rewrite=rewrite)  # fmt: skip
        return out

    lines = run("jsonl").read_bytes().splitlines(keepends=True)
    assert json.loads(lines[0])["text"] == "A gem. Mail <EMAIL_ADDRESS> for the screener."
    assert lines[1] == data.splitlines(keepends=True)[1]  # untouched: byte for byte
    assert [r["text"] for r in pq.read_table(run("parquet")).to_pylist()] == [
        rewrite(r["text"]) for r in rows
    ]
    tasks = json.loads(run("label-studio").read_text())
    assert "jane.roe" not in json.dumps(tasks) and "<EMAIL_ADDRESS>" in tasks[0]["data"]["text"]


def test_label_studio_import_marks_items(tmp_path: Path) -> None:
    from formats import labelstudio

    spec = PiiSpec(task="t", sensitivity={"US_SSN": "confidential"})
    path = tmp_path / "ls.json"
    path.write_text(json.dumps([{"data": {"text": text}} for text, _ in RAW]))
    parsed = labelstudio.parse(path, dataset="d", job_id="import:d:x", labels=("a", "b"),
                               text_field="text", mark=lambda t: pii.mark(t, spec))  # fmt: skip
    assert [i["redactions"][0]["type"] for i in parsed.items] == [
        "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS",
    ]  # fmt: skip
    assert [i["sensitivity"] for i in parsed.items] == ["normal"] * 3 + ["confidential"]
    assert not any(v in json.dumps(i["redactions"]) for _, v in RAW for i in parsed.items)
    plain = labelstudio.parse(path, dataset="d", job_id="j", labels=("a", "b"), text_field="text")
    assert all(i["redactions"] == [] and i["sensitivity"] == "normal" for i in plain.items)
