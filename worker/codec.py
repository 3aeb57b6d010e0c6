"""Payload encryption: what Temporal stores of ours is AES-256-GCM ciphertext.

Every client and worker (``worker.main.connect``) encodes payloads (workflow inputs and
results, activity arguments, signals, updates, queries, memos) with `EncryptionCodec`, and
failure messages and stack traces travel as encoded attributes, so history, visibility and
the Web UI hold no rationale, note, gold label or roster in clear. Search attributes are not
payloads: `Dataset`, `Job` and `ReviewState` (and, for one release, the released `LabelDataset`
and `LabelJob`) stay readable, which is what lets `temporal workflow list --query` and the
UI's filters work.

The key ring (``LABELFABRIC_CODEC_KEYS``, default ``{home}/codec_keys.json``, 0600, made by
`labelfabric up`) holds every key ever used; the active one encrypts, any of them decrypts,
and each payload names its key id in metadata. `labelfabric codec rotate` adds a key and
makes it active: histories written before stay readable. A process that meets a key id it
does not know re-reads the ring once, so a rotation needs no restart of running workers.

Format, as Temporal's encryption sample (so its Go/TypeScript codec servers interoperate):
metadata ``encoding: binary/encrypted``, ``encryption-key-id: <id>``; data = 12-byte nonce
+ AES-GCM(serialized Payload), with the key id as associated data (a payload cannot be
moved to another key's id). Payloads of at least `COMPRESS_MIN` bytes are zlib-compressed
first when that saves space (metadata ``compression: zlib``).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
COMPRESSION = "compression"
COMPRESS_MIN = 1024
NONCE = 12
RING_VERSION = 1


class KeyRingError(Exception):
    """The key ring is missing, unreadable or malformed, or lacks a payload's key."""


@dataclass(frozen=True)
class KeyRing:
    """Key ids to 32-byte AES keys, and which one encrypts."""

    active: str
    keys: dict[str, bytes]

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise KeyRingError(
                f"no payload key ring at {path}: `labelfabric up` makes one for its state dir; "
                "elsewhere set LABELFABRIC_CODEC_KEYS to the stack's codec_keys.json"
            ) from None
        except (OSError, ValueError) as err:
            raise KeyRingError(f"payload key ring {path} is unreadable: {err}") from None
        try:
            keys = {str(k): base64.b64decode(v, validate=True) for k, v in raw["keys"].items()}
            active = str(raw["active"])
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise KeyRingError(f"payload key ring {path} is malformed ({err})") from None
        if active not in keys or any(len(k) != 32 for k in keys.values()):
            raise KeyRingError(f"payload key ring {path}: the active key is missing or not 256-bit")
        return cls(active=active, keys=keys)

    def save(self, path: Path) -> None:
        body = {
            "version": RING_VERSION,
            "active": self.active,
            "keys": {k: base64.b64encode(v).decode() for k, v in self.keys.items()},
        }
        write_private(path, json.dumps(body, indent=1))

    def rotated(self) -> KeyRing:
        kid = new_key_id(self.keys)
        return KeyRing(active=kid, keys={**self.keys, kid: secrets.token_bytes(32)})


def new_key_id(taken: Iterable[str]) -> str:
    taken = set(taken)
    while True:
        kid = f"k{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}"
        if kid not in taken:
            return kid


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def ensure_ring(path: Path) -> KeyRing:
    """The ring at `path`, made (one fresh key, 0600) when there is none."""
    if path.exists():
        return KeyRing.load(path)
    ring = KeyRing(active="", keys={}).rotated()
    ring.save(path)
    return ring


def rotate_ring(path: Path) -> KeyRing:
    ring = KeyRing.load(path).rotated()
    ring.save(path)
    return ring


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each serialized payload, keyed by the ring at `path`."""

    def __init__(self, path: Path, *, encrypt: bool = True, compress_min: int = COMPRESS_MIN):
        super().__init__()
        self.path = path
        self.encrypt = encrypt
        self.compress_min = compress_min
        self._lock = threading.Lock()
        self._ring = KeyRing.load(path)
        self._aead: dict[str, object] = {}

    @property
    def active(self) -> str:
        return self._ring.active

    def _cipher(self, kid: str):  # -> AESGCM
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        cipher = self._aead.get(kid)
        if cipher is None:
            key = self._ring.keys.get(kid)
            if key is None:
                with self._lock:  # rotated since we loaded: read the ring once more
                    self._ring = KeyRing.load(self.path)
                key = self._ring.keys.get(kid)
            if key is None:
                raise KeyRingError(
                    f"payload key {kid!r} is not in the key ring {self.path}: this history "
                    "was written with a key this ring never held"
                )
            cipher = self._aead[kid] = AESGCM(key)
        return cipher

    def encode_one(self, payload: Payload) -> Payload:
        if not self.encrypt:
            return payload
        kid = self._ring.active
        data = payload.SerializeToString()
        metadata = {"encoding": ENCODING, KEY_ID: kid.encode()}
        if len(data) >= self.compress_min:
            packed = zlib.compress(data, 6)
            if len(packed) < len(data):
                data, metadata[COMPRESSION] = packed, b"zlib"
        nonce = os.urandom(NONCE)
        sealed = self._cipher(kid).encrypt(nonce, data, kid.encode())  # type: ignore[attr-defined]
        return Payload(metadata=metadata, data=nonce + sealed)

    def decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding", b"") != ENCODING:
            return payload  # written before encryption was on, or by another client
        from cryptography.exceptions import InvalidTag

        kid = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        try:
            data = self._cipher(
                kid
            ).decrypt(  # type: ignore[attr-defined]
                payload.data[:NONCE], payload.data[NONCE:], kid.encode()
            )
        except InvalidTag:
            raise KeyRingError(f"payload under key {kid!r} fails authentication") from None
        if payload.metadata.get(COMPRESSION) == b"zlib":
            data = zlib.decompress(data)
        return Payload.FromString(data)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decode_one(p) for p in payloads]
