"""A local fake OpenAI-compatible server for LLMAgent tests: a stdlib `ThreadingHTTPServer`
on 127.0.0.1, port chosen by the OS, serving `POST /v1/chat/completions`. Each test scripts
the reply per user text and reads back the requests it received."""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agents.llm import LLMAgent

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


@contextlib.contextmanager
def serving() -> Iterator[FakeLLM]:
    """A FakeLLM serving on its own thread until the block ends."""
    fake = FakeLLM()
    # A short poll interval keeps shutdown() (which waits for the next poll) fast.
    thread = threading.Thread(
        target=fake.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        fake.barrier.abort()
        fake.server.shutdown()
        fake.server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive(), "fake LLM server thread did not stop"
