"""`labelfabric review serve`: the review page, a small Starlette app on loopback.

Pages are rendered on the server (plain HTML forms; the one script, the item page's keys 1-9,
is optional), so any browser works and nothing reviewers send bypasses the workflow: a label
is the `submit_review` update, and a refusal shows the validator's reason.

People sign in (a password, argon2id; or a one-time login link an admin issued) and get a
signed, expiring, HttpOnly, SameSite=Strict session cookie (Secure over https); every
request checks it against the roster and the catalog (worker/web/site.py). The roster says
what each person may do: `reviewer` reviews the items of their tasks up to their clearance,
`lead` also corrects closed reviews and sees reviewer statistics, `admin` sees the roster
and issues login links and reviewer tokens (worker/web/auth.py: PERMISSIONS). A request for
another role's page or action is refused with 403.

Because any web page a reviewer visits could post to this one, every POST must come from
this page when the browser says where it comes from (Origin, Sec-Fetch-Site) and carry a
CSRF token bound to the session and the form's target; requests for another Host (DNS
rebinding) are refused, forms are bounded in size and fields, and failed sign-ins are
throttled per reviewer id and per client. Responses forbid framing and caching, and scripts
but the one an item page names by its response's own CSP nonce.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catalog import accounts, db
from worker import metrics
from worker import secrets as stack_secrets
from worker.settings import Settings
from worker.web import auth, items, ops, staff
from worker.web.site import Person, Refusal, Site, cookie_flags, csp, refusal_response

HEADERS = (
    ("content-security-policy", csp()),  # a page may set its own (a script nonce): kept
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),  # "no-referrer" would make POSTs say Origin: null
    ("cache-control", "no-store"),
)  # fmt: skip
SLOW_FAILURE_S = 0.5  # every failed sign-in waits this long before its answer


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


class NoSessionSecret(Exception):
    """The state dir has no session secret: `labelfabric up` makes one."""


def make_app(settings: Settings, *, reviewer: str | None = None) -> Starlette:
    """The review app; `reviewer` only pre-fills the sign-in form's reviewer id."""
    secret = stack_secrets.read(settings.home_dir).get("session_secret", "")
    if not secret:
        raise NoSessionSecret(
            f"no session_secret in {settings.home_dir / stack_secrets.FILE}: run "
            "`labelfabric up` for this state dir (it makes the page's cookie key)"
        )
    site = Site(settings, auth.Signer(secret, max_age_s=settings.review_token_ttl_s))
    per_client = auth.Throttle(limit=50)  # across ids: bounds guessing from one place
    # Before the client connects: the Temporal SDK's metrics go to the same place.
    exporting = metrics.start("labelfabric-review", prometheus=settings.review_metrics)
    if exporting is not None:
        ops.GAUGES.register()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from worker.temporal_client import connect

        app.state.client = await connect(settings)
        app.state.engine = db.make_engine(settings.catalog_url, pool_size=2)
        fresh = None
        if exporting is not None and metrics.otlp_configured():
            fresh = asyncio.create_task(ops.GAUGES.keep_fresh(app.state.engine))
        try:
            yield
        finally:
            if fresh is not None:
                fresh.cancel()
            await app.state.engine.dispose()

    async def login_page(request: Request) -> Response:
        context = {"next": auth.local_path(request.query_params.get("next")), "who": reviewer}
        return site.render(request, "login.html", context, me=await site.person(request))

    async def login(request: Request) -> Response:
        form = await site.form(request, sid=None, action="login")
        rid, password = form.get("reviewer", "").strip(), form.get("password", "")
        target = auth.local_path(form.get("next"))
        keys = [f"id:{rid[: auth.MAX_ID_CHARS]}"]
        client = f"client:{request.client.host if request.client else '-'}"
        wait = max(site.throttle.wait_s(keys), per_client.wait_s([client]))
        if wait > 0:
            minutes = int(wait // 60) + 1
            problem = f"too many failed sign-ins: try again in {minutes} minute(s)"
            return _login_again(site, request, rid, target, problem, 429)
        entry = site.roster().get(rid) if auth.reviewer_id_ok(rid) else None
        account = None
        if entry is not None:
            async with request.app.state.engine.connect() as conn:
                account = await accounts.account(conn, rid)
        stored = account.password_hash if account else None
        ok = len(password) <= auth.MAX_PASSWORD_CHARS and await asyncio.to_thread(
            auth.verify_password, stored, password
        )
        if not ok or entry is None or account is None:
            site.throttle.failed(keys)
            per_client.failed([client])
            await asyncio.sleep(SLOW_FAILURE_S)
            problem = "wrong reviewer id or password"  # the same whatever was wrong
            return _login_again(site, request, rid, target, problem, 401)
        site.throttle.succeeded(keys[0])
        response = site.redirect(request, target, flash=f"signed in as {entry.id} ({entry.role})")
        site.sign_in(request, response, entry, account.generation)
        return response

    async def link_page(request: Request) -> Response:
        token = request.query_params.get("token", "")
        context = {"token": token if auth.link_token_ok(token) else ""}
        return site.render(request, "link.html", context, me=None)

    async def use_link(request: Request) -> Response:
        form = await site.form(request, sid=None, action="link")
        token = form.get("token", "")
        client = f"client:{request.client.host if request.client else '-'}"
        if per_client.wait_s([client]) > 0:
            raise Refusal(429, "too many failed sign-ins from here: try again later")
        used = None
        if auth.link_token_ok(token):
            async with request.app.state.engine.begin() as conn:
                used = await accounts.use_link(conn, auth.token_sha256(token))
        entry = site.roster().get(used[0]) if used else None
        if used is None or entry is None:
            per_client.failed([client])
            await asyncio.sleep(SLOW_FAILURE_S)
            context = {"token": "", "problem": "this link is used, expired or not valid"}
            return site.render(request, "link.html", context, me=None, status=403)
        flash = f"signed in as {entry.id} with a one-time link: set a password to sign in again"
        response = site.redirect(request, "/account", flash=flash)
        site.sign_in(request, response, entry, used[1])
        return response

    async def logout(request: Request) -> Response:
        me = await site.person(request)
        if me is not None:
            await site.form(request, sid=me.session.sid, action="logout")
            async with request.app.state.engine.begin() as conn:
                await accounts.end_sessions(conn, me.id)  # every session of theirs ends
        response = site.redirect(request, "/login", flash="signed out")
        response.delete_cookie(auth.COOKIE, **cookie_flags(request))
        return response

    async def account_page(request: Request) -> Response:
        me = await site.require(request, "review")
        return _account(site, request, me)

    async def set_password(request: Request) -> Response:
        me = await site.require(request, "review")
        form = await site.form(request, sid=me.session.sid, action="password")
        new, again = form.get("password", ""), form.get("again", "")
        if not me.session.fresh():
            key = f"id:{me.id}"
            async with request.app.state.engine.connect() as conn:
                account = await accounts.account(conn, me.id)
            current = form.get("current", "")[: auth.MAX_PASSWORD_CHARS]
            if site.throttle.wait_s([key]) > 0 or not await asyncio.to_thread(
                auth.verify_password, account.password_hash if account else None, current
            ):
                site.throttle.failed([key])
                await asyncio.sleep(SLOW_FAILURE_S)
                return _account(site, request, me, "your current password is not that", 403)
        problem = auth.password_problem(new, again)
        if problem:
            return _account(site, request, me, problem, 400)
        hashed = await asyncio.to_thread(auth.hash_password, new)
        async with request.app.state.engine.begin() as conn:
            generation = await accounts.set_password(conn, me.id, hashed, actor=me.id)
        flash = "password set; your other sessions have ended"
        response = site.redirect(request, "/account", flash=flash)
        site.sign_in(request, response, me.entry, generation)
        return response

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        return refusal_response(request, exc)

    return Starlette(
        routes=[
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/login/link", link_page, methods=["GET"]),
            Route("/login/link", use_link, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/account", account_page, methods=["GET"]),
            Route("/account/password", set_password, methods=["POST"]),
            Route("/healthz", health),
            *staff.routes(site),
            *ops.routes(site),
            *items.routes(site),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings)),
        ],
        exception_handlers={Refusal: refused},
    )


