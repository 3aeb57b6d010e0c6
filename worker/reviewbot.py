"""A simulated reviewer (`labelfabric review bot`): answers the open reviews of a dataset from a
gold file, at a set rate, through the same `submit_review` update a person's answer takes.

For benchmarks and tests of the learning loop only: its id starts `sim:` (every review,
label and audit event it leaves says so), and the roster has it on duty only where
`LABELFABRIC_SIMULATED_REVIEWERS=1` is set. `accuracy` below 1 makes it answer a
deterministic share of items wrong (by a hash of the item id), like a careless person.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from activities.ids import OPEN_REVIEW_STATES
from activities.payloads import ReviewSubmission
from catalog import db
from worker import reviews
from worker.identity import IdentityRing
from worker.settings import Settings

NOTE = "simulated reviewer: answered from a gold file"


class BotStopped(Exception):
    """The bot cannot go on (it is not on duty); the message says why and what to do."""


@dataclass
class BotStats:
    answered: int = 0
    refused: int = 0
    wrong_on_purpose: int = 0
    elapsed_s: float = 0.0


def answer(item_id: str, truth: str, labels: Sequence[str], accuracy: float) -> str:
    """The gold label, or for about 1 - accuracy of items (by hash) another one."""
    digest = hashlib.sha256(f"review-bot:{item_id}".encode()).digest()
    if int.from_bytes(digest[:8], "big") / 2**64 < accuracy:
        return truth
    others = [lbl for lbl in labels if lbl != truth]
    return others[digest[8] % len(others)] if others else truth


async def open_items(engine: AsyncEngine, dataset: str) -> list[str]:
    t = db.T_REVIEW_TASK.c
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(t.item_id)
            .where(t.dataset == dataset, t.closed_at.is_(None), t.state.in_(OPEN_REVIEW_STATES))
            .distinct()
            .order_by(t.item_id)
        )
        return [r[0] for r in rows]


async def run_bot(
    client: Client,
    engine: AsyncEngine,
    *,
    reviewer: str,
    dataset: str,
    gold: Mapping[str, str],
    labels: Sequence[str],
    rate: float = 10.0,
    accuracy: float = 1.0,
    max_reviews: int | None = None,
    idle_s: float = 10.0,
    progress: Callable[[BotStats], None] = lambda _: None,
    token: Callable[[], str] = lambda: "",
) -> BotStats:
    """Answer open reviews of `dataset` whose item is in `gold` until `max_reviews`, or until
    nothing answerable has been open for `idle_s` seconds. `token()` gives the signed claim
    each submission carries (see `claims`)."""
    stats = BotStats()
    done: set[str] = set()
    started = last_work = time.monotonic()
    while max_reviews is None or stats.answered < max_reviews:
        todo = [i for i in await open_items(engine, dataset) if i in gold and i not in done]
        if not todo:
            if time.monotonic() - last_work > idle_s:
                break
            await asyncio.sleep(0.5)
            continue
        for item in todo:
            if max_reviews is not None and stats.answered >= max_reviews:
                break
            label = answer(item, gold[item], labels, accuracy)
            handle = client.get_workflow_handle(f"review:{dataset}:{item}")
            sub = ReviewSubmission(reviewer=reviewer, label=label, note=NOTE, token=token())
            done.add(item)
            try:
                await reviews.submit(handle, sub)
            except reviews.Refused as err:
                stats.refused += 1
                if "not on the roster" in str(err):
                    raise BotStopped(
                        f"{reviewer} is not on duty for {dataset}'s reviews ({err}): the worker "
                        "that opened them must run with LABELFABRIC_SIMULATED_REVIEWERS=1"
                    ) from err
                continue
            except reviews.ReviewError:
                stats.refused += 1  # closed meanwhile (superseded, answered): nothing to do
                continue
            stats.answered += 1
            stats.wrong_on_purpose += label != gold[item]
            last_work = time.monotonic()
            stats.elapsed_s = last_work - started
            progress(stats)
            await asyncio.sleep(1 / rate)
    stats.elapsed_s = time.monotonic() - started
    return stats


def claims(settings: Settings, reviewer: str, task: str) -> Callable[[], str]:
    """Signed claims for the bot, minted with the state dir's identity ring (the bot runs
    where an admin does) and renewed before they expire."""
    if not settings.signed_reviews:
        return lambda: ""
    ring = IdentityRing.load(settings.identity_keys_path)
    ttl = max(60, settings.review_token_ttl_s)
    token_now, renew_at = [""], [0.0]

    def token() -> str:
        if time.monotonic() > renew_at[0]:
            token_now[0] = ring.mint(reviewer, task=task, ttl_s=ttl)
            renew_at[0] = time.monotonic() + ttl / 2
        return token_now[0]

    return token
