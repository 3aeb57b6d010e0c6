"""The review page's items: the queue, one item, a review, and a lead's correction.

Nothing here shows an item the signed-in person may not see: the queue keeps only items of
their tasks whose sensitivity their clearance covers (the roster as it is now, against the
catalog's sensitivity), and a direct URL to any other item is refused with 403 whether or
not it exists, so the answer says nothing about texts one is not cleared for.

A review goes through the ReviewItem's `submit_review` update as the signed-in reviewer,
with a claim signed for them here (worker/identity.py), scoped to the item's task and valid
for minutes; the workflow checks it. A correction is a catalog write
(`catalog.corrections.correct_label`), then the dataset's `Dataset` workflow is told, as a
closed review tells it, so a new snapshot version carries the corrected label.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from activities import ids
from activities.ids import parse_review_workflow_id
from activities.payloads import DatasetInput, LabelsChanged, ReviewSubmission
from catalog import corrections
from worker import reviews
from worker.identity import IdentityRing, IdentityRingError
from worker.web import auth
from worker.web.site import Person, Refusal, Site, log

QUEUE_LIMIT = 200
CLOSE_WAIT_S = 10.0
CLAIM_TTL_S = 300  # a page-made claim serves one submission


def routes(site: Site) -> list[Route]:
    async def queue_page(request: Request) -> Response:
        me = await site.require(request, "review")
        dataset = (request.query_params.get("dataset") or "")[:200] or None
        rows, count = await reviews.queue(
            request.app.state.client, dataset=dataset, reviewer=me.id, limit=QUEUE_LIMIT
        )
        async with request.app.state.engine.connect() as conn:
            access = await corrections.access_of(conn, [(r.dataset, r.item_id) for r in rows])
        shown = [r for r in rows if me.sees(*access.get((r.dataset, r.item_id), (None, None)))]
        context = {"rows": shown, "count": count - (len(rows) - len(shown)), "dataset": dataset}
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
        return site.redirect(
            request, "/?" + urlencode({"dataset": back} if back else {}), flash=done
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
    context = {
        "wid": wid,
        "state": state,
        "facts": facts,
        "text": text,
        "note": note,
        "refused": refused,
        "reason": reason,
        "corrected": corrected,
        "csrf": site.signer.csrf(sid, f"review:{wid}"),
        "correct_csrf": site.signer.csrf(sid, f"correct:{wid}") if me.may("correct") else "",
    }
    status = 422 if refused and status == 200 else status
    return site.render(request, "item.html", context, me=me, status=status)


async def _tell_dataset(request: Request, site: Site, dataset: str, source: str) -> None:
    """Ask the dataset's single writer for a new snapshot version (as a closed review does)."""
    try:
        await request.app.state.client.start_workflow(
            ids.DATASET_WORKFLOW,
            DatasetInput(name=dataset, debounce_s=site.settings.snapshot_debounce_s),
            id=ids.dataset_workflow_id(dataset),
            task_queue=site.settings.task_queue,
            start_signal="labels_changed",
            start_signal_args=[LabelsChanged(source=source[:300])],
        )
    except Exception as err:  # the label is written; the next change snapshots it too
        log.warning("review page: could not tell dataset %s of a correction: %s", dataset, err)
