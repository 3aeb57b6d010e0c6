"""The reviews of one ReviewItem and what they add up to: pure and deterministic, so the
workflow's handlers stay orchestration and tests can drive the arithmetic directly.

Invariants:
- A submission is *listed* before its record activity runs (a concurrent duplicate from the
  same reviewer is refused), but counts towards the label only once the catalog confirmed it
  (`confirm`); one the catalog refused (roster revoked) is `withdraw`n as refused.
- At most `KEPT_REFUSALS` refusals are kept, each with its strings cut; later ones are only
  counted (`refused_unkept`), so nothing sent from outside grows history without bound.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from temporalio import workflow

from workflows.review_checks import MAX_LABEL_CHARS, MAX_REVIEWER_CHARS

with workflow.unsafe.imports_passed_through():
    from activities.payloads import ReviewRecord, ReviewSubmission
    from formats.sources import clean

KEPT_REFUSALS = 20  # refused submissions recorded per item; later ones are only counted
REFUSED_NOTE_CHARS = 200


@dataclass
class ReviewBook:
    needed: int  # reviewers who must agree (policy `review.reviewers_needed`)
    reviews: list[ReviewRecord] = field(default_factory=list)
    refused_unkept: int = 0
    unconfirmed: list[ReviewRecord] = field(default_factory=list)

    def agreed(self) -> str | None:
        """The label enough recorded reviews agree on (reviews in flight do not count)."""
        votes = Counter(
            r.label
            for r in self.reviews
            if r.accepted and not any(r is u for u in self.unconfirmed)
        )
        if not votes:
            return None
        label, count = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        return label if count >= self.needed else None

    def list_accepted(self, sub: ReviewSubmission, via: str, *, confirmed: bool) -> ReviewRecord:
        record = ReviewRecord(
            reviewer=sub.reviewer, label=sub.label, note=sub.note, via=via, accepted=True
        )
        self.reviews.append(record)
        if not confirmed:
            self.unconfirmed.append(record)
        return record

    def confirm(self, record: ReviewRecord) -> None:
        self.unconfirmed = [u for u in self.unconfirmed if u is not record]

    def withdraw(self, record: ReviewRecord, reason: str) -> None:
        """Turn a listed review into a refused one."""
        self.confirm(record)
        at = next(i for i, r in enumerate(self.reviews) if r is record)
        self.reviews[at] = replace(record, accepted=False, reason=reason)

    def keep_refusal(self, sub: ReviewSubmission, reason: str) -> ReviewSubmission | None:
        """List a refused signal, its strings cut, and return what to record of it; None
        (only counted) past the bound."""
        if sum(not r.accepted for r in self.reviews) >= KEPT_REFUSALS:
            self.refused_unkept += 1
            return None
        kept = ReviewSubmission(
            reviewer=clean(sub.reviewer, MAX_REVIEWER_CHARS),
            label=clean(sub.label, MAX_LABEL_CHARS),
            note=clean(sub.note, REFUSED_NOTE_CHARS),
        )
        self.reviews.append(
            ReviewRecord(
                reviewer=kept.reviewer,
                label=kept.label,
                note=kept.note,
                via="signal",
                accepted=False,
                reason=reason,
            )
        )
        return kept

    def winners(self, label: str | None) -> list[str]:
        return [r.reviewer for r in self.reviews if r.accepted and r.label == label]
