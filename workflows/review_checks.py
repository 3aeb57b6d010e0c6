"""Whether a reviewer's submission can count: pure and deterministic, so the ReviewItem update
validator and its signal handler give the same answer, and tests can call it directly.

Anyone who can reach Temporal can signal, so the boundary is bounded: the update validator
refuses bad input (sizes, characters, roster, labels) before it reaches history; a signal
that fails the same checks, or does not decode at all, is recorded as refused, but only the
first few are kept (the rest are counted), with their strings cut, so history cannot be grown
from outside. The roster in the input is a first check without I/O; `record_review` reads the
roster again when a review arrives, so a reviewer removed since the item opened is refused
at once.

An item opened with `identity` keys also asks each submission for a signed reviewer claim
(worker/identity.py), verified here against those keys with the workflow's own clock: no
valid claim for this reviewer and task, no review."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payloads import ReviewItemInput, ReviewRecord, ReviewSubmission
    from worker.identity import claim_problem

# Bounds on what a reviewer (or anyone who can reach Temporal) may send.
MAX_REVIEWER_CHARS = 128
MAX_LABEL_CHARS = 200
MAX_NOTE_CHARS = 4000


def text_problem(value: object, field: str, most: int, *, lines: bool = False) -> str:
    """Why a submitted string cannot be taken (too long, NUL, lone surrogate, control
    characters; newlines and tabs only where `lines`), or ""."""
    if not isinstance(value, str):
        return f"{field} must be a string"
    if len(value) > most:
        return f"{field} has {len(value)} characters, over the limit of {most}"
    allowed = "\t\n\r" if lines else ""
    for i, ch in enumerate(value):
        if ch in allowed:
            continue
        if ch == "\x00" or unicodedata.category(ch) in ("Cc", "Cs"):
            return f"{field} has a control character or lone surrogate (U+{ord(ch):04X}) at {i}"
    return ""


def submission_problem(sub: ReviewSubmission) -> str:
    """The first size or character problem of a submission, or ""."""
    problem = text_problem(sub.reviewer, "reviewer id", MAX_REVIEWER_CHARS)
    if not problem and not sub.reviewer.strip():
        problem = "reviewer id is empty"
    return (
        problem
        or text_problem(sub.label, "label", MAX_LABEL_CHARS)
        or text_problem(sub.note, "note", MAX_NOTE_CHARS, lines=True)
    )


def refusal(
    inp: ReviewItemInput,
    sub: ReviewSubmission,
    *,
    state: str,
    closed: bool,
    reviews: Sequence[ReviewRecord],
    now: datetime | None = None,
) -> str:
    """Why `sub` cannot count, or "" when it can. `now` (the workflow's time) judges a
    claim's expiry; required when the item asks for claims."""
    problem = submission_problem(sub)
    if problem:
        return problem
    if closed:
        return f"item {inp.item_id[:12]} is already closed ({state})"
    if inp.identity is not None:
        if now is None:
            raise ValueError("refusal() needs `now` for an item that asks for claims")
        # The crypto libraries import parts of themselves lazily: passed through, not
        # re-imported into the sandbox (verification is pure: same answer on replay).
        with workflow.unsafe.imports_passed_through():
            problem = claim_problem(
                sub.token, inp.identity, reviewer=sub.reviewer, task=inp.task, now=now
            )
        if problem:
            return problem
    grant = next((r for r in inp.reviewers if r.id == sub.reviewer), None)
    if grant is None:
        return f"reviewer {sub.reviewer!r} is not on the roster for task {inp.task!r}"
    if not grant.cleared:
        return f"reviewer {sub.reviewer!r} lacks clearance for a {inp.sensitivity!r} item"
    if state == "escalated" and inp.rules.escalate_to not in grant.groups:
        return (
            f"item is escalated to group {inp.rules.escalate_to!r}; {sub.reviewer!r} is not in it"
        )
    if sub.label not in inp.labels:
        return f"label {sub.label!r} is not one of {', '.join(inp.labels)}"
    if any(r.accepted and r.reviewer == sub.reviewer for r in reviews):
        return f"reviewer {sub.reviewer!r} already reviewed this item"
    return ""
