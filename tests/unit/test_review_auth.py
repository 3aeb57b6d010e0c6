"""The review page's sign-in helpers without a server: passwords, sessions, CSRF, the
throttle, redirects, roles, and the roster's role field and in-place role edit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from itsdangerous import URLSafeTimedSerializer

from agents.base import TaskError
from agents.roster import load_roster, with_role
from worker.settings import PROJECT_ROOT
from worker.web import auth

SECRET = "s" * 43


def test_passwords_verify_only_against_their_hash() -> None:
    stored = auth.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert auth.verify_password(stored, "correct horse battery")
    assert not auth.verify_password(stored, "correct horse battery!")
    assert not auth.verify_password(None, "correct horse battery")  # no password: never
    assert not auth.verify_password("not a hash", "x")


def test_a_missing_password_costs_as_much_as_a_wrong_one() -> None:
    stored = auth.hash_password("correct horse battery")

    def timed(value: str | None) -> float:
        start = time.perf_counter()
        auth.verify_password(value, "guess guess guess")
        return time.perf_counter() - start

    # Interleaved, and the fastest of each: a busy machine slows single runs, never the best.
    runs = [(timed(stored), timed(None)) for _ in range(5)]
    wrong, missing = min(w for w, _ in runs), min(m for _, m in runs)
    assert 0.5 < missing / wrong < 2.0, runs


@pytest.mark.parametrize(
    ("password", "again", "problem"),
    [
        ("short", None, "at least 10"),
        ("x" * 257, None, "longer than 256"),
        ("long enough\x00pw", None, "control character"),
        ("long enough pw", "long enough pw!", "differ"),
        ("long enough pw", "long enough pw", ""),
    ],
)
def test_password_rules(password: str, again: str | None, problem: str) -> None:
    found = auth.password_problem(password, again)
    assert (problem in found) if problem else found == ""


def test_sessions_round_trip_and_refuse_tampering_and_age() -> None:
    signer = auth.Signer(SECRET, max_age_s=3600)
    value = signer.session("alice", "lead", 3)
    session = signer.read_session(value)
    assert session is not None
    assert (session.reviewer, session.role, session.generation) == ("alice", "lead", 3)
    assert session.fresh() and len(session.sid) >= 20
    assert signer.read_session(value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]) is None
    assert auth.Signer("t" * 43, max_age_s=3600).read_session(value) is None  # another key
    assert signer.read_session(None) is None and signer.read_session("x" * 2000) is None
    # A body the page did not write (even if signed with its key) is not a session.
    forged = URLSafeTimedSerializer(SECRET, salt=auth.SESSION_SALT).dumps(
        {"r": "alice", "o": "admin", "g": True, "s": "x"}
    )
    assert signer.read_session(str(forged)) is None
    old = auth.Signer(SECRET, max_age_s=-1)  # anything signed is already too old
    assert old.read_session(value) is None


def test_a_flash_is_signed_so_a_link_cannot_put_words_on_the_page() -> None:
    signer = auth.Signer(SECRET, max_age_s=3600)
    assert signer.read_flash(signer.flash("labeled abc as positive")) == "labeled abc as positive"
    assert signer.read_flash("your session expired, go to evil.example") == ""
    assert signer.read_flash(signer.session("alice", "reviewer", 0)) == ""  # other salt


def test_csrf_tokens_are_bound_to_session_and_action() -> None:
    signer = auth.Signer(SECRET, max_age_s=3600)
    token = signer.csrf("sid1", "review:review:d:i")
    assert signer.csrf_ok(token, "sid1", "review:review:d:i")
    assert not signer.csrf_ok(token, "sid2", "review:review:d:i")
    assert not signer.csrf_ok(token, "sid1", "correct:review:d:i")
    assert not signer.csrf_ok(None, "sid1", "review:review:d:i")


def test_the_throttle_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    throttle = auth.Throttle(limit=3, window_s=60, keys=100)
    for t in (0.0, 1.0, 2.0):
        assert throttle.wait_s(["id:bob"], now=t) == 0
        throttle.failed(["id:bob"], now=t)
    assert throttle.wait_s(["id:bob"], now=3.0) == pytest.approx(57.0)
    assert throttle.wait_s(["id:alice"], now=3.0) == 0
    assert throttle.wait_s(["id:bob"], now=61.0) == 0  # the first failure left the window
    throttle.failed(["id:bob"], now=61.0)
    throttle.succeeded("id:bob")
    assert throttle.wait_s(["id:bob"], now=62.0) == 0
    for i in range(500):  # a flood of fresh keys stays bounded
        throttle.failed([f"id:x{i}"], now=70.0)
    assert len(throttle._failures) <= 101


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/items/review%3Ad%3Ai?dataset=d", "/items/review%3Ad%3Ai?dataset=d"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/ok\nSet-Cookie: x", "/"),
        (None, "/"),
    ],
)
def test_redirects_stay_on_this_site(target: str | None, safe: str) -> None:
    assert auth.local_path(target) == safe


def test_roles_grant_only_their_actions() -> None:
    assert auth.may("reviewer", "review") and not auth.may("reviewer", "correct")
    assert auth.may("lead", "correct") and auth.may("lead", "stats")
    assert not auth.may("lead", "roster") and not auth.may("lead", "tokens")
    assert auth.may("admin", "links") and auth.may("admin", "tokens")
    assert not auth.may("admin", "correct")  # an admin manages logins, not labels
    assert not auth.may("root", "review")


def test_link_tokens_are_random_and_stored_only_as_a_hash() -> None:
    token, digest = auth.new_link_token()
    other, _ = auth.new_link_token()
    assert token != other and auth.link_token_ok(token)
    assert digest == auth.token_sha256(token) and token not in digest
    assert not auth.link_token_ok("short") and not auth.link_token_ok("a" * 30 + "/")
    url = auth.link_url("http://127.0.0.1:7245/", token)
    assert url == f"http://127.0.0.1:7245/login/link?token={token}"


def test_the_sample_roster_has_a_lead_and_an_admin() -> None:
    roles = {r.id: r.role for r in load_roster(PROJECT_ROOT / "config" / "roster.yaml")}
    assert roles["carol"] == "lead" and roles["erin"] == "admin" and roles["alice"] == "reviewer"


def test_an_unknown_role_is_refused(tmp_path: Path) -> None:
    roster = tmp_path / "roster.yaml"
    roster.write_text("reviewers:\n  - {id: mallory, tasks: [t], role: root}\n")
    with pytest.raises(TaskError, match="role must be one of"):
        load_roster(roster)


def test_a_role_edit_changes_one_line_and_keeps_the_rest() -> None:
    text = (PROJECT_ROOT / "config" / "roster.yaml").read_text()
    promoted = with_role(text, "bob", "lead")
    lines = text.splitlines()
    at = lines.index("  - id: bob") + 1
    assert promoted.splitlines() == [*lines[:at], "    role: lead", *lines[at:]]
    demoted = with_role(promoted, "carol", "reviewer")
    assert demoted.count("role: lead") == 1 and "    role: reviewer" in demoted
    assert with_role(with_role(text, "bob", "lead"), "bob", "reviewer").count("role:") == 3
    quoted = with_role(text, "sim:gold", "reviewer")
    assert '  - id: "sim:gold"\n    role: reviewer\n' in quoted
    with pytest.raises(ValueError, match="edit the file by hand"):
        with_role("reviewers:\n  - {id: bob, tasks: [t]}\n", "bob", "lead")
    with pytest.raises(ValueError, match="role must be one of"):
        with_role(text, "bob", "root")


def test_a_role_edit_reads_back_as_that_role(tmp_path: Path) -> None:
    roster = tmp_path / "roster.yaml"
    roster.write_text(
        with_role((PROJECT_ROOT / "config" / "roster.yaml").read_text(), "dana", "admin")
    )
    roles = {r.id: r.role for r in load_roster(roster, simulated=True)}
    assert roles["dana"] == "admin" and roles["carol"] == "lead" and roles["sim:gold"] == "reviewer"
