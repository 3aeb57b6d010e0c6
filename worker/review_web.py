"""`labelfabric review serve`: the review page, a small Starlette app on loopback.

Pages are rendered on the server (plain HTML forms, no script), so any browser works and
nothing reviewers send bypasses the workflow: a label is the `submit_review` update, and a
refusal shows the validator's reason. The page has no login of its own: it binds to
127.0.0.1 and trusts the reviewer id typed into it, like the CLI's `--reviewer`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from temporalio.client import Client

from activities.payloads import ReviewSubmission
from catalog import db
from worker import reviews
from worker.settings import Settings

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
QUEUE_LIMIT = 200
CLOSE_WAIT_S = 10.0


def make_app(settings: Settings, *, reviewer: str | None = None) -> Starlette:
    """The review app; `reviewer` pre-fills the reviewer id on every page."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.client = await Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace
        )
        app.state.engine = db.make_engine(settings.catalog_url, pool_size=2)
        try:
            yield
        finally:
            await app.state.engine.dispose()

    def who(request: Request) -> str:
        return request.query_params.get("reviewer") or reviewer or ""

    async def queue_page(request: Request) -> Response:
        me = who(request)
        dataset = request.query_params.get("dataset") or None
        rows, count = await reviews.queue(
            request.app.state.client, dataset=dataset, reviewer=me or None, limit=QUEUE_LIMIT
        )
        context = {
            "rows": rows,
            "count": count,
            "reviewer": me,
            "dataset": dataset,
            "flash": request.query_params.get("flash"),
        }
        return TEMPLATES.TemplateResponse(request, "queue.html", context)

    async def item_page(request: Request) -> Response:
        return await _render_item(request, reviewer=who(request))

    async def submit(request: Request) -> Response:
        form = await request.form()
        sub = ReviewSubmission(
            reviewer=str(form.get("reviewer", "")).strip(),
            label=str(form.get("label", "")),
            note=str(form.get("note", "")).strip(),
        )
        handle = request.app.state.client.get_workflow_handle(request.path_params["wid"])
        try:
            receipt = await reviews.submit(handle, sub)
        except reviews.Refused as err:
            return await _render_item(
                request, reviewer=sub.reviewer, note=sub.note, refused=str(err), status=422
            )
        if receipt.label:
            # The item closes (label written, ReviewState=done) right after the update
            # returns: wait for that, so the queue shown next no longer lists it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(handle.result(), CLOSE_WAIT_S)
        done = f"labeled {handle.id.rsplit(':', 1)[-1][:12]} as {sub.label}: the item is " + (
            f"done ({receipt.label})" if receipt.label else f"{receipt.state}, waiting for more"
        )
        # Back to the queue the reviewer came from (the item link carries its filter).
        back = {"reviewer": sub.reviewer, "dataset": request.query_params.get("dataset", "")}
        query = urlencode({k: v for k, v in back.items() if v} | {"flash": done})
        return RedirectResponse(f"/?{query}", status_code=303)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/", queue_page),
            Route("/items/{wid:path}", item_page, methods=["GET"]),
            Route("/items/{wid:path}", submit, methods=["POST"]),
            Route("/healthz", health),
        ],
        lifespan=lifespan,
    )


async def _render_item(
    request: Request, *, reviewer: str, note: str = "", refused: str = "", status: int = 200
) -> Response:
    wid = request.path_params["wid"]
    handle = request.app.state.client.get_workflow_handle(wid)
    try:
        state = await reviews.state_of(handle)
    except reviews.ReviewError as err:
        return PlainTextResponse(str(err), status_code=404)
    text = await reviews.item_text(request.app.state.engine, state.dataset, state.item_id)
    context = {
        "state": state,
        "text": text,
        "reviewer": reviewer,
        "note": note,
        "refused": refused,
    }
    return TEMPLATES.TemplateResponse(request, "item.html", context, status_code=status)


def serve(settings: Settings, *, port: int, reviewer: str | None) -> None:
    import uvicorn

    uvicorn.run(
        make_app(settings, reviewer=reviewer), host=settings.host, port=port, log_level="info"
    )
