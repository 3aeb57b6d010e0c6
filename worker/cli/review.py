"""`labelfabric review …`: the reviewer's queue, one item in full, and submitting a label.

The same operations serve the review page (`labelfabric review serve`); see `worker.reviews`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli import group
from worker.cli.console import console, fail, temporal
from worker.cli.tables import JSON_HELP

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

    from activities.payloads import ReviewSubmission
    from worker.settings import Settings


app = group("Review items the routing policy sent to people.")


async def _client(settings: Settings) -> Client:
    return await temporal(settings)


async def _find(client: Client, item: str, dataset: str | None) -> WorkflowHandle:
    from rich.markup import escape

    from worker import reviews

    try:
        return await reviews.find(client, item, dataset)
    except reviews.ReviewError as err:
        raise fail(escape(str(err))) from err


@app.command("list")
def review_list(
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    reviewer: Annotated[
        str | None, typer.Option(help="Only items this reviewer may label.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    reviewers: Annotated[
        bool, typer.Option("--reviewers", help="The reviewers instead: roster and gold accuracy.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """The review queue: items awaiting a person (or escalated)."""

    import asyncio

    from worker.cli import review_queue
    from worker.settings import Settings

    if reviewers:
        asyncio.run(review_queue.reviewers(Settings(), as_json))
    else:
        asyncio.run(review_queue.queue(Settings(), dataset, reviewer, limit, as_json))


@app.command("gold")
def review_gold(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV with the text and a label.")],
    task: Annotated[str, typer.Option(help="The task these labels belong to.")],
    label_field: Annotated[str, typer.Option(help="Field (or CSV column) of the label.")] = "label",
) -> None:
    """Load known labels: review tasks on these items check the reviewer (task gold_fraction)."""

    import asyncio

    from worker.settings import Settings

    asyncio.run(_gold(Settings(), file, task, label_field))


async def _gold(settings: Settings, file: Path, task_name: str, label_field: str) -> None:
    import getpass

    from rich.markup import escape

    from agents.tasks import TaskError, load_task
    from catalog import db
    from formats.gold import GoldError
    from formats.sources import SourceError
    from worker.gold import load_gold

    try:
        task = load_task(settings.tasks_dir, task_name)
    except TaskError as err:
        raise fail(escape(str(err))) from err
    engine = db.make_engine(settings.catalog_url, pool_size=1)
    try:
        result = await load_gold(
            engine, task, file, actor=getpass.getuser(), label_field=label_field
        )
    except (GoldError, SourceError) as err:
        raise fail(escape(str(err))) from err
    except OSError as err:
        raise fail(f"cannot reach the catalog ({err})") from err
    finally:
        await engine.dispose()
    if result.refused:
        for r in result.refused[:20]:
            console.print(escape(f"{file}:{r.line}: {r.reason}"))
        more = len(result.refused) - 20
        raise fail(
            f"{len(result.refused)} bad record(s){f' ({more} more not shown)' if more > 0 else ''};"
            " nothing was loaded: fix them and load the file again"
        )
    console.print(
        f"loaded {result.loaded} known label(s) for task {task.name} from {file}"
        + (f" ({result.repeated} repeated record(s) counted once)" if result.repeated else "")
        + f"; {task.gold_fraction:.0%} of review tasks on them check the reviewer"
    )


@app.command("show")
def review_show(
    item: Annotated[str, typer.Argument(help="Item id or a unique prefix of it.")],
    dataset: Annotated[str | None, typer.Option()] = None,
) -> None:
    """One item: its text, the agents' votes and rationale, the rule, reviews so far."""

    import asyncio

    from worker.settings import Settings

    asyncio.run(_show(Settings(), item, dataset))


