"""The review page for leads and admins: closed reviews to correct and reviewer statistics
(`lead`); the roster, one-time login links and reviewer tokens (`admin`).

A secret made here (a login link, a reviewer token) is shown once, in the answer to the
POST that made it, and never stored in clear: the catalog keeps a link's sha256, a token is
not kept at all; each issue is an audit event naming the admin.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from catalog import accounts, corrections, db
from worker.identity import IdentityRing, IdentityRingError
from worker.web import auth
from worker.web.site import Person, Refusal, Site

CLOSED_LIMIT = 100


async def issue_link(
    engine: AsyncEngine, reviewer: str, actor: str, ttl_s: int = auth.LINK_TTL_S
) -> tuple[str, datetime]:
    """A new one-time login link token for `reviewer` (its sha256 stored) and its expiry;
    `labelfabric reviewer login-link` uses it too."""
    token, digest = auth.new_link_token()
    expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
    async with engine.begin() as conn:
        await accounts.issue_link(conn, reviewer, digest, expires, actor=actor)
    return token, expires


def routes(site: Site) -> list[Route]:
    async def closed_page(request: Request) -> Response:
        me = await site.require(request, "correct")
        dataset = (request.query_params.get("dataset") or "")[:200] or None
        async with request.app.state.engine.connect() as conn:
            rows = await corrections.closed_reviews(
                conn,
                levels=me.levels(),
                tasks=list(me.entry.tasks),
                dataset=dataset,
                limit=CLOSED_LIMIT,
            )
        return site.render(request, "closed.html", {"rows": rows, "dataset": dataset}, me=me)

    async def stats_page(request: Request) -> Response:
        me = await site.require(request, "stats")
        roster = site.roster()
        async with request.app.state.engine.connect() as conn:
            stats = await db.reviewer_stats(conn)
            overturned = await corrections.overturned(conn)
        rows = []
        for rid in sorted(roster.keys() | stats.keys() | overturned.keys()):
            st = stats.get(rid, {})
            gold, right = st.get("gold", 0), st.get("correct", 0)
            rows.append(
                {
                    "id": rid,
                    "entry": roster.get(rid),
                    "accepted": st.get("accepted", 0),
                    "refused": st.get("refused", 0),
                    "gold": gold,
                    "accuracy": f"{right / gold:.0%} ({right}/{gold})" if gold else "-",
                    "overturned": overturned.get(rid, 0),
                }
            )
        return site.render(request, "stats.html", {"rows": rows}, me=me)

    async def admin_page(request: Request) -> Response:
        me = await site.require(request, "roster")
        return await _admin(site, request, me)

    async def admin_link(request: Request) -> Response:
        me = await site.require(request, "links")
        form = await site.form(request, sid=me.session.sid, action="admin-link")
        entry = site.roster().get(form.get("reviewer", ""))
        if entry is None:
            return await _admin(site, request, me, problem="no such reviewer on the roster")
        token, expires = await issue_link(request.app.state.engine, entry.id, me.id)
        shown = {
            "what": f"one-time login link for {entry.id}, until {expires:%Y-%m-%d %H:%M} UTC",
            "value": auth.link_url(str(request.base_url), token),
        }
        return await _admin(site, request, me, shown=shown)

    async def admin_token(request: Request) -> Response:
        me = await site.require(request, "tokens")
        form = await site.form(request, sid=me.session.sid, action="admin-token")
        entry = site.roster().get(form.get("reviewer", ""))
        task = form.get("task", "") or "*"
        if entry is None:
            return await _admin(site, request, me, problem="no such reviewer on the roster")
        if task != "*" and task not in entry.tasks:
            return await _admin(site, request, me, problem=f"{entry.id} has no task {task!r}")
        ttl = site.settings.review_token_ttl_s
        try:
            ring = IdentityRing.load(site.settings.identity_keys_path)
            token = ring.mint(entry.id, task=task, role=entry.role, ttl_s=ttl)
        except IdentityRingError:
            raise Refusal(503, "cannot sign tokens now (identity keys)") from None
        expires = datetime.now(UTC) + timedelta(seconds=ttl)
        async with request.app.state.engine.begin() as conn:
            await accounts.record_event(
                conn, entry.id, me.id, "token_issued", task=task, expires_at=expires.isoformat()
            )
        shown = {
            "what": f"reviewer token for {entry.id} (task {task}), until "
            f"{expires:%Y-%m-%d %H:%M} UTC",
            "value": token,
        }
        return await _admin(site, request, me, shown=shown)

    return [
        Route("/closed", closed_page),
        Route("/stats", stats_page),
        Route("/admin", admin_page),
        Route("/admin/link", admin_link, methods=["POST"]),
        Route("/admin/token", admin_token, methods=["POST"]),
    ]


async def _admin(
    site: Site,
    request: Request,
    me: Person,
    *,
    shown: dict[str, str] | None = None,
    problem: str = "",
) -> Response:
    roster = site.roster()
    async with request.app.state.engine.connect() as conn:
        known = await accounts.accounts(conn)
    now = datetime.now(UTC)
    rows = []
    for r in sorted(roster.values(), key=lambda r: r.id):
        account = known.get(r.id)
        expires = account.link_expires_at if account else None
        rows.append(
            {
                "entry": r,
                "password": bool(account and account.password_hash),
                "link": expires is not None and expires > now,
            }
        )
    context = {
        "rows": rows,
        "shown": shown,
        "problem": problem,
        "link_csrf": site.signer.csrf(me.session.sid, "admin-link"),
        "token_csrf": site.signer.csrf(me.session.sid, "admin-token"),
        "roster_path": site.settings.roster_path,
    }
    status = 400 if problem else 200
    return site.render(request, "admin.html", context, me=me, status=status)
