"""LLMAgent against a local fake OpenAI-compatible server: plain Python, no stack needed.

The fake (`FakeLLM`) is a stdlib `ThreadingHTTPServer` on 127.0.0.1, port chosen by the OS,
serving `POST /v1/chat/completions`. Each test scripts the reply per user text and reads back
the requests it received.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agents.base import MAX_RATIONALE_CHARS, Agent
from agents.llm import DEFAULT_CONFIDENCE, LLMAgent, logprob_confidence

LABELS = ("positive", "negative")
MODEL = "fake-model-1"


@dataclass(frozen=True)
class Reply:
    content: str | None = None
    logprobs: list[dict[str, Any]] | None = None  # becomes choices[0].logprobs.content
    status: int = 200
    error: str = ""  # error.message of a non-200 reply
    wait_s: float = 0.0  # delay before replying; cut short when the fixture tears down
    barrier: bool = False  # reply only once FakeLLM.barrier's parties have all arrived
    location: str = ""  # a redirect's Location header


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: dict[str, Any]


class FakeLLM:
    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.barrier = threading.Barrier(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with fake.lock:
                    fake.received.append(Received(dict(self.headers.items()), body))
                text = body["messages"][-1]["content"]
                reply = fake.replies.get(text, Reply(status=404, error=f"no reply for {text!r}"))
                if self.path != "/v1/chat/completions":
                    reply = Reply(status=404, error=f"unknown path {self.path}")
                if reply.barrier:
                    try:
                        fake.barrier.wait(timeout=5)
                    except threading.BrokenBarrierError:
                        reply = Reply(status=500, error="requests were not concurrent")
                if reply.wait_s:
                    fake.release.wait(reply.wait_s)
                if reply.status != 200:
                    payload: dict[str, Any] = {"error": {"message": reply.error}}
                else:
                    choice: dict[str, Any] = {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content},
                        "finish_reason": "stop",
                    }
                    if reply.logprobs is not None:
                        choice["logprobs"] = {"content": reply.logprobs}
                    payload = {"id": "x", "object": "chat.completion", "choices": [choice]}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    if reply.location:
                        self.send_header("Location", reply.location)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Track handler threads so server_close() joins them: nothing outlives the test.
        self.server.daemon_threads = False
        self.server.block_on_close = True

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def agent(self, **kwargs: Any) -> LLMAgent:
        options: dict[str, Any] = {"base_url": self.base_url, "model": MODEL, "timeout_s": 5.0}
        options.update(kwargs)
        labels = options.pop("labels", LABELS)
        return LLMAgent("llm", labels, **options)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLM]:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeLLM()
    # A short poll interval keeps shutdown() (which waits for the next poll) fast.
    thread = threading.Thread(
        target=fake.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield fake
    fake.release.set()
    fake.barrier.abort()
    fake.server.shutdown()
    fake.server.server_close()
    thread.join(timeout=5)
    assert not thread.is_alive(), "fake LLM server thread did not stop"


def tok(token: str, logprob: float, *alts: tuple[str, float]) -> dict[str, Any]:
    """One logprobs entry; its top_logprobs are the sampled token followed by `alts`."""
    tops = [(token, logprob), *alts]
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tops],
    }


def bare(token: str, logprob: float) -> dict[str, Any]:
    """A logprobs entry with no alternatives (top_logprobs not requested or not served)."""
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": []}


def scripted(tokens: list[dict[str, Any]]) -> Reply:
    """A reply whose content is exactly the tokens' text, with those logprobs."""
    content = "".join(t["token"] for t in tokens)
    json.loads(content)  # the fixture itself must be valid JSON
    return Reply(content=content, logprobs=tokens)


# content {"label":"positive","rationale":"praises the acting"}, one token for the label.
POSITIVE = scripted(
    [
        tok('{"', 0.0),
        tok("label", 0.0),
        tok('":"', -0.01),
        tok("positive", -0.2, ("negative", -1.8), ("pos", -3.0), (" ", -4.0)),
        tok('","', 0.0),
        tok("rationale", 0.0),
        tok('":"', 0.0),
        tok("praises the acting", -0.5),
        tok('"}', 0.0),
    ]
)
POSITIVE_CONFIDENCE = math.exp(-0.2) / (math.exp(-0.2) + math.exp(-1.8))


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
