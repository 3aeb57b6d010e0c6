"""The policy files a worker reads: one `PolicyStore` per process, shared by every activity.

Role: the single place a running worker turns a policy ref into a `Policy`. Resolution is
the loader's (`<id>` is the highest version on disk, `<id>@<version>` that version; which
version is *active* is the catalog's business and stays with the callers).

Invariants:
- Every call re-reads the version file's bytes (cheap) and hashes them; the parsed and
  compiled `Policy` is reused only when the hash is the one it was parsed from (cache key
  `(id, version, sha256)`). A file edited on disk is therefore always seen, and a released
  version is compiled once per worker.
- `pinned` refuses bytes other than the ones a job pinned (`PinnedPolicyChanged`), after the
  file has loaded: a file that no longer parses is a `PolicyError` first.
- No awaits and no Temporal: safe to call from any coroutine; the cache is guarded by a lock,
  so threads (an `asyncio.to_thread` caller) may share a store too.
- A store may read more than one folder (`PolicyStore(released, local)`): a policy id is
  taken whole from the first folder that has it (`folder_of`), never mixed across folders.
  The worker's second folder is the state dir's `eval/policies` (`labelfabric eval`).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Protocol

from policy_rules.loader import locate, parse_policy, read_file
from policy_rules.model import Policy, PolicyError, PolicyRef

__all__ = ["PinnedPolicyChanged", "Pin", "PolicyStore", "check_pin", "folder_of"]


def folder_of(folders: tuple[Path, ...] | list[Path], ref: str) -> Path:
    """The first of `folders` holding policy `ref`'s id (the first folder when none does,
    so an unknown id is reported against it)."""
    policy_id = ref.partition("@")[0]
    for folder in folders:
        if policy_id and any(Path(folder, policy_id).glob("v*.yaml")):
            return Path(folder)
    return Path(folders[0])


class Pin(Protocol):
    """What a job pins of its policy: `PolicyRef`, or an activity payload of the same shape."""

    @property
    def id(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def sha256(self) -> str: ...


class PinnedPolicyChanged(PolicyError):
    """A pinned policy version whose file no longer has the bytes the job pinned."""

    def __init__(self, policy: Policy, pinned_sha256: str) -> None:
        self.ref = str(policy.ref)
        self.path = policy.path
        self.loaded_sha256 = policy.ref.sha256
        self.pinned_sha256 = pinned_sha256
        super().__init__(
            f"policy {self.ref} changed on disk since the job started (sha256 "
            f"{self.loaded_sha256[:12]} != {pinned_sha256[:12]}): released versions are "
            "immutable; add a new version instead"
        )


def check_pin(policy: Policy, pin: Pin) -> None:
    """Refuse `policy` (the version `pin` names) unless its bytes are the pinned ones:
    routing and review rules come from the same released version, or not at all."""
    if policy.ref.sha256 != pin.sha256:
        raise PinnedPolicyChanged(policy, pin.sha256)


class PolicyStore:
    """The policies under one folder (`<folder>/<id>/v<N>.yaml`), each version compiled once."""

    def __init__(self, folder: Path, *more: Path) -> None:
        self.folder = Path(folder)
        self.folders = (self.folder, *(Path(f) for f in more if Path(f) != self.folder))
        self._cache: dict[tuple[str, int, str], Policy] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PolicyStore({str(self.folder)!r})"

    def locate(self, ref: str) -> PolicyRef:
        """The exact file version `<id>` or `<id>@<version>` names now (its bytes' sha256),
        without parsing it; `PolicyError` when there is no such version."""
        path, policy_id, version = locate(folder_of(self.folders, ref), ref)
        return PolicyRef(
            id=policy_id, version=version, sha256=hashlib.sha256(read_file(path)).hexdigest()
        )

    def resolve(self, ref: str) -> Policy:
        """`<id>` (highest version) or `<id>@<version>`, compiled; `PolicyError` naming the file
        (and line:column, rule id) when it is unknown or invalid."""
        path, policy_id, version = locate(folder_of(self.folders, ref), ref)
        # Hash and parse the same bytes: the ref never describes a file other than the one
        # that was compiled, even if it is edited meanwhile.
        data = read_file(path)
        key = (policy_id, version, hashlib.sha256(data).hexdigest())
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        policy = parse_policy(path, data, PolicyRef(id=policy_id, version=version, sha256=key[2]))
        with self._lock:
            # One entry per version file: bytes it no longer has are dropped, so a file
            # rewritten many times does not grow the cache.
            for stale in [k for k in self._cache if k[:2] == key[:2]]:
                del self._cache[stale]
            self._cache[key] = policy
        return policy

    def pinned(self, pin: Pin) -> Policy:
        """The version `pin` names, refused (`PinnedPolicyChanged`, a `PolicyError`) when its
        file's bytes are not the pinned ones; a `PolicyError` when it does not load."""
        policy = self.resolve(f"{pin.id}@{pin.version}")
        check_pin(policy, pin)
        return policy
