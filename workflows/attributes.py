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
    from activities.payloads import (
        DATASET,
        JOB,
        LABEL_DATASET,
        LABEL_JOB,
        dataset_name_problem,
    )

DATASET_PATCH = "dataset-search-attribute"


def name_dataset(dataset: str) -> None:
    named = workflow.info().typed_search_attributes.get(DATASET) is not None
    if named or dataset_name_problem(dataset) is not None:
        return
    if workflow.patched(DATASET_PATCH):
        workflow.upsert_search_attributes([DATASET.value_set(dataset)])


def name_job(dataset: str, job_id: str, patch: str, *, first_run: bool) -> None:
    """A LabelDataset run's attributes: on its first run the released `LabelDataset` and
    `LabelJob` plus (behind `patch`) `Dataset` and `Job`; a continued run inherits them, and
    one of a job started before they existed gets `Dataset` and `Job` here."""
    if first_run:
        names = [LABEL_DATASET.value_set(dataset), LABEL_JOB.value_set(job_id)]  # released
        if workflow.patched(patch):
            names += [DATASET.value_set(dataset), JOB.value_set(job_id)]
        workflow.upsert_search_attributes(names)
        return
    named = workflow.info().typed_search_attributes.get(DATASET) is not None
    if not named and workflow.patched(patch):
        workflow.upsert_search_attributes([DATASET.value_set(dataset), JOB.value_set(job_id)])
