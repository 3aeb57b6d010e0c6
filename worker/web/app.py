"""`labelfabric review serve`: the review page, a small Starlette app on loopback.

Pages are rendered on the server (plain HTML forms, no script), so any browser works and
nothing reviewers send bypasses the workflow: a label is the `submit_review` update, and a
refusal shows the validator's reason. The page has no login of its own: it binds to
127.0.0.1 and trusts the reviewer id typed into it, like the CLI's `--reviewer`.

Because any web page a reviewer visits could post to it, a submission must carry the form's
CSRF token (an HMAC of the item's workflow id under a key made at start) and, when the
browser says where it comes from (Origin, Sec-Fetch-Site), come from this page; requests
for another Host (DNS rebinding) are refused, and so are oversized forms.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from temporalio.client import Client

from activities.ids import parse_review_workflow_id
from activities.payloads import ReviewSubmission
from catalog import db
from worker import reviews
from worker.settings import Settings

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
QUEUE_LIMIT = 200
CLOSE_WAIT_S = 10.0
MAX_FORM_PART = 64 * 1024  # bytes of one form field; the note's own limit is far below


def _csrf_token(key: bytes, wid: str) -> str:
    return hmac.new(key, wid.encode(), hashlib.sha256).hexdigest()


def _cross_site(request: Request) -> str:
    """Why this POST looks cross-site, or ""."""
    site = request.headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin and origin != own:
        return f"cross-site request refused (Origin {origin[:100]} is not {own})"
    return ""


def make_app(settings: Settings, *, reviewer: str | None = None) -> Starlette:
    """The review app; `reviewer` pre-fills the reviewer id on every page."""
    csrf_key = secrets.token_bytes(32)  # per process: a restart invalidates open forms

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
        return await _render_item(request, reviewer=who(request), csrf_key=csrf_key)

    async def submit(request: Request) -> Response:
        wid = request.path_params["wid"]
        why = _cross_site(request)
        if why:
            return PlainTextResponse(why, status_code=403)
        try:
            form = await request.form(max_files=0, max_fields=8, max_part_size=MAX_FORM_PART)
        except Exception as err:  # starlette's MultiPartException / HTTPException
            return PlainTextResponse(f"form refused: {err}"[:200], status_code=400)
        token = str(form.get("csrf", ""))
        if not hmac.compare_digest(token, _csrf_token(csrf_key, wid)):
            return PlainTextResponse(
                "form refused: missing or stale CSRF token (reload the item page)",
                status_code=403,
            )
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
                request,
                reviewer=sub.reviewer,
                note=sub.note,
                refused=str(err),
                status=422,
                csrf_key=csrf_key,
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
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings))],
    )


def allowed_hosts(settings: Settings) -> list[str]:
    """The names this page answers to: the loopback names it binds to, nothing else."""
    return sorted({settings.host, "127.0.0.1", "localhost", "[::1]"})


async def _render_item(
    request: Request,
    *,
    reviewer: str,
    csrf_key: bytes,
    note: str = "",
    refused: str = "",
    status: int = 200,
) -> Response:
    wid = request.path_params["wid"]
    if parse_review_workflow_id(wid) is None:
        return PlainTextResponse(f"no review {wid[:100]!r}", status_code=404)
    handle = request.app.state.client.get_workflow_handle(wid)
    try:
        state = await reviews.state_of(handle)
    except Exception as err:  # not found, not a ReviewItem, or not answering
        reason = str(err) if isinstance(err, reviews.ReviewError) else f"cannot read {wid}"
        return PlainTextResponse(reason[:300], status_code=404)
    text = await reviews.item_text(request.app.state.engine, state.dataset, state.item_id)
    context = {
        "state": state,
        "text": text,
        "reviewer": reviewer,
        "note": note,
        "refused": refused,
        "csrf": _csrf_token(csrf_key, wid),
    }
    return TEMPLATES.TemplateResponse(request, "item.html", context, status_code=status)


def serve(settings: Settings, *, port: int, reviewer: str | None) -> None:
    import uvicorn

    uvicorn.run(
        make_app(settings, reviewer=reviewer), host=settings.host, port=port, log_level="info"
    )