async def _show(settings: Settings, item: str, dataset: str | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from catalog import db
    from worker import reviews

    client = await _client(settings)
    handle = await _find(client, item, dataset)
    try:
        state = await reviews.state_of(handle)
    except reviews.ReviewError as err:
        raise fail(escape(str(err))) from err
    engine = db.make_engine(settings.catalog_url, pool_size=1)
    try:
        text = await reviews.item_text(
            engine, state.dataset, state.item_id, tasks_dir=settings.tasks_dir
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


@app.command("submit")
def review_submit(
    item: Annotated[str, typer.Argument(help="Item id or a unique prefix of it.")],
    label: Annotated[str, typer.Option(help="The label.")],
    token: Annotated[
        str,
        typer.Option(
            envvar="LABELFABRIC_REVIEW_TOKEN",
            help="Your signed reviewer claim (`labelfabric reviewer token YOU`, from an admin).",
        ),
    ] = "",
    reviewer: Annotated[
        str | None,
        typer.Option(
            envvar="LABELFABRIC_REVIEWER", help="Your reviewer id (default: the token's)."
        ),
    ] = None,
    note: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    dataset: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Label an item as the reviewer your token names; a refusal prints why, exits non-zero."""

    import asyncio

    from activities.payloads import ReviewSubmission
    from worker.settings import Settings

    settings = Settings()
    who = reviewer or _token_subject(token)
    if not who:
        raise fail(
            "a review needs a signed reviewer claim: pass --token (or LABELFABRIC_REVIEW_TOKEN) "
            "from `labelfabric reviewer token YOU`, issued by an admin"
        )
    sub = ReviewSubmission(reviewer=who, label=label, note=note, token=token)
    asyncio.run(_submit(settings, item, dataset, sub))


def _token_subject(token: str) -> str:
    """The reviewer a claim names (unverified: the item verifies it), or ""."""
    if not token:
        return ""
    import jwt

    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.PyJWTError as err:
        raise fail(f"--token is not a reviewer claim ({err})") from err
    return sub if isinstance(sub, str) else ""


async def _submit(
    settings: Settings, item: str, dataset: str | None, sub: ReviewSubmission
) -> None:
    from rich.markup import escape

    from worker import reviews

    client = await _client(settings)
    handle = await _find(client, item, dataset)
    try:
        receipt = await reviews.submit(handle, sub)
    except reviews.Refused as err:
        raise fail(escape(f"refused: {err}")) from err
    console.print(
        f"accepted: {handle.id} is {receipt.state}"
        + (f", label {receipt.label}" if receipt.label else "")
    )


@app.command("serve")
def review_serve(
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1 (default LABELFABRIC_REVIEW_PORT).")
    ] = None,
    reviewer: Annotated[
        str | None,
        typer.Option(envvar="LABELFABRIC_REVIEWER", help="Pre-fill this reviewer id."),
    ] = None,
) -> None:
    """Serve the review page (queue, item with votes, label buttons) until Ctrl-C."""
    from worker.settings import Settings
    from worker.web.app import serve

    settings = Settings()
    port = port or settings.review_port
    console.print(f"review page: http://{settings.host}:{port}/  (Ctrl-C stops it)")
    serve(settings, port=port, reviewer=reviewer)


@app.command("bot")
def review_bot(
    gold: Annotated[Path, typer.Option(help="JSONL/CSV with the text and its true label.")],
    task: Annotated[str, typer.Option(help="The task the gold file is labeled for.")],
    dataset: Annotated[str, typer.Option(help="Answer this dataset's open reviews.")],
    reviewer: Annotated[str, typer.Option(help="A simulated roster entry (id sim:…).")] = (
        "sim:gold"
    ),
    rate: Annotated[float, typer.Option(min=0.1, max=1000, help="Answers per second.")] = 10.0,
    accuracy: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share answered right (by item hash).")
    ] = 1.0,
    max_reviews: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after this many answers.")
    ] = None,
    idle: Annotated[float, typer.Option(min=0.5, help="Stop after this long idle (s).")] = 10.0,
    label_field: Annotated[str, typer.Option(help="The gold file's label field.")] = "label",
) -> None:
    """A simulated reviewer answering open reviews from a gold file (benchmarks, tests).

    Only where the worker runs with LABELFABRIC_SIMULATED_REVIEWERS=1; never in make demo."""

    import asyncio

    from worker.settings import Settings

    if not reviewer.startswith("sim:"):
        raise fail(f"--reviewer {reviewer!r}: a simulated reviewer's id starts with 'sim:'")
    from worker.cli.review_bot import answer_reviews
    from worker.metrics import command  # exports only when asked (README: Observability)

    settings = Settings()
    with command(settings, "review bot"):
        asyncio.run(
            answer_reviews(
                settings,
                gold,
                task,
                dataset,
                reviewer,
                rate,
                accuracy,
                max_reviews,
                idle,
                label_field,
            )
        )
