"""LLMAgent as an HTTP client of the fake server (tests/unit/fake_llm.py): timeouts, refused
connections, concurrency and order, the request it sends, its version and its config checks.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest

from agents.llm import LLMAgent, logprob_confidence
from tests.unit.fake_llm import (
    LABELS,
    MODEL,
    POSITIVE,
    POSITIVE_CONFIDENCE,
    FakeLLM,
    Reply,
)


def test_connection_refused_abstains() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    agent = LLMAgent("llm", LABELS, base_url=f"http://127.0.0.1:{port}/v1", model=MODEL)
    [vote] = agent.predict(["anything"])
    assert vote.label is None
    assert vote.rationale.startswith("llm: connection failed:"), vote.rationale


def test_mixed_batch_keeps_input_order_and_never_raises(fake: FakeLLM) -> None:
    fake.replies.update(
        {
            "good": POSITIVE,
            "plain": Reply(content='{"label":"negative","rationale":"bad"}'),
            "maybe": Reply(content='{"label":"maybe","rationale":"?"}'),
            "prose": Reply(content="negative, I would say"),
            "boom": Reply(status=500, error="boom"),
            "slow": Reply(content='{"label":"positive","rationale":"late"}', wait_s=10),
        }
    )
    texts = ["slow", "good", "boom", "plain", "prose", "maybe", "good"]
    votes = fake.agent(timeout_s=0.5, max_workers=3).predict(texts)
    assert [v.label for v in votes] == [None, "positive", None, "negative", None, None, "positive"]
    assert [v.rationale.split(":")[1].strip() for v in votes] == [
        "timed out after 0.5s",
        "praises the acting",
        "HTTP 500",
        "[no logprobs] bad",
        "output is not JSON",
        "label 'maybe' not in label set",
        "praises the acting",
    ]
    assert votes[1].confidence == pytest.approx(POSITIVE_CONFIDENCE, rel=1e-12)


def test_requests_run_concurrently_and_results_keep_input_order(fake: FakeLLM) -> None:
    # Every request waits at a 4-party barrier: a serial agent would leave the first one alone
    # there until the barrier times out (and the fake answers 500). After the barrier, earlier
    # texts wait longer, so replies arrive in reverse order.
    fake.barrier = threading.Barrier(4)
    texts = [f"item {i}" for i in range(4)]
    for i, text in enumerate(texts):
        label = LABELS[i % 2]
        content = json.dumps({"label": label, "rationale": text})
        fake.replies[text] = Reply(content=content, barrier=True, wait_s=0.05 * (4 - i))
    votes = fake.agent(max_workers=4, timeout_s=10).predict(texts)
    assert [v.label for v in votes] == ["positive", "negative", "positive", "negative"]
    assert [v.rationale for v in votes] == [f"llm: [no logprobs] {t}" for t in texts]


def test_request_body_and_headers(fake: FakeLLM) -> None:
    fake.replies["some text"] = POSITIVE
    agent = fake.agent(instructions="Sarcasm counts as negative.", api_key="sk-test")
    agent.predict(["some text"])
    [received] = fake.received
    body = received.body
    assert body["model"] == MODEL
    assert (body["temperature"], body["seed"]) == (0, 0)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 5)
    system, user = body["messages"]
    assert system["role"] == "system" and user == {"role": "user", "content": "some text"}
    assert '["positive", "negative"]' in system["content"]
    assert "Sarcasm counts as negative." in system["content"]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert (fmt["json_schema"]["name"], fmt["json_schema"]["strict"]) == ("label", True)
    schema = fmt["json_schema"]["schema"]
    assert schema["type"] == "object"
    assert schema["properties"]["label"] == {"type": "string", "enum": ["positive", "negative"]}
    assert schema["properties"]["rationale"]["type"] == "string"
    assert schema["required"] == ["label", "rationale"]
    assert schema["additionalProperties"] is False
    assert received.headers["Authorization"] == "Bearer sk-test"
    assert received.headers["Content-Type"] == "application/json"


def test_no_authorization_header_without_api_key(fake: FakeLLM) -> None:
    fake.replies["t"] = POSITIVE
    fake.agent().predict(["t"])
    [received] = fake.received
    assert "Authorization" not in received.headers


def test_trailing_slash_in_base_url(fake: FakeLLM) -> None:
    fake.replies["t"] = POSITIVE
    [vote] = fake.agent(base_url=fake.base_url + "/").predict(["t"])
    assert vote.label == "positive"


def test_empty_batch_sends_nothing(fake: FakeLLM) -> None:
    assert fake.agent().predict([]) == []
    assert fake.received == []


def test_version_depends_on_model_and_prompt_not_on_endpoint() -> None:
    def version(**kwargs: Any) -> str:
        options: dict[str, Any] = {"base_url": "http://127.0.0.1:1/v1", "model": MODEL}
        options.update(kwargs)
        labels = options.pop("labels", LABELS)
        return LLMAgent("llm", labels, **options).version

    base = version()
    assert base == version()
    assert base == version(base_url="https://api.example.com/v1", api_key="sk-other")
    assert base == version(timeout_s=1.0, max_workers=1)
    assert LLMAgent("other-name", LABELS, base_url="http://h/v1", model=MODEL).version == base
    assert version(model="fake-model-2") != base
    assert version(instructions="Be strict.") != base
    assert version(labels=("negative", "positive")) != base
    assert version(default_confidence=0.5) != base


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": ()}, "labels must be a non-empty"),
        ({"labels": ("a", "a")}, "labels must be distinct"),
        ({"base_url": "file:///etc"}, "base_url must be http(s)"),
        ({"model": ""}, "model must be non-empty"),
        ({"timeout_s": 0}, "timeout_s must be > 0"),
        ({"max_workers": 0}, "max_workers must be >= 1"),
        ({"default_confidence": 1.5}, "default_confidence must be in [0, 1]"),
    ],
)
def test_constructor_rejects_bad_config(kwargs: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {"base_url": "http://127.0.0.1:1/v1", "model": MODEL}
    options.update(kwargs)
    labels = options.pop("labels", LABELS)
    with pytest.raises(ValueError) as err:
        LLMAgent("llm", labels, **options)
    assert message in str(err.value)


def test_logprob_confidence_rejects_malformed_logprobs() -> None:
    assert logprob_confidence(None, "positive", LABELS) is None
    assert logprob_confidence({"content": None}, "positive", LABELS) is None
    assert logprob_confidence({"content": [{"token": "x"}]}, "positive", LABELS) is None
    good = POSITIVE.logprobs
    assert good is not None
    assert logprob_confidence({"content": good}, "positive", LABELS) == pytest.approx(
        POSITIVE_CONFIDENCE, rel=1e-12
    )