def _login_again(
    site: Site, request: Request, rid: str, target: str, problem: str, status: int
) -> Response:
    context = {"next": target, "who": rid[: auth.MAX_ID_CHARS], "problem": problem}
    return site.render(request, "login.html", context, me=None, status=status)


def _account(
    site: Site, request: Request, me: Person, problem: str = "", status: int = 200
) -> Response:
    context = {
        "problem": problem,
        "fresh": me.session.fresh(),
        "csrf": site.signer.csrf(me.session.sid, "password"),
    }
    return site.render(request, "account.html", context, me=me, status=status)


def allowed_hosts(settings: Settings) -> list[str]:
    """The names this page answers to: the loopback names it binds to, nothing else."""
    return sorted({settings.host, "127.0.0.1", "localhost", "[::1]"})


class _RedactLinks(logging.Filter):
    """Keep login-link tokens out of the access log (they are single use, but still)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 2 and "token=" in str(args[2]):
            record.args = (*args[:2], str(args[2]).split("?", 1)[0] + "?token=…", *args[3:])
        return True


def serve(settings: Settings, *, port: int, reviewer: str | None) -> None:
    import uvicorn

    try:
        app = make_app(settings, reviewer=reviewer)
    except NoSessionSecret as err:
        raise SystemExit(f"error: {err}") from None
    config = uvicorn.Config(app, host=settings.host, port=port, log_level="info")
    logging.getLogger("uvicorn.access").addFilter(_RedactLinks())  # after uvicorn's config
    uvicorn.Server(config).run()
