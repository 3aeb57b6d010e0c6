"""Signed reviewer identity: a review counts only with a claim nobody but us could have made.

A claim is a compact JWS (a JWT, alg EdDSA / Ed25519) with the reviewer (`sub`), the task it
is good for (`task`, or ``*``), the reviewer's role and an expiry. The review page signs one
at login, and an admin with the state dir signs one with `labelfabric reviewer token`.

The ring (``LABELFABRIC_IDENTITY_KEYS``, default ``{home}/identity_keys.json``, 0600, made
by `labelfabric up`) holds the private keys. A ReviewItem receives the *public* keys of the
ring at start and verifies each submission's claim in its update validator and signal
handler: `verify` is pure (PyJWS checks the signature; expiry is compared with the time the
caller passes, `workflow.now()` in a workflow), so replay gives the same answer.

Rotation (`labelfabric reviewer rotate-key`) makes a new active key and retires the others:
the catalog side of a review (`record_review`) checks the claim against the ring as it is
*now*, so a claim signed with a retired key is refused on every open item at once, and the
open items are told the new public keys (signal `identity_keys`, confirmed by an activity).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from worker.codec import new_key_id, write_private

ISSUER = "labelfabric"
ALGORITHM = "EdDSA"
MAX_TOKEN_CHARS = 2048
ANY_TASK = "*"
ROLES = ("reviewer", "lead", "admin")


class IdentityRingError(Exception):
    """The identity ring is missing, unreadable or malformed."""


@dataclass(frozen=True)
class SigningKey:
    private: bytes  # raw 32-byte Ed25519 seed
    public: bytes  # raw 32-byte public key
    retired: str | None = None  # ISO time it stopped signing and verifying


@dataclass(frozen=True)
class IdentityRing:
    active: str
    keys: dict[str, SigningKey] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> IdentityRing:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise IdentityRingError(
                f"no reviewer identity ring at {path}: `labelfabric up` makes one for its state "
                "dir; elsewhere set LABELFABRIC_IDENTITY_KEYS to the stack's identity_keys.json"
            ) from None
        except (OSError, ValueError) as err:
            raise IdentityRingError(f"identity ring {path} is unreadable: {err}") from None
        try:
            keys = {
                str(kid): SigningKey(
                    private=base64.b64decode(k["private"], validate=True),
                    public=base64.b64decode(k["public"], validate=True),
                    retired=k.get("retired"),
                )
                for kid, k in raw["keys"].items()
            }
            active = str(raw["active"])
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise IdentityRingError(f"identity ring {path} is malformed ({err})") from None
        if active not in keys or keys[active].retired:
            raise IdentityRingError(f"identity ring {path} has no active key")
        return cls(active=active, keys=keys)

    def save(self, path: Path) -> None:
        body = {
            "version": 1,
            "active": self.active,
            "keys": {
                kid: {
                    "private": base64.b64encode(k.private).decode(),
                    "public": base64.b64encode(k.public).decode(),
                    "retired": k.retired,
                }
                for kid, k in self.keys.items()
            },
        }
        write_private(path, json.dumps(body, indent=1))

    def rotated(self) -> IdentityRing:
        """A new active key; every other key retired (its claims stop counting)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        raw = serialization.Encoding.Raw
        seed = Ed25519PrivateKey.generate()
        key = SigningKey(
            private=seed.private_bytes(
                raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            ),
            public=seed.public_key().public_bytes(raw, serialization.PublicFormat.Raw),
        )
        kid = new_key_id(self.keys)
        old = {
            k: v if v.retired else SigningKey(v.private, v.public, now)
            for k, v in self.keys.items()
        }
        return IdentityRing(active=kid, keys={**old, kid: key})

    def public_keys(self) -> dict[str, str]:
        """Key id -> base64 raw public key of every key that still verifies."""
        live = {k: v for k, v in self.keys.items() if not v.retired}
        return {k: base64.b64encode(v.public).decode() for k, v in live.items()}

    def mint(
        self,
        reviewer: str,
        *,
        task: str = ANY_TASK,
        role: str = "reviewer",
        ttl_s: int = 8 * 3600,
        now: datetime | None = None,
    ) -> str:
        """A claim for `reviewer`, signed with the active key."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        issued = int((now or datetime.now(UTC)).timestamp())
        claims = {
            "iss": ISSUER,
            "sub": reviewer,
            "task": task,
            "role": role,
            "iat": issued,
            "exp": issued + int(ttl_s),
            "jti": secrets.token_hex(8),
        }
        key = Ed25519PrivateKey.from_private_bytes(self.keys[self.active].private)
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": self.active})


def ensure_identity_ring(path: Path) -> IdentityRing:
    if path.exists():
        return IdentityRing.load(path)
    ring = IdentityRing(active="").rotated()
    ring.save(path)
    return ring


def rotate_identity_ring(path: Path) -> IdentityRing:
    ring = IdentityRing.load(path).rotated()
    ring.save(path)
    return ring


@dataclass(frozen=True)
class Claim:
    reviewer: str
    task: str
    role: str
    expires: int


def read_claim(token: object, keys: Mapping[str, str]) -> tuple[Claim | None, str]:
    """(the claim, "") when `token` is signed by one of `keys`, else (None, why not).

    Deterministic: no clock is read (see `claim_problem` for expiry)."""
    if not isinstance(token, str) or not token:
        return None, "the review carries no signed reviewer claim (token)"
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None, "the reviewer claim is not a token (too long or not ASCII)"
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as err:
        return None, f"the reviewer claim is not a token ({err})"
    kid = header.get("kid")
    public = keys.get(kid) if isinstance(kid, str) else None
    if public is None:
        return None, f"the reviewer claim is signed with key {str(kid)[:40]!r}, not a current one"
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public))
        body = jwt.api_jws.decode(token, key, algorithms=[ALGORITHM])
        claims: Any = json.loads(body)
    except (jwt.PyJWTError, ValueError) as err:
        return None, f"the reviewer claim's signature does not verify ({err})"
    try:
        claim = Claim(
            reviewer=str(claims["sub"]),
            task=str(claims["task"]),
            role=str(claims.get("role", "reviewer")),
            expires=int(claims["exp"]),
        )
    except (KeyError, TypeError, ValueError):
        return None, "the reviewer claim lacks sub, task or exp"
    if claims.get("iss") != ISSUER:
        return None, "the reviewer claim was not issued by labelfabric"
    return claim, ""


def claim_problem(
    token: object, keys: Mapping[str, str], *, reviewer: str, task: str, now: datetime
) -> str:
    """Why `token` does not let `reviewer` review an item of `task` at `now`, or ""."""
    claim, problem = read_claim(token, keys)
    if claim is None:
        return problem
    if claim.reviewer != reviewer:
        return f"the reviewer claim is for {claim.reviewer[:128]!r}, not {reviewer[:128]!r}"
    if claim.task not in (ANY_TASK, task):
        return f"the reviewer claim is for task {claim.task[:64]!r}, not {task!r}"
    if now.timestamp() >= claim.expires:
        expired = datetime.fromtimestamp(claim.expires, UTC).isoformat(timespec="seconds")
        return f"the reviewer claim expired at {expired}"
    return ""
