"""Objects sealed at rest: client-side envelope encryption of a byte stream, chunk by chunk.

A sealed object is self-describing, so any reader opens it from its bytes alone (metadata
is lost by copies; `download_fileobj` shows none):

    header = MAGIC | kid length (1 byte) | kid | chunk size (4 bytes) | wrap nonce (12)
             | wrapped data key (32 + 16)
    frames = AES-256-GCM(data key, nonce = chunk index (11 bytes) | final flag (1 byte),
                         chunk, associated data = header), one per `chunk` bytes of input

Each object gets a fresh random 256-bit data key, wrapped by AES-GCM under a key of the
payload key ring with the key id as associated data; the data key is never reused, so the
counter nonce is unique. The index and the final flag in each nonce make a reordered,
dropped, truncated or extended stream fail authentication (the STREAM construction), and
the header as associated data binds every frame to its key id and wrapped key. Memory is
two frames, whatever the size.

What is stored in clear is the header only; a plaintext object (written before sealing or
with it off) has no MAGIC (JSON lines start with ``{``) and passes through `unseal` as is.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Protocol

SCHEME = "lf-seal-v1/aes-256-gcm-stream"
MAGIC = b"\x89LFSEAL\x01"  # 0x89: no JSON text, no UTF-8 text starts with it
CHUNK = 1 << 20
MAX_CHUNK = 64 << 20  # a header asking for more is refused, not allocated
TAG, NONCE, KEY = 16, 12, 32  # bytes: GCM tag, GCM nonce, AES-256 key
WRAP_AAD = b"labelfabric sealed object key:"


class SealError(ValueError):
    """A sealed object that cannot be opened: malformed, altered or truncated."""


class MissingKey(SealError):
    """A sealed object whose key id the key ring does not hold."""


class Sink(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class Sha256Sink:
    """A `Sink` that keeps only the sha256 of what it is given (re-hashing a stream)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: bytes, /) -> int:
        self.digest.update(data)
        return len(data)


class Ring(Protocol):
    """A key ring (worker/codec.py's `KeyRing`): the active key id and every key by id."""

    @property
    def active(self) -> str: ...

    @property
    def keys(self) -> Mapping[str, bytes]: ...


@dataclass(frozen=True)
class Sealed:
    """What `seal` wrote: the key id, the wrapped data key, the sealed bytes' sha256 and size."""

    key_id: str
    wrapped_key: bytes
    sealed_sha256: str
    sealed_size: int
    scheme: str = SCHEME

    def metadata(self) -> dict[str, str]:
        """S3 user metadata naming the scheme, the key id and the wrapped key."""
        return {
            "sealed-scheme": self.scheme,
            "sealed-key-id": self.key_id,
            "sealed-wrapped-key": base64.b64encode(self.wrapped_key).decode(),
            "sealed-sha256": self.sealed_sha256,
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> Sealed | None:
        if meta.get("sealed-scheme") != SCHEME:
            return None
        return cls(
            key_id=meta["sealed-key-id"],
            wrapped_key=base64.b64decode(meta["sealed-wrapped-key"]),
            sealed_sha256=meta["sealed-sha256"],
            sealed_size=-1,
        )

    def manifest(self) -> dict[str, str]:
        return {"scheme": self.scheme, "key_id": self.key_id, "sealed_sha256": self.sealed_sha256}


def _aead(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(NONCE - 1, "big") + (b"\x01" if final else b"\x00")


def _read(src: IO[bytes], n: int) -> bytes:
    """Up to `n` bytes, fewer only at the end (a network stream may return less per read)."""
    parts: list[bytes] = []
    while n > 0:
        part = src.read(n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def seal(src: IO[bytes], dst: Sink, *, key_id: str, kek: bytes, chunk: int = CHUNK) -> Sealed:
    """Write `src` (read to its end) to `dst` sealed under a fresh data key wrapped by `kek`."""
    kid = key_id.encode()
    if not 0 < len(kid) < 256 or len(kek) != KEY or not 0 < chunk <= MAX_CHUNK:
        raise ValueError("seal needs a key id of 1-255 bytes, a 256-bit key and a sane chunk")
    data_key, wrap_nonce = os.urandom(KEY), os.urandom(NONCE)
    wrapped = _aead(kek).encrypt(wrap_nonce, data_key, WRAP_AAD + kid)
    header = MAGIC + bytes([len(kid)]) + kid + struct.pack(">I", chunk) + wrap_nonce + wrapped
    aead, digest = _aead(data_key), hashlib.sha256(header)
    dst.write(header)
    size, index = len(header), 0
    block = _read(src, chunk)
    while True:
        after = _read(src, chunk) if len(block) == chunk else b""
        frame = aead.encrypt(_nonce(index, not after), block, header)
        dst.write(frame)
        digest.update(frame)
        size, index = size + len(frame), index + 1
        if not after:
            break
        block = after
    return Sealed(
        key_id=key_id, wrapped_key=wrapped, sealed_sha256=digest.hexdigest(), sealed_size=size
    )


def unseal(src: IO[bytes], dst: Sink, keys: Mapping[str, bytes]) -> str | None:
    """Write the plaintext of `src` to `dst`; the key id it was sealed with, or None for an
    object stored in clear (copied through unchanged). Only authenticated chunks are written;
    on `SealError` (`MissingKey`) what `dst` got so far is a prefix to discard."""
    start = _read(src, len(MAGIC))
    if start != MAGIC:
        dst.write(start)
        while block := src.read(CHUNK):
            dst.write(block)
        return None
    from cryptography.exceptions import InvalidTag

    kid_len = _read(src, 1)
    kid = _read(src, kid_len[0]) if kid_len else b""
    rest = _read(src, 4 + NONCE + KEY + TAG)
    if not kid or len(kid) != kid_len[0] or len(rest) != 4 + NONCE + KEY + TAG:
        raise SealError("sealed object: truncated header")
    (chunk,) = struct.unpack(">I", rest[:4])
    if not 0 < chunk <= MAX_CHUNK:
        raise SealError(f"sealed object: chunk size {chunk} out of range")
    key_id = kid.decode(errors="replace")
    kek = keys.get(key_id)
    if kek is None:
        raise MissingKey(f"sealed with key {key_id!r}, which the key ring does not hold")
    header = MAGIC + kid_len + kid + rest
    try:
        data_key = _aead(kek).decrypt(rest[4 : 4 + NONCE], rest[4 + NONCE :], WRAP_AAD + kid)
    except InvalidTag:
        raise SealError(
            f"sealed object: its data key fails authentication under {key_id!r}"
        ) from None
    aead, index = _aead(data_key), 0
    frame = _read(src, chunk + TAG)
    while True:
        after = _read(src, chunk + TAG) if len(frame) == chunk + TAG else b""
        try:
            dst.write(aead.decrypt(_nonce(index, not after), frame, header))
        except InvalidTag:
            raise SealError(
                f"sealed object: chunk {index} fails authentication (altered, reordered or "
                "truncated)"
            ) from None
        if not after:
            return key_id
        frame, index = after, index + 1
