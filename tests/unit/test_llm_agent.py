"""LLMAgent against a local fake OpenAI-compatible server (tests/unit/fake_llm.py): labels,
confidence from logprobs, and abstentions with their reasons. Plain Python, no stack needed.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from agents.base import MAX_RATIONALE_CHARS, Agent
from agents.llm import DEFAULT_CONFIDENCE
from tests.unit.fake_llm import (
    POSITIVE,
    POSITIVE_CONFIDENCE,
    FakeLLM,
    Reply,
    bare,
    scripted,
    tok,
)


def test_satisfies_the_agent_protocol(fake: FakeLLM) -> None:
    agent = fake.agent()
    assert isinstance(agent, Agent)
    assert agent.name == "llm"
    assert len(agent.version) == 16 and int(agent.version, 16) >= 0


def test_label_and_confidence_from_logprobs(fake: FakeLLM) -> None:
    fake.replies["a warm, funny film"] = POSITIVE
    [vote] = fake.agent().predict(["a warm, funny film"])
    assert vote.label == "positive"
    # "pos" (another spelling of the chosen label) and " " (no label) are not competitors.
    assert vote.confidence == pytest.approx(POSITIVE_CONFIDENCE, rel=1e-12)
    assert vote.rationale == "llm: praises the acting"


def test_confidence_multi_token_label_with_shared_prefix(fake: FakeLLM) -> None:
    # {"label": "negative", ...} with the label split as "ne" + "gative"; "neutral" competes at
    # the second token, "positive" at the first; "n" fits both negative and neutral (ignored).
    fake.replies["flat and slow"] = scripted(
        [
            tok('{"', 0.0),
            tok("label", 0.0),
            tok('":', 0.0),
            tok(' "', 0.0),
            tok("ne", -0.1, ("pos", -2.5), ("n", -3.0), ("Ne", -4.0)),
            tok("gative", -0.3, ("utral", -1.4), ("g", -5.0)),
            tok('",', 0.0),
            tok(' "', 0.0),
            tok("rationale", 0.0),
            tok('":', 0.0),
            tok(' "', 0.0),
            tok("dull", -0.2),
            tok('"}', 0.0),
        ]
    )
    [vote] = fake.agent(labels=("positive", "negative", "neutral")).predict(["flat and slow"])
    p = math.exp(-0.1) * math.exp(-0.3)
    competitors = math.exp(-2.5) + math.exp(-0.1) * math.exp(-1.4)
    assert vote.label == "negative"
    assert vote.confidence == pytest.approx(p / (p + competitors), rel=1e-12)


def test_confidence_when_label_token_carries_json_punctuation(fake: FakeLLM) -> None:
    # The label's first token also spells '":"' before the value; alternatives are compared
    # after that shared lead, and a bare '":"' (no label yet) or '": "' is not a competitor.
    fake.replies["loved it"] = scripted(
        [
            tok('{"label', 0.0),
            tok('":"pos', -0.05, ('":"neg', -3.2), ('":"', -4.0), ('": "', -5.0)),
            tok("itive", -0.01),
            tok('","rationale":"', 0.0),
            tok("great", -0.1),
            tok('"}', 0.0),
        ]
    )
    [vote] = fake.agent().predict(["loved it"])
    p = math.exp(-0.05) * math.exp(-0.01)
    assert vote.label == "positive"
    assert vote.confidence == pytest.approx(p / (p + math.exp(-3.2)), rel=1e-12)


def test_confidence_without_alternatives_is_the_label_probability(fake: FakeLLM) -> None:
    tokens = [
        bare('{"label":"', 0.0),
        bare("negative", -0.4),
        bare('","rationale":"', 0.0),
        bare("boring", -0.3),
        bare('"}', 0.0),
    ]
    fake.replies["meh"] = scripted(tokens)
    [vote] = fake.agent().predict(["meh"])
    assert vote.label == "negative"
    assert vote.confidence == pytest.approx(math.exp(-0.4), rel=1e-12)


def test_confidence_is_one_when_no_other_label_is_among_alternatives(fake: FakeLLM) -> None:
    fake.replies["superb"] = scripted(
        [
            tok('{"label":"', 0.0),
            tok("positive", -0.7, ("pos", -1.0), ("Positive", -2.0)),
            tok('","rationale":"', 0.0),
            tok("superb", 0.0),
            tok('"}', 0.0),
        ]
    )
    [vote] = fake.agent().predict(["superb"])
    assert vote.label == "positive"
    assert vote.confidence == 1.0


def test_default_confidence_without_logprobs(fake: FakeLLM) -> None:
    content = json.dumps({"label": "negative", "rationale": "  calls it\n a mess "})
    fake.replies["a mess"] = Reply(content=content)
    [vote] = fake.agent().predict(["a mess"])
    assert vote.label == "negative"
    assert vote.confidence == DEFAULT_CONFIDENCE
    assert vote.rationale == "llm: [no logprobs] calls it a mess"
    [custom] = fake.agent(default_confidence=0.55).predict(["a mess"])
    assert custom.confidence == 0.55


def test_logprobs_not_spelling_the_label_fall_back_to_default(fake: FakeLLM) -> None:
    content = json.dumps({"label": "positive", "rationale": "ok"})
    fake.replies["x"] = Reply(content=content, logprobs=[tok("something else", -0.1)])
    [vote] = fake.agent().predict(["x"])
    assert (vote.label, vote.confidence) == ("positive", DEFAULT_CONFIDENCE)
    assert vote.rationale.startswith("llm: [no logprobs]")


def test_long_rationale_is_clipped(fake: FakeLLM) -> None:
    fake.replies["long"] = Reply(content=json.dumps({"label": "positive", "rationale": "w" * 500}))
    [vote] = fake.agent().predict(["long"])
    assert len(vote.rationale) == MAX_RATIONALE_CHARS
    assert vote.rationale.endswith("…")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(content='{"label": "maybe", "rationale": "unsure"}'), "llm: label 'maybe' not in"),
        (Reply(content="I think it is positive"), "llm: output is not JSON: 'I think it is"),
        (Reply(content='{"label": "positive"}'), "llm: output lacks a string 'rationale'"),
        (Reply(content='{"rationale": "no label"}'), "llm: output lacks a string 'label'"),
        (Reply(content='["positive"]'), "llm: output is not a JSON object"),
        (Reply(content=None), "llm: empty output"),
        (Reply(status=500, error="model overloaded"), "llm: HTTP 500: model overloaded"),
        (Reply(status=429, error="rate limited"), "llm: HTTP 429: rate limited"),
        # Following it would send the API key to another host.
        (
            Reply(status=307, location="http://127.0.0.1:9/steal"),
            "llm: endpoint redirected (307) to http://127.0.0.1:9/steal: not followed",
        ),
    ],
)
def test_bad_replies_abstain_with_the_reason(fake: FakeLLM, reply: Reply, reason: str) -> None:
    fake.replies["t"] = reply
    [vote] = fake.agent().predict(["t"])
    assert vote.label is None and vote.confidence == 0.0
    assert vote.rationale.startswith(reason), vote.rationale


def test_label_outside_set_names_the_label(fake: FakeLLM) -> None:
    fake.replies["t"] = Reply(content='{"label": "maybe", "rationale": "unsure"}')
    [vote] = fake.agent().predict(["t"])
    assert vote.rationale == "llm: label 'maybe' not in label set"


def test_slow_reply_times_out(fake: FakeLLM) -> None:
    fake.replies["slow"] = Reply(content='{"label":"positive","rationale":"late"}', wait_s=10)
    agent = fake.agent(timeout_s=0.5)
    started = time.monotonic()
    [vote] = agent.predict(["slow"])
    assert time.monotonic() - started < 3
    assert vote.label is None
    assert vote.rationale == "llm: timed out after 0.5s"
