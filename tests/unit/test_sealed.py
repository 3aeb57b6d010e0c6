"""Snapshot objects sealed at rest (formats/sealed.py): chunked AES-256-GCM envelopes."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile

import pytest

from formats import sealed

KID = "k20250101-abcdef"
KEK = os.urandom(32)
KEYS = {KID: KEK, "k-old": os.urandom(32)}
TEXT = b'{"id": "ab", "label": "positive", "text": "a dazzling, tender film"}\n'


def seal(data: bytes, chunk: int = sealed.CHUNK) -> tuple[bytes, sealed.Sealed]:
    out = io.BytesIO()
    done = sealed.seal(io.BytesIO(data), out, key_id=KID, kek=KEK, chunk=chunk)
    return out.getvalue(), done


def unseal(raw: bytes, keys: dict[str, bytes] = KEYS) -> tuple[bytes, str | None]:
    out = io.BytesIO()
    kid = sealed.unseal(io.BytesIO(raw), out, keys)
    return out.getvalue(), kid


class Trickle(io.RawIOBase):
    """A stream that returns at most 7 bytes per read, as a network body may."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self.data.read(min(n, 7) if n >= 0 else 7)


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 1000])
def test_round_trip_at_every_chunk_boundary(size: int) -> None:
    data = (TEXT * (size // len(TEXT) + 1))[:size]
    raw, done = seal(data, chunk=64)
    assert raw.startswith(sealed.MAGIC) and done.key_id == KID
    assert done.sealed_sha256 == hashlib.sha256(raw).hexdigest() and done.sealed_size == len(raw)
    assert unseal(raw) == (data, KID)
    frames = max(1, -(-size // 64))
    assert len(raw) - size == len(raw) - len(data) == 8 + 1 + len(KID) + 4 + 12 + 48 + 16 * frames


def test_nothing_in_clear_and_every_object_has_its_own_key() -> None:
    raw, done = seal(TEXT * 100)
    again, _ = seal(TEXT * 100)
    assert b"dazzling" not in raw and b"positive" not in raw
    assert raw != again  # a fresh data key (and wrapped key) per object
    meta = done.metadata()
    assert meta["sealed-key-id"] == KID and meta["sealed-scheme"] == sealed.SCHEME
    assert sealed.Sealed.from_metadata(meta) == sealed.Sealed(
        key_id=KID, wrapped_key=done.wrapped_key, sealed_sha256=done.sealed_sha256, sealed_size=-1
    )
    assert sealed.Sealed.from_metadata({"labelfabric-job": "j"}) is None
    assert done.manifest() == {
        "scheme": sealed.SCHEME,
        "key_id": KID,
        "sealed_sha256": done.sealed_sha256,
    }


def test_a_changed_byte_in_any_chunk_or_the_header_is_refused() -> None:
    data = os.urandom(64 * 5 + 10)
    raw, _ = seal(data, chunk=64)
    header = len(raw) - len(data) - 16 * 6
    for index in range(6):
        at = header + index * (64 + 16) + 3
        bad = bytearray(raw)
        bad[at] ^= 1
        with pytest.raises(sealed.SealError, match=f"chunk {index} fails authentication"):
            unseal(bytes(bad))
    for at in (len(sealed.MAGIC) + 2, header - 20, header - 1):  # kid, wrap nonce, wrapped key
        bad = bytearray(raw)
        bad[at] ^= 1
        with pytest.raises(sealed.SealError):
            unseal(bytes(bad))


def test_reordered_truncated_or_extended_streams_are_refused() -> None:
    data = os.urandom(64 * 4)
    raw, _ = seal(data, chunk=64)
    header = len(raw) - len(data) - 16 * 4
    frames = [raw[header + i * 80 : header + (i + 1) * 80] for i in range(4)]
    swapped = raw[:header] + frames[1] + frames[0] + frames[2] + frames[3]
    with pytest.raises(sealed.SealError, match="chunk 0"):
        unseal(swapped)
    # Cut at a frame boundary: the last frame left was not sealed as the final one.
    with pytest.raises(sealed.SealError, match="chunk 2 fails"):
        unseal(raw[: header + 3 * 80])
    with pytest.raises(sealed.SealError, match="chunk 3 fails"):
        unseal(raw[:-1])
    with pytest.raises(sealed.SealError, match="chunk 3 fails"):
        unseal(raw + frames[3])
    with pytest.raises(sealed.SealError, match="truncated header"):
        unseal(raw[: header - 5])
    # A frame of another object sealed under the same kek does not fit either.
    other, _ = seal(data, chunk=64)
    with pytest.raises(sealed.SealError, match="chunk 1"):
        unseal(raw[: header + 80] + other[header + 80 : header + 160] + raw[header + 160 :])


def test_an_unknown_or_wrong_key_is_named() -> None:
    raw, _ = seal(TEXT)
    with pytest.raises(sealed.MissingKey, match=f"key {KID!r}, which the key ring does not"):
        unseal(raw, {"k-old": KEYS["k-old"]})
    with pytest.raises(sealed.SealError, match="data key fails authentication"):
        unseal(raw, {KID: os.urandom(32)})


def test_objects_stored_in_clear_pass_through() -> None:
    for data in (b"", b"{", TEXT, TEXT * 50_000):
        assert unseal(data, {}) == (data, None)


def test_short_reads_from_a_network_body_are_fine() -> None:
    data = os.urandom(1000)
    out = io.BytesIO()
    sealed.seal(Trickle(data), out, key_id=KID, kek=KEK, chunk=64)  # type: ignore[arg-type]
    back = io.BytesIO()
    assert sealed.unseal(Trickle(out.getvalue()), back, KEYS) == KID  # type: ignore[arg-type]
    assert back.getvalue() == data


def test_bad_arguments_and_hostile_headers_are_refused() -> None:
    with pytest.raises(ValueError):
        sealed.seal(io.BytesIO(b""), io.BytesIO(), key_id=KID, kek=b"short")
    with pytest.raises(ValueError):
        sealed.seal(io.BytesIO(b""), io.BytesIO(), key_id="", kek=KEK)
    raw, _ = seal(TEXT)
    at = len(sealed.MAGIC) + 1 + len(KID)
    huge = raw[:at] + (1 << 31).to_bytes(4, "big") + raw[at + 4 :]
    with pytest.raises(sealed.SealError, match="chunk size"):
        unseal(huge)


def test_a_big_snapshot_streams_in_bounded_memory() -> None:
    """100 MiB of snapshot-like lines through files: sealed, opened, hashed, in a few chunks
    of memory (tracemalloc). Throughput: benchmarks/bench_sealed.py."""
    import tracemalloc

    line = TEXT.replace(b"ab", os.urandom(16).hex().encode())
    size = 100 << 20
    with tempfile.TemporaryFile() as src, tempfile.TemporaryFile() as mid:
        digest = hashlib.sha256()
        block = line * ((1 << 20) // len(line) + 1)
        while src.tell() < size:
            src.write(block)
            digest.update(block)
        total = src.tell()
        src.seek(0)
        tracemalloc.start()
        done = sealed.seal(src, mid, key_id=KID, kek=KEK)
        mid.seek(0)
        plain = sealed.Sha256Sink()
        assert sealed.unseal(mid, plain, KEYS) == KID
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert plain.digest.hexdigest() == digest.hexdigest()
        assert peak < 8 * sealed.CHUNK
        assert done.sealed_size - total < 200 + 16 * (total // sealed.CHUNK + 1)
