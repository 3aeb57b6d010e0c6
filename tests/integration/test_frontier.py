"""The review frontier on the real stack: a job queues its routed items in the catalog, at
most the policy's `review.open_limit` ReviewItem workflows are open per dataset, highest
priority first, and a closed review makes room for the next."""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from activities import ids
from activities.payloads import FrontierStatus
from tests.helpers import ThreadWorker
from tests.integration.reviewing import eventually, handle_for, label_texts, rows, submit
from worker.main import Runtime
from worker.settings import Settings

LIMIT = 3


def frontier_policy(settings: Settings, name: str) -> str:
    """route_default's rules with a small frontier ordered by an expression of the inputs."""
    shipped = (settings.policies_dir / "route_default" / "v2.yaml").read_text()
    body = shipped.replace("id: route_default", f"id: {name}").replace(
        "  on_timeout: quarantine",
        f"  on_timeout: quarantine\n  open_limit: {LIMIT}\n"
        "  priority: 1.0 - ensemble.confidence + double(item.chars) / 1000000.0",
    )
    folder = settings.policies_dir / name
    folder.mkdir()
    (folder / "v2.yaml").write_text(body)
    return name


async def states(runtime: Runtime, dataset: str) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    for item, state, priority in await rows(
        runtime,
        "SELECT item_id, state, priority FROM review_task WHERE dataset = :d "
        "ORDER BY priority DESC, item_id",
        d=dataset,
    ):
        out.setdefault(str(state), []).append((str(item), float(priority)))  # type: ignore[arg-type]
    return out


async def running_are(env: WorkflowEnvironment, dataset: str, expected: set[str]) -> bool:
    """Whether the dataset's running ReviewItem workflows are exactly `expected`."""
    query = (
        f'WorkflowType = "{ids.REVIEW_ITEM_WORKFLOW}" AND ExecutionStatus = "Running" '
        f'AND {ids.SA_DATASET} = "{dataset}"'
    )
    return {w.id async for w in env.client.list_workflows(query)} == expected


async def test_the_frontier_keeps_its_limit_and_opens_the_next_by_priority(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    policy = frontier_policy(stack, f"route_frontier_{uuid.uuid4().hex[:6]}")
    texts = [r["text"] for r in gold_rows[:40]]
    dataset, job = await label_texts(env, stack, texts, tmp_path, prefix="front", policy=policy)
    routed = job.counts.human_review
    assert routed > LIMIT + 2
    # The job finished with its routed items queued, only LIMIT of them open: the highest.
    now = await states(runtime, dataset)
    ranked = sorted(now["awaiting"] + now["queued"], key=lambda p: (-p[1], p[0]))
    assert len(now["awaiting"]) == LIMIT and len(now["queued"]) == routed - LIMIT
    assert {i for i, _ in now["awaiting"]} == {i for i, _ in ranked[:LIMIT]}
    open_ids = {ids.review_workflow_id(dataset, i) for i, _ in now["awaiting"]}
    assert await eventually(lambda: running_are(env, dataset, open_ids))

    # Closing a review opens exactly the next in priority order, never more than LIMIT.
    first = now["awaiting"][0][0]
    receipt = await submit(handle_for(env, dataset, first), "alice", "positive")
    assert receipt.state == "done"
    nxt = ranked[LIMIT][0]

    async def topped_up() -> dict[str, list[tuple[str, float]]] | None:
        s = await states(runtime, dataset)
        return s if nxt in {i for i, _ in s.get("awaiting", [])} else None

    after = await eventually(topped_up, within=30)
    assert after is not None, "the frontier did not open the next item"
    assert len(after["awaiting"]) == LIMIT and len(after["queued"]) == routed - LIMIT - 1
    assert [i for i, _ in after["done"]] == [first]
    expected = (open_ids - {ids.review_workflow_id(dataset, first)}) | {
        ids.review_workflow_id(dataset, nxt)
    }
    assert await eventually(lambda: running_are(env, dataset, expected))
    frontier = env.client.get_workflow_handle(ids.frontier_workflow_id(dataset))

    async def settled() -> FrontierStatus | None:
        status = await frontier.query("status", result_type=FrontierStatus)
        return status if status is not None and status.queued == routed - LIMIT - 1 else None

    status = await eventually(settled)
    assert status is not None and (status.open, status.open_limit) == (LIMIT, LIMIT)
