"""Upgrading a state dir: the Temporal dev server registers `--search-attribute`s only when it
creates its database, so one made by an older `up` (with the released `LabelDataset`,
`LabelJob`, `ReviewState` only) must get `Dataset` and `Job` from the next `up`, and a start
that sets them must then work; the released ones stay, so saved queries keep answering."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from activities import ids
from activities.payloads import DATASET, DatasetInput, dataset_attributes
from tests.conftest import TEST_PORTS, make_test_settings
from worker import stack as stack_mod
from worker.settings import Settings
from worker.stack import temporal as temporal_part

pytestmark = pytest.mark.slow

RELEASED = {
    ids.SA_LABEL_DATASET: "Keyword",
    ids.SA_LABEL_JOB: "Keyword",
    ids.SA_REVIEW_STATE: "Keyword",
}


async def registered(settings: Settings) -> set[str]:
    client = await Client.connect(
        f"{settings.host}:{settings.temporal_port}", namespace=settings.temporal_namespace
    )
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=settings.temporal_namespace)
    )
    return set(listed.custom_attributes)


async def test_up_registers_the_new_search_attributes_in_an_old_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_test_settings(tmp_path / "home", **{k: v + 80 for k, v in TEST_PORTS.items()})
    with monkeypatch.context() as old:  # what `up` registered before this release
        old.setattr(temporal_part, "SEARCH_ATTRIBUTES", RELEASED)
        try:
            stack_mod.up_temporal(settings)
            assert (await registered(settings)) & set(ids.SEARCH_ATTRIBUTES) == set(RELEASED)
        finally:
            stack_mod.down(settings)
    try:
        stack_mod.up_temporal(settings)  # this release, the same database
        assert (await registered(settings)) >= set(ids.SEARCH_ATTRIBUTES)
        client = await Client.connect(
            f"{settings.host}:{settings.temporal_port}", namespace=settings.temporal_namespace
        )
        handle = await client.start_workflow(  # refused if `Dataset` were unknown
            ids.DATASET_WORKFLOW,
            DatasetInput(name="old"),
            id=f"dataset:old-{uuid.uuid4().hex[:6]}",
            task_queue="nobody-polls",
            search_attributes=dataset_attributes("old"),
        )
        described = await handle.describe()
        assert described.typed_search_attributes.get(DATASET) == "old"
        await handle.terminate("test over")
    finally:
        stack_mod.down(settings)
