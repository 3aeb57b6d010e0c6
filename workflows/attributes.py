"""Every workflow of a dataset carries the `Dataset` search attribute, whoever started it.

Our starters set it (`activities.payloads.dataset_attributes`); a run that has none (started
by a Schedule created before the attribute existed, a WatchPrefix's DriftCheck child, a raw
`temporal workflow start`, or a long-lived workflow continuing a run from before) sets it
itself, first thing. Behind a patch, so histories recorded before replay as they ran; a run
that already has it records nothing, nor does one whose input names no valid dataset (a raw
start's arbitrary string never becomes a visibility value).
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payloads import DATASET, dataset_name_problem

DATASET_PATCH = "dataset-search-attribute"


def name_dataset(dataset: str) -> None:
    named = workflow.info().typed_search_attributes.get(DATASET) is not None
    if named or dataset_name_problem(dataset) is not None:
        return
    if workflow.patched(DATASET_PATCH):
        workflow.upsert_search_attributes([DATASET.value_set(dataset)])
