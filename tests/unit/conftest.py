"""Fixtures of the unit tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.fake_llm import FakeLLM, serving


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLM]:
    """A fake OpenAI-compatible server on 127.0.0.1 (no proxy in the way)."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with serving() as server:
        yield server
