"""Sign-in for the review page, as plain functions (no request, no database): passwords,
one-time login links, signed session cookies, CSRF tokens, roles, a failed-login throttle
and the bounds on what a form may carry.

- Passwords are argon2id hashes (argon2-cffi's defaults). A sign-in for a reviewer without
  a password still runs one verification against a fixed hash, so the time taken does not
  say which reviewer ids exist.
- A login link's token is 32 random bytes; the catalog keeps only its sha256 (the token has
  far more entropy than a password, so a fast hash is enough), with an expiry; using it
  clears it.
- A session cookie is signed and timestamped (itsdangerous, key `session_secret` of the
  state dir). It carries the reviewer, the role, the account's session generation and a
  random session id; the page checks all of it against the roster and the catalog on every
  request, so removing a reviewer from the roster, changing their role, a new password or a
  sign-out ends it at once.
- CSRF tokens are HMACs of the session id and the action, so a token is good for one
  session and one form target.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "lf_session"
FLASH_COOKIE = "lf_flash"
SESSION_SALT = "labelfabric.review.session"
FLASH_SALT = "labelfabric.review.flash"
CSRF_SALT = b"labelfabric.review.csrf"

MAX_ID_CHARS = 128  # as the ReviewItem validator bounds a reviewer id
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 256  # argon2 takes any length; this bounds the work one request costs
MAX_REASON_CHARS = 1000
MAX_NOTE_CHARS = 4000
LINK_TTL_S = 24 * 3600
FRESH_S = 15 * 60  # a session this young may set a password without giving the old one

# What each role may do beyond reviewing (every role reviews the tasks the roster gives it).
PERMISSIONS: dict[str, frozenset[str]] = {
    "reviewer": frozenset({"review"}),
    "lead": frozenset({"review", "correct", "stats", "ops"}),
    "admin": frozenset({"review", "roster", "links", "tokens", "ops"}),
}

_HASHER = PasswordHasher()
# Verified against when a reviewer has no password: same cost, never matches.
_NO_PASSWORD = _HASHER.hash(secrets.token_urlsafe(32))


def may(role: str, action: str) -> bool:
    return action in PERMISSIONS.get(role, frozenset())


# --- passwords and links ----------------------------------------------------------------


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored` (an argon2 hash, or None: never, in equal time)."""
    try:
        return _HASHER.verify(stored or _NO_PASSWORD, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_problem(password: str, again: str | None = None) -> str:
    """Why `password` cannot be set, or ""."""
    if again is not None and not hmac.compare_digest(password.encode(), again.encode()):
        return "the two passwords differ"
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a password needs at least {MIN_PASSWORD_CHARS} characters"
    return text_problem(password, "the password", MAX_PASSWORD_CHARS)


def new_link_token() -> tuple[str, str]:
    """(token for the link, its sha256 for the catalog)."""
    token = secrets.token_urlsafe(32)
    return token, token_sha256(token)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_url(base: str, token: str) -> str:
    """The link a person opens: `base` is the page's own address."""
    return f"{base.rstrip('/')}/login/link?{urlencode({'token': token})}"


def link_token_ok(token: str) -> bool:
    """Shape only (what `token_urlsafe(32)` makes), before anything is looked up."""
    return 20 <= len(token) <= 100 and all(
        c.isascii() and (c.isalnum() or c in "-_") for c in token
    )


# --- sessions, flashes and CSRF -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    reviewer: str
    role: str
    generation: int
    sid: str  # random per sign-in; CSRF tokens are bound to it
    signed_at: float = 0.0  # when the cookie was signed (from its timestamp)

    def fresh(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) - self.signed_at < FRESH_S


class Signer:
    """Signs and checks the page's cookies with the state dir's session secret."""

    def __init__(self, secret: str, *, max_age_s: int) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret is too short")
        self.max_age_s = max_age_s
        self._session = URLSafeTimedSerializer(secret, salt=SESSION_SALT)
        self._flash = URLSafeTimedSerializer(secret, salt=FLASH_SALT)
        self._csrf = hmac.new(secret.encode(), CSRF_SALT, hashlib.sha256).digest()

    def session(self, reviewer: str, role: str, generation: int) -> str:
        body = {"r": reviewer, "o": role, "g": generation, "s": secrets.token_urlsafe(18)}
        return str(self._session.dumps(body))

    def read_session(self, value: str | None) -> Session | None:
        if not value or len(value) > 1024:
            return None
        try:
            body, signed = self._session.loads(value, max_age=self.max_age_s, return_timestamp=True)
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(body, dict):
            return None
        r, o, g, s = body.get("r"), body.get("o"), body.get("g"), body.get("s")
        if not (isinstance(r, str) and isinstance(o, str) and isinstance(s, str)):
            return None
        if not isinstance(g, int) or isinstance(g, bool):
            return None
        return Session(reviewer=r, role=o, generation=g, sid=s, signed_at=signed.timestamp())

    def flash(self, message: str) -> str:
        return str(self._flash.dumps(message[:300]))

    def read_flash(self, value: str | None) -> str:
        if not value or len(value) > 1024:
            return ""
        try:
            message: Any = self._flash.loads(value, max_age=120)
        except (BadSignature, ValueError, TypeError):
            return ""
        return message if isinstance(message, str) else ""

    def csrf(self, sid: str, action: str) -> str:
        return hmac.new(self._csrf, f"{sid}\n{action}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, token: object, sid: str, action: str) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token, self.csrf(sid, action))


# --- failed sign-ins ------------------------------------------------------------------------


class Throttle:
    """Failed sign-ins per key (a reviewer id, a client address) in a sliding window: past
    `limit` of them the key waits until the oldest leaves the window. In process and
    bounded: a flood of fresh keys evicts the oldest entries."""

    def __init__(self, *, limit: int = 5, window_s: float = 900.0, keys: int = 10_000) -> None:
        self.limit, self.window_s, self.keys = limit, window_s, keys
        self._failures: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, []) if now - t < self.window_s]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def wait_s(self, keys: list[str], now: float | None = None) -> float:
        """Seconds until any of `keys` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        waits = [
            recent[0] + self.window_s - now
            for recent in (self._recent(k, now) for k in keys)
            if len(recent) >= self.limit
        ]
        return max(waits, default=0.0)

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in keys:
            self._failures[key] = [*self._recent(key, now), now][-self.limit :]
            if len(self._failures) > self.keys:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


# --- what forms may carry -------------------------------------------------------------------


def text_problem(value: str, field: str, most: int, *, lines: bool = False) -> str:
    """Why a form value cannot be taken (too long, control characters, lone surrogates;
    newlines and tabs only where `lines`), or ""."""
    if len(value) > most:
        return f"{field} is longer than {most} characters"
    allowed = "\t\n\r" if lines else ""
    for ch in value:
        if ch not in allowed and unicodedata.category(ch) in ("Cc", "Cs"):
            return f"{field} has a control character"
    return ""


def reviewer_id_ok(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_CHARS and not text_problem(value, "id", MAX_ID_CHARS)


def local_path(target: str | None) -> str:
    """`target` when it is a path on this site (never another host), else "/"."""
    if (
        not target
        or len(target) > 2000
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or text_problem(target, "path", 2000)
    ):
        return "/"
    return target
