"""`labelfabric review …`: the reviewer's queue, one item in full, and submitting a label.

The queue is Temporal's visibility (`ReviewState` search attribute), so it is the same list
`temporal workflow list --query 'ReviewState="awaiting"'` shows.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.payloads import REVIEW_STATE, ReviewReceipt, ReviewStateView, ReviewSubmission
from activities.review import review_workflow_id
from worker.settings import Settings
from worker.ui import console, fail

review_app = typer.Typer(
    help="Review items the routing policy sent to people.", no_args_is_help=True
)
OPEN = 'WorkflowType = "ReviewItem" AND ReviewState IN ("awaiting", "escalated")'


async def _client(settings: Settings) -> Client:
    try:
        return await Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace
        )
    except Exception as err:
        raise fail(f"cannot reach Temporal at {settings.temporal_address} ({err})") from err


async def _find(client: Client, item: str, dataset: str | None) -> WorkflowHandle:
    """The review workflow of ITEM (a full id or a unique prefix, as `review list` shows)."""
    if dataset and len(item) == 64:
        return client.get_workflow_handle(review_workflow_id(dataset, item))
    query = 'WorkflowType = "ReviewItem"' + (f' AND LabelDataset = "{dataset}"' if dataset else "")
    ids = sorted(
        {
            w.id
            async for w in client.list_workflows(query)
            if w.id.rsplit(":", 1)[-1].startswith(item)
        }
    )
    if not ids:
        raise fail(f"no review for item {item!r}" + (f" in dataset {dataset!r}" if dataset else ""))
    if len(ids) > 1:
        raise fail(f"item {item!r} is ambiguous: {', '.join(ids[:5])}; give more of its id")
    return client.get_workflow_handle(ids[0])


@review_app.command("list")
def review_list(
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    reviewer: Annotated[
        str | None, typer.Option(help="Only items this reviewer may label.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
) -> None:
    """The review queue: items awaiting a person (or escalated)."""
    asyncio.run(_list(Settings(), dataset, reviewer, limit))


async def _list(settings: Settings, dataset: str | None, reviewer: str | None, limit: int) -> None:
    client = await _client(settings)
    query = OPEN + (f' AND LabelDataset = "{dataset}"' if dataset else "")
    table = Table(title="review queue")
    table.add_column("item", no_wrap=True, min_width=12)
    table.add_column("dataset", no_wrap=True)
    table.add_column("state", no_wrap=True, min_width=9)
    table.add_column("since", no_wrap=True, min_width=16)
    table.add_column("reviewers", no_wrap=True)
    count = 0
    async for w in client.list_workflows(query):
        memo = await w.memo()
        allowed = list(memo.get("reviewers", []))
        if reviewer and reviewer not in allowed:
            continue
        count += 1
        if count > limit:
            continue  # counted, not shown
        _, ds, item = w.id.split(":", 2)
        state = w.typed_search_attributes.get(REVIEW_STATE)
        table.add_row(
            item[:12], ds, state or "", f"{w.start_time:%Y-%m-%d %H:%M}", ", ".join(allowed)
        )
    console.print(table)
    shown = f" ({limit} shown; --limit for more)" if count > limit else ""
    console.print(f"{count} item(s) waiting{shown}")


@review_app.command("show")
def review_show(
    item: Annotated[str, typer.Argument(help="Item id or a unique prefix of it.")],
    dataset: Annotated[str | None, typer.Option()] = None,
) -> None:
    """One item: its text, the agents' votes and rationale, the rule, reviews so far."""
    asyncio.run(_show(Settings(), item, dataset))


async def _show(settings: Settings, item: str, dataset: str | None) -> None:
    from sqlalchemy import select

    from catalog import db

    client = await _client(settings)
    handle = await _find(client, item, dataset)
    state = await handle.query("state", result_type=ReviewStateView)
    engine = db.make_engine(settings.catalog_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            text = await conn.scalar(
                select(db.T_ITEM.c.text).where(
                    db.T_ITEM.c.dataset == state.dataset, db.T_ITEM.c.id == state.item_id
                )
            )
    finally:
        await engine.dispose()
    console.print(f"[bold]{handle.id}[/]  state: {state.state}  labels: {', '.join(state.labels)}")
    console.print(
        f"routed by {state.policy.id}@{state.policy.version} rule [bold]{state.rule_id}[/]"
    )
    console.print("\n" + escape(text or "(text not in the catalog)") + "\n")
    votes = Table(title="agent votes")
    for col in ("agent", "version", "label", "confidence", "rationale"):
        votes.add_column(col)
    for v in state.votes:
        votes.add_row(
            v.agent, v.version, v.label or "(abstain)", f"{v.confidence:.2f}", escape(v.rationale)
        )
    console.print(votes)
    for r in state.reviews:
        verdict = "accepted" if r.accepted else f"refused: {r.reason}"
        console.print(escape(f"review by {r.reviewer} via {r.via}: {r.label} ({verdict}) {r.note}"))


@review_app.command("submit")
def review_submit(
    item: Annotated[str, typer.Argument(help="Item id or a unique prefix of it.")],
    label: Annotated[str, typer.Option(help="The label.")],
    reviewer: Annotated[str, typer.Option(envvar="LABELFABRIC_REVIEWER", help="Your reviewer id.")],
    note: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    dataset: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Label an item; a refusal prints the reason and exits non-zero."""
    asyncio.run(
        _submit(
            Settings(), item, dataset, ReviewSubmission(reviewer=reviewer, label=label, note=note)
        )
    )


async def _submit(
    settings: Settings, item: str, dataset: str | None, sub: ReviewSubmission
) -> None:
    client = await _client(settings)
    handle = await _find(client, item, dataset)
    try:
        receipt = await handle.execute_update("submit_review", sub, result_type=ReviewReceipt)
    except WorkflowUpdateFailedError as err:
        raise fail(escape(f"refused: {err.cause}")) from err
    except RPCError as err:
        if "already completed" in str(err):
            raise fail(f"refused: the review {handle.id} is already closed") from err
        raise fail(escape(f"refused: {err}")) from err
    console.print(
        f"accepted: {handle.id} is {receipt.state}"
        + (f", label {receipt.label}" if receipt.label else "")
    )
