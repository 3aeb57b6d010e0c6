"""Signed reviewer identity: claims (worker/identity.py) and a ReviewItem that asks for them,
on the time-skipping server with fake catalog activities (expiry against workflow time)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities import ids
from activities.payloads import (
    CloseReviewInput,
    RecordReviewInput,
    RecordReviewResult,
    ReviewReceipt,
    ReviewStateView,
    ReviewSubmission,
)
from tests.unit.test_review_item_workflow import review_input
from worker.identity import (
    IdentityRing,
    claim_problem,
    ensure_identity_ring,
    rotate_identity_ring,
)
from worker.main import WORKFLOWS

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def ring(tmp_path: Path) -> IdentityRing:
    return ensure_identity_ring(tmp_path / "identity_keys.json")


def test_a_claim_verifies_for_its_reviewer_task_and_lifetime_only(ring: IdentityRing) -> None:
    keys = ring.public_keys()
    token = ring.mint("alice", task="sentiment", ttl_s=600, now=NOW)
    ok = claim_problem(token, keys, reviewer="alice", task="sentiment", now=NOW)
    assert ok == ""
    assert "not 'bob'" in claim_problem(token, keys, reviewer="bob", task="sentiment", now=NOW)
    assert "not 'digits'" in claim_problem(token, keys, reviewer="alice", task="digits", now=NOW)
    later = NOW + timedelta(seconds=600)
    assert "expired" in claim_problem(token, keys, reviewer="alice", task="sentiment", now=later)
    anywhere = ring.mint("alice", ttl_s=600, now=NOW)  # task "*"
    assert claim_problem(anywhere, keys, reviewer="alice", task="digits", now=NOW) == ""


@pytest.mark.parametrize(
    "token, why",
    [
        ("", "carries no signed reviewer claim"),
        (None, "carries no signed reviewer claim"),
        ("a.b", "not a token"),
        ("x" * 5000, "too long"),
        ("é.é.é", "not ASCII"),
    ],
)
def test_what_is_not_a_claim_is_refused_with_a_reason(
    ring: IdentityRing, token: object, why: str
) -> None:
    problem = claim_problem(token, ring.public_keys(), reviewer="alice", task="t", now=NOW)
    assert why in problem


def test_forged_claims_are_refused(ring: IdentityRing, tmp_path: Path) -> None:
    keys = ring.public_keys()
    token = ring.mint("alice", now=NOW)
    head, body, sig = token.split(".")
    tampered_sig = f"{head}.{body}.{sig[:-4]}AAAA"
    assert "does not verify" in claim_problem(
        tampered_sig, keys, reviewer="alice", task="t", now=NOW
    )
    # Another ring's key, under our key id; an HMAC claim; alg none.
    other = ensure_identity_ring(tmp_path / "other.json")
    theirs = jwt.encode(
        {"iss": "labelfabric", "sub": "alice", "task": "*", "exp": 2**40},
        _private(other),
        algorithm="EdDSA",
        headers={"kid": ring.active},
    )
    assert "does not verify" in claim_problem(theirs, keys, reviewer="alice", task="t", now=NOW)
    hmac = jwt.encode({"sub": "alice", "task": "*", "exp": 2**40}, "k" * 32, algorithm="HS256",
                      headers={"kid": ring.active})  # fmt: skip
    assert "does not verify" in claim_problem(hmac, keys, reviewer="alice", task="t", now=NOW)
    none = jwt.encode({"sub": "alice", "task": "*", "exp": 2**40}, "", algorithm="none",
                      headers={"kid": ring.active})  # fmt: skip
    assert "does not verify" in claim_problem(none, keys, reviewer="alice", task="t", now=NOW)


def _private(ring: IdentityRing):  # noqa: ANN202
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(ring.keys[ring.active].private)


def test_rotation_retires_the_old_key_and_the_ring_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "ring.json"
    first = ensure_identity_ring(path)
    old = first.mint("alice", now=NOW)
    second = rotate_identity_ring(path)
    assert second.active != first.active and first.active not in second.public_keys()
    assert "not a current one" in claim_problem(
        old, second.public_keys(), reviewer="alice", task="t", now=NOW
    )
    assert claim_problem(second.mint("alice", now=NOW), second.public_keys(),
                         reviewer="alice", task="t", now=NOW) == ""  # fmt: skip
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_identity_ring(path).active == second.active  # never replaced


# --- a ReviewItem that asks for claims --------------------------------------------------------


@dataclass
class FakeCatalog:
    """record_review as the catalog would answer; identity_keys gives `keys` (after a
    rotation, the ring's new public keys)."""

    keys: dict[str, str]
    recorded: list[tuple[str, bool, str]] = field(default_factory=list)
    asked: int = 0
    closed: list[tuple[str, str | None]] = field(default_factory=list)

    @activity.defn(name="record_review")
    async def record_review(self, inp: RecordReviewInput) -> RecordReviewResult:
        assert inp.signed
        self.recorded.append((inp.submission.reviewer, inp.accepted, inp.reason))
        return RecordReviewResult(accepted=inp.accepted, reason=inp.reason)

    @activity.defn(name="close_review")
    async def close_review(self, inp: CloseReviewInput) -> None:
        self.closed.append((inp.state, inp.label))

    @activity.defn(name="identity_keys")
    async def identity_keys(self) -> dict[str, str]:
        self.asked += 1
        return self.keys


async def _refused(handle, sub: ReviewSubmission) -> str:  # noqa: ANN001
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update("submit_review", sub, result_type=ReviewReceipt)
    return str(err.value.cause)


async def test_a_signed_item_takes_only_valid_claims_and_follows_a_key_rotation(
    skipping: WorkflowEnvironment, tmp_path: Path
) -> None:
    path = tmp_path / "identity_keys.json"
    ring = ensure_identity_ring(path)
    fakes = FakeCatalog(keys=ring.public_keys())
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    inp = replace(review_input(history_limit=2_000), identity=ring.public_keys())
    inp = replace(inp, rules=replace(inp.rules, reviewers_needed=1, timeout_s=7 * 24 * 3600))
    async with Worker(
        skipping.client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=[fakes.record_review, fakes.close_review, fakes.identity_keys],
    ):
        handle = await skipping.client.start_workflow(
            ids.REVIEW_ITEM_WORKFLOW,
            inp,
            id=ids.review_workflow_id("unit", "ef" * 32),
            task_queue=queue,
            result_type=ReviewStateView,
        )
        bare = ReviewSubmission(reviewer="alice", label="positive")
        assert "no signed reviewer claim" in await _refused(handle, bare)
        forged = replace(bare, token=ring.mint("alice")[:-4] + "AAAA")
        assert "does not verify" in await _refused(handle, forged)
        for_bob = replace(bare, token=ring.mint("bob"))
        assert "is for 'bob'" in await _refused(handle, for_bob)
        # Expiry is judged by workflow time: an hour-long claim, two hours later.
        short = replace(bare, token=ring.mint("alice", ttl_s=3600))
        await skipping.sleep(2 * 3600)
        assert "expired" in await _refused(handle, short)
        # A refused signal is recorded as refused, with the reason.
        await handle.signal("submit_review", bare)
        for _ in range(100):
            if fakes.recorded:
                break
            await asyncio.sleep(0.05)
        assert fakes.recorded == [("alice", False, fakes.recorded[0][2])]
        assert "no signed reviewer claim" in fakes.recorded[0][2]
        # Rotation: the old key stops counting once the item takes the ring's new keys.
        before = replace(bare, token=ring.mint("alice"))
        ring = rotate_identity_ring(path)
        fakes.keys = ring.public_keys()
        await handle.signal("identity_keys")
        for _ in range(100):
            if fakes.asked:
                break
            await asyncio.sleep(0.05)
        await handle.query("state")  # the refresh's workflow task has completed
        assert "not a current one" in await _refused(handle, before)
        receipt = await handle.execute_update(
            "submit_review", replace(bare, token=ring.mint("alice")), result_type=ReviewReceipt
        )
        assert receipt.state == "done" and receipt.label == "positive"
        final = await handle.result()
        history = await handle.fetch_history()
    assert final.label == "positive" and fakes.closed == [("done", "positive")]
    assert [r[:2] for r in fakes.recorded] == [("alice", False), ("alice", True)]
    await Replayer(workflows=list(WORKFLOWS)).replay_workflow(history)
