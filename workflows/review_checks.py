"""Whether a reviewer's submission can count: pure and deterministic, so the ReviewItem update
validator and its signal handler give the same answer, and tests can call it directly."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payloads import ReviewItemInput, ReviewRecord, ReviewSubmission


def refusal(
    inp: ReviewItemInput,
    sub: ReviewSubmission,
    *,
    state: str,
    closed: bool,
    reviews: Sequence[ReviewRecord],
) -> str:
    """Why `sub` cannot count, or "" when it can."""
    if closed:
        return f"item {inp.item_id[:12]} is already closed ({state})"
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
