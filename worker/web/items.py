"""The review page's items: the queue, one item, a review, and a lead's correction.

Nothing here shows an item the signed-in person may not see: the queue keeps only items of
their tasks whose sensitivity their clearance covers (the roster as it is now, against the
catalog's sensitivity), and a direct URL to any other item is refused with 403 whether or
not it exists, so the answer says nothing about texts one is not cleared for. The queue's
previews are the item's text in its task's `reviewers` PII mode (`reviews.item_text`), as on
the item page.

The reviewing flow: a label takes the reviewer to the next item of the queue they may label
and have not answered yet; keys 1-9 pick the labels (`accesskey`, and a tiny script allowed by
this page's own CSP nonce: the page works the same without it); the rule that routed the item
is shown with its description from the pinned policy version; a lead corrects a closed review
from the item page with one click per label (a reason is still required).

A review goes through the ReviewItem's `submit_review` update as the signed-in reviewer,
with a claim signed for them here (worker/identity.py), scoped to the item's task and valid
for minutes; the workflow checks it. A correction is a catalog write
(`catalog.corrections.correct_label`), then the dataset's `Dataset` workflow is told, as a
closed review tells it, so a new snapshot version carries the corrected label.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from activities import ids
from activities.ids import parse_review_workflow_id
from activities.payloads import DatasetInput, LabelsChanged, ReviewSubmission, dataset_attributes
from catalog import corrections
from catalog.label_issues import LABEL_ISSUE_RULE
from policy_rules.model import PolicyError
from policy_rules.store import PolicyStore
from worker import reviews
from worker.identity import IdentityRing, IdentityRingError
from worker.web import auth
from worker.web.site import Person, Refusal, Site, csp, log

QUEUE_LIMIT = 200
CLOSE_WAIT_S = 10.0
CLAIM_TTL_S = 300  # a page-made claim serves one submission
# Rules that route items to people outside a routing policy's own rules.
OTHER_RULES = {
    LABEL_ISSUE_RULE: "confident learning found its current label likely wrong "
    "(`labelfabric dataset verify`)",
    "drift_sample": "a drift check sampled recent items for people to look at",  # drift.py
}


def routes(site: Site) -> list[Route]:
    async def queue_page(request: Request) -> Response:
        me = await site.require(request, "review")
        dataset = (request.query_params.get("dataset") or "")[:200] or None
        rows, count = await _queue(request, site, me, dataset)
        shown = [r for r in rows if me.sees(r.sensitivity, r.task)]  # `queue` kept only these
        engine, tasks_dir = request.app.state.engine, site.settings.tasks_dir
        previews = {
            r.workflow_id: reviews.preview(
                await reviews.item_text(engine, r.dataset, r.item_id, tasks_dir=tasks_dir)
            )
            for r in shown
        }
        context = {
            "rows": shown,
            "count": count - (len(rows) - len(shown)),
            "dataset": dataset,
            "previews": previews,
        }
        return site.render(request, "queue.html", context, me=me)

    async def item_page(request: Request) -> Response:
        me = await site.require(request, "review")
        wid, facts = await _item(request, me)
        return await render_item(site, request, me, wid, facts)

    async def submit(request: Request) -> Response:
        me = await site.require(request, "review")
        wid = request.path_params["wid"]
        form = await site.form(request, sid=me.session.sid, action=f"review:{wid}")
        wid, facts = await _item(request, me)
        label, note = form.get("label", ""), form.get("note", "").strip()
        problem = auth.text_problem(label, "the label", 200) or auth.text_problem(
            note, "the note", auth.MAX_NOTE_CHARS, lines=True
        )
        if problem:
            return await render_item(site, request, me, wid, facts, note=note, refused=problem)
        try:
            ring = IdentityRing.load(site.settings.identity_keys_path)
            token = ring.mint(
                me.id,
                task=facts.task or "*",
                role=me.role,
                ttl_s=min(CLAIM_TTL_S, site.settings.review_token_ttl_s),
            )
        except IdentityRingError as err:
            log.error("review page: cannot sign a reviewer claim: %s", err)
            raise Refusal(503, "this page cannot sign reviews now (identity keys)") from None
        sub = ReviewSubmission(reviewer=me.id, label=label, note=note, token=token)
        handle = request.app.state.client.get_workflow_handle(wid)
        try:
            receipt = await reviews.submit(handle, sub)
        except reviews.Refused as err:
            return await render_item(site, request, me, wid, facts, note=note, refused=str(err))
        if receipt.label:
            # The item closes (label written, ReviewState=done) right after the update
            # returns: wait for that, so the queue shown next no longer lists it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(handle.result(), CLOSE_WAIT_S)
        done = f"labeled {facts.item_id[:12]} as {label}: the item is " + (
            f"done ({receipt.label})" if receipt.label else f"{receipt.state}, waiting for more"
        )
        back = request.query_params.get("dataset", "")[:200]
        keep = "?" + urlencode({"dataset": back}) if back else ""
        following = await _next_item(request, site, me, back or None, after=wid)
        if following is None:
            return site.redirect(request, "/" + keep, flash=done + "; nothing else waits for you")
        return site.redirect(
            request, f"/items/{quote(following, safe='')}{keep}", flash=done + "; the next one"
        )

    async def correct(request: Request) -> Response:
        me = await site.require(request, "correct")
        wid = request.path_params["wid"]
        form = await site.form(request, sid=me.session.sid, action=f"correct:{wid}")
        wid, facts = await _item(request, me)
        label, reason = form.get("label", ""), form.get("reason", "").strip()
        supersedes = form.get("supersedes", "")
        state = await _state(request, wid)
        problem = (
            ("" if label in state.labels else f"label {label[:40]!r} is not one of the task's")
            or auth.text_problem(reason, "the reason", auth.MAX_REASON_CHARS, lines=True)
            or ("" if len(reason) >= 3 else "say why (a reason of at least 3 characters)")
            or (
                ""
                if supersedes.isascii() and supersedes.isdigit() and len(supersedes) < 19
                else "reload the page"
            )
        )
        if not problem:
            try:
                async with request.app.state.engine.begin() as conn:
                    new_id = await corrections.correct_label(
                        conn,
                        dataset=facts.dataset,
                        item_id=facts.item_id,
                        label=label,
                        reason=reason,
                        lead=me.id,
                        supersedes=int(supersedes),
                    )
            except corrections.CorrectionRefused as err:
                problem = str(err)
        if problem:
            return await render_item(
                site, request, me, wid, facts, reason=reason, corrected=problem, status=409
            )
        await _tell_dataset(request, site, facts.dataset, f"{wid}:corrected:{new_id}")
        flash = f"corrected {facts.item_id[:12]} to {label} (was {facts.label})"
        return site.redirect(request, f"/items/{quote(wid, safe='')}", flash=flash)

    return [
        Route("/", queue_page),
        Route("/items/{wid:path}", item_page, methods=["GET"]),
        Route("/items/{wid:path}", submit, methods=["POST"]),
        Route("/corrections/{wid:path}", correct, methods=["POST"]),
    ]


async def _queue(
    request: Request, site: Site, me: Person, dataset: str | None
) -> tuple[list[reviews.QueueRow], int]:
    """The open reviews `me` may label: the roster as it is now against the catalog."""
    return await reviews.queue(
        request.app.state.client,
        request.app.state.engine,
        list(site.roster().values()),
        dataset=dataset,
        reviewer=me.id,
        limit=QUEUE_LIMIT,
    )


async def _next_item(
    request: Request, site: Site, me: Person, dataset: str | None, *, after: str
) -> str | None:
    """The review `me` should open next: the oldest in their queue, other than `after`, that
    they have not answered yet (an item waiting for a second reviewer stays in the queue)."""
    rows, _ = await _queue(request, site, me, dataset)
    waiting = [r for r in rows if r.workflow_id != after and me.sees(r.sensitivity, r.task)]
    if not waiting:
        return None
    async with request.app.state.engine.connect() as conn:
        answered = await corrections.answered_by(
            conn, me.id, [(r.dataset, r.item_id) for r in waiting]
        )
    return next((r.workflow_id for r in waiting if (r.dataset, r.item_id) not in answered), None)


@functools.lru_cache(maxsize=4)
def _policies(folder: Path) -> PolicyStore:
    return PolicyStore(folder)


def _routing_rule(site: Site, state: Any) -> dict[str, str]:
    """The rule that routed the item, for people: its description in the pinned policy
    version (what the reviewer was asked to decide), and its condition."""
    rule_id = str(state.rule_id)
    if rule_id in OTHER_RULES:
        return {"id": rule_id, "description": OTHER_RULES[rule_id], "when": ""}
    try:
        policy = _policies(site.settings.policies_dir).pinned(state.policy)
    except PolicyError as err:
        log.warning("review page: policy %s@%s: %s", state.policy.id, state.policy.version, err)
        return {"id": rule_id, "description": "(its policy version cannot be read)", "when": ""}
    rule = next((r for r in policy.rules if r.id == rule_id), None)
    when = f"{rule.when} → {rule.outcome}" if rule is not None else ""
    return {"id": rule_id, "description": policy.describe(rule_id), "when": when}


async def _item(request: Request, me: Person) -> tuple[str, corrections.ItemFacts]:
    """The item of the URL's review, if `me` may see it: 404 for what is not a review id,
    403 for an item that does not exist or that `me` is not cleared for (alike)."""
    wid = request.path_params["wid"]
    parsed = parse_review_workflow_id(wid)
    if parsed is None or len(wid) > 400:
        raise Refusal(404, f"no review {wid[:100]!r}")
    async with request.app.state.engine.connect() as conn:
        facts = await corrections.item_facts(conn, *parsed)
    if facts is None or not me.sees(facts.sensitivity, facts.task):
        raise Refusal(403, "refused: this is not an item you may see (task or clearance)")
    return wid, facts


async def _state(request: Request, wid: str) -> Any:
    handle = request.app.state.client.get_workflow_handle(wid)
    try:
        return await reviews.state_of(handle)
    except Exception as err:  # not found, not a ReviewItem, or not answering
        reason = str(err) if isinstance(err, reviews.ReviewError) else f"cannot read {wid}"
        raise Refusal(404, reason[:300]) from None


async def render_item(
    site: Site,
    request: Request,
    me: Person,
    wid: str,
    facts: corrections.ItemFacts,
    *,
    note: str = "",
    refused: str = "",
    reason: str = "",
    corrected: str = "",
    status: int = 200,
) -> Response:
    state = await _state(request, wid)
    text = await reviews.item_text(  # in the task's `reviewers` PII mode
        request.app.state.engine, facts.dataset, facts.item_id, tasks_dir=site.settings.tasks_dir
    )
    sid = me.session.sid
    nonce = secrets.token_urlsafe(16)  # this response's script only (keys 1-9)
    context = {
        "wid": wid,
        "state": state,
        "facts": facts,
        "text": text,
        "rule": _routing_rule(site, state),
        "note": note,
        "refused": refused,
        "reason": reason,
        "corrected": corrected,
        "nonce": nonce,
        "csrf": site.signer.csrf(sid, f"review:{wid}"),
        "correct_csrf": site.signer.csrf(sid, f"correct:{wid}") if me.may("correct") else "",
    }
    status = 422 if refused and status == 200 else status
    response = site.render(request, "item.html", context, me=me, status=status)
    response.headers["content-security-policy"] = csp(script_nonce=nonce)
    return response


async def _tell_dataset(request: Request, site: Site, dataset: str, source: str) -> None:
    """Ask the dataset's single writer for a new snapshot version (as a closed review does)."""
    try:
        await request.app.state.client.start_workflow(
            ids.DATASET_WORKFLOW,
            DatasetInput(name=dataset, debounce_s=site.settings.snapshot_debounce_s),
            id=ids.dataset_workflow_id(dataset),
            task_queue=site.settings.task_queue,
            search_attributes=dataset_attributes(dataset),
            start_signal="labels_changed",
            start_signal_args=[LabelsChanged(source=source[:300])],
        )
    except Exception as err:  # the label is written; the next change snapshots it too
        log.warning("review page: could not tell dataset %s of a correction: %s", dataset, err)
