"""What every handler of the review page shares: who is asking (the session, checked against
the roster and the catalog on every request), reading a bounded form from this site only,
rendering with the person and a flash message, and the refusals.

The roster is read again on every request: it is small, and it is the authority on who may
sign in and with which role, so an edit applies to the next click, not the next restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from agents.roster import CLEARANCE, Reviewer, cleared, load_roster
from catalog import accounts
from worker.settings import Settings
from worker.web import auth

log = logging.getLogger("labelfabric.review_page")
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
MAX_FORM_BYTES = 16 * 1024  # the longest form (a note of 4,000 characters) fits many times
MAX_FORM_FIELDS = 8


def csp(script_nonce: str = "") -> str:
    """The pages' Content-Security-Policy: nothing but inline style and forms to this site;
    no script, except one a page names by its own response's nonce (the item page's keys)."""
    script = f"script-src 'nonce-{script_nonce}'; " if script_nonce else ""
    return (
        f"default-src 'none'; style-src 'unsafe-inline'; {script}form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


class Refusal(Exception):
    """A request this page will not serve: the status and a message safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Person:
    """A signed-in reviewer: their roster entry as it is now, and their session."""

    entry: Reviewer
    session: auth.Session

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def role(self) -> str:
        return self.entry.role

    def may(self, action: str) -> bool:
        return auth.may(self.entry.role, action)

    def levels(self) -> list[str]:
        """The sensitivities this person is cleared for."""
        return [s for s in CLEARANCE if cleared(self.entry.clearance, s)]

    def sees(self, sensitivity: str | None, task: str | None) -> bool:
        """May this person see an item of `task` with `sensitivity`? Unknown: no."""
        return (
            sensitivity is not None
            and cleared(self.entry.clearance, sensitivity)
            and task is not None
            and task in self.entry.tasks
        )


class Site:
    def __init__(self, settings: Settings, signer: auth.Signer) -> None:
        self.settings = settings
        self.signer = signer
        self.throttle = auth.Throttle()

    def roster(self) -> dict[str, Reviewer]:
        """People who may sign in: the roster as it is now, without simulated reviewers."""
        from agents.base import TaskError

        try:
            entries = load_roster(self.settings.roster_path)
        except TaskError as err:
            log.error("review page: cannot read the roster: %s", err)
            raise Refusal(
                503, "the roster cannot be read; nobody can sign in until it is fixed"
            ) from None
        return {r.id: r for r in entries if not r.simulated}

    async def person(self, request: Request) -> Person | None:
        """The signed-in person, or None (no cookie, a bad or expired one, or one the roster
        or the catalog no longer backs)."""
        session = self.signer.read_session(request.cookies.get(auth.COOKIE))
        if session is None:
            return None
        entry = self.roster().get(session.reviewer)
        if entry is None or entry.role != session.role:
            return None
        engine: AsyncEngine = request.app.state.engine
        async with engine.connect() as conn:
            account = await accounts.account(conn, session.reviewer)
        if account is None or account.generation != session.generation:
            return None
        return Person(entry=entry, session=session)

    async def require(self, request: Request, action: str) -> Person:
        """The signed-in person allowed `action`, or a Refusal (403 for another role)."""
        me = await self.person(request)
        if me is None:
            raise Refusal(401, "sign in first")
        if not me.may(action):
            raise Refusal(403, f"refused: the {me.role} role may not do this ({action})")
        return me

    async def form(self, request: Request, *, sid: str | None, action: str) -> dict[str, str]:
        """The POSTed form, from this page only, bounded in size, with a CSRF token for
        `sid` and `action` (sid None: before sign-in, where the cross-site check stands)."""
        why = cross_site(request)
        if why:
            raise Refusal(403, why)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise Refusal(415, "form refused: send it as application/x-www-form-urlencoded")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
            raise Refusal(413, f"form refused: over {MAX_FORM_BYTES} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise Refusal(413, f"form refused: over {MAX_FORM_BYTES} bytes")
        try:
            pairs = parse_qsl(
                body.decode("utf-8", errors="strict"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=MAX_FORM_FIELDS,
            )
        except ValueError as err:  # bad UTF-8, too many fields
            raise Refusal(400, f"form refused: {err}"[:200]) from None
        fields: dict[str, str] = {}
        for key, value in pairs:
            if key in fields:
                raise Refusal(400, f"form refused: field {key[:40]!r} given twice")
            fields[key] = value
        if sid is not None and not self.signer.csrf_ok(fields.get("csrf"), sid, action):
            raise Refusal(403, "form refused: missing or stale CSRF token (reload the page)")
        return fields

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        me: Person | None,
        status: int = 200,
    ) -> Response:
        flash = self.signer.read_flash(request.cookies.get(auth.FLASH_COOKIE))
        ctx = {"me": me, "flash": flash, **context}
        if me is not None:
            ctx["logout_csrf"] = self.signer.csrf(me.session.sid, "logout")
        response = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status)
        if flash:
            response.delete_cookie(auth.FLASH_COOKIE, path="/")
        return response

    def redirect(self, request: Request, url: str, *, flash: str = "") -> Response:
        response = RedirectResponse(auth.local_path(url), status_code=303)
        if flash:
            response.set_cookie(
                auth.FLASH_COOKIE, self.signer.flash(flash), max_age=120, **cookie_flags(request)
            )
        return response

    def sign_in(self, request: Request, response: Response, reviewer: Reviewer, gen: int) -> None:
        value = self.signer.session(reviewer.id, reviewer.role, gen)
        response.set_cookie(
            auth.COOKIE, value, max_age=self.signer.max_age_s, **cookie_flags(request)
        )


def cookie_flags(request: Request) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/",
    }


def cross_site(request: Request) -> str:
    """Why this POST looks cross-site, or ""."""
    site = request.headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site[:40]})"
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin and origin != own:
        return f"cross-site request refused (Origin {origin[:100]} is not {own})"
    return ""


def refusal_response(request: Request, err: Refusal) -> Response:
    if err.status == 401 and request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
    return PlainTextResponse(str(err)[:300], status_code=err.status)
