"""Handing work to the long-lived workflows, from activities and the CLI: signal-with-start,
so the workflow is started if it is not running and woken if it is.

- a dataset's review frontier (`frontier:{dataset}`, `wake`): there may be room or work;
- a task's Retrain workflow (`retrain:{task}`): `labels_added` (one more human label) or
  `retrain` (a round now).
"""

from __future__ import annotations

from temporalio.client import Client

from activities import ids
from activities.payloads import FrontierInput, RetrainInput, dataset_attributes
from agents.tasks import TaskSpec


async def wake_frontier(client: Client, task_queue: str, dataset: str) -> None:
    await client.start_workflow(
        ids.FRONTIER_WORKFLOW,
        FrontierInput(dataset=dataset),
        id=ids.frontier_workflow_id(dataset),
        task_queue=task_queue,
        search_attributes=dataset_attributes(dataset),
        start_signal="wake",
    )


async def tell_retrain(client: Client, task_queue: str, task: TaskSpec, signal: str) -> str:
    """Signal `labels_added` or `retrain` to the task's Retrain workflow; returns its id."""
    if signal not in ("labels_added", "retrain"):
        raise ValueError(f"Retrain has no signal {signal!r}")
    workflow_id = ids.retrain_workflow_id(task.name)
    await client.start_workflow(
        ids.RETRAIN_WORKFLOW,
        RetrainInput(task=task.name, every=task.learn_every),
        id=workflow_id,
        task_queue=task_queue,
        start_signal=signal,
    )
    return workflow_id
