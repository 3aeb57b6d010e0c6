"""Payload encryption (worker/codec.py) and the codec server (worker/codec_server.py)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from google.protobuf import json_format
from starlette.testclient import TestClient
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from activities.payloads import DATA_CONVERTER, ReviewSubmission
from worker.codec import (
    COMPRESS_MIN,
    EncryptionCodec,
    KeyRing,
    KeyRingError,
    ensure_ring,
    rotate_ring,
)
from worker.codec_server import make_app
from worker.settings import Settings

NOTE = "the rationale quotes: a dazzling, tender film"


def _ring(tmp_path: Path) -> Path:
    ensure_ring(tmp_path / "keys.json")
    return tmp_path / "keys.json"


def plain(value: object) -> Payload:
    return DATA_CONVERTER.payload_converter.to_payload(value)


async def test_payloads_round_trip_and_hold_nothing_in_clear(tmp_path: Path) -> None:
    codec = EncryptionCodec(_ring(tmp_path))
    sub = ReviewSubmission(reviewer="alice", label="positive", note=NOTE)
    [sealed] = await codec.encode([plain(sub)])
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    assert sealed.metadata["encryption-key-id"] == codec.active.encode()
    assert b"alice" not in sealed.SerializeToString() and b"dazzling" not in sealed.data
    [opened] = await codec.decode([sealed])
    assert DATA_CONVERTER.payload_converter.from_payload(opened, ReviewSubmission) == sub
    # Two encodings of one value differ (a fresh nonce each time).
    [again] = await codec.encode([plain(sub)])
    assert again.data != sealed.data


async def test_large_payloads_are_compressed_before_encryption(tmp_path: Path) -> None:
    codec = EncryptionCodec(_ring(tmp_path))
    big = plain("word " * COMPRESS_MIN)
    [sealed] = await codec.encode([big])
    assert sealed.metadata["compression"] == b"zlib"
    assert len(sealed.data) < len(big.data) / 4
    assert (await codec.decode([sealed]))[0] == big


async def test_rotation_keeps_old_payloads_readable_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ensure_ring(path)
    writer = EncryptionCodec(path)
    reader = EncryptionCodec(path)  # a running worker that loaded the ring before rotation
    [old] = await writer.encode([plain("before")])
    rotate_ring(path)
    rotated = EncryptionCodec(path)
    assert rotated.active != writer.active
    [new] = await rotated.encode([plain("after")])
    # The old reader meets the new key id, re-reads the ring once, and decodes both.
    assert [p.data for p in await reader.decode([old, new])] == [b'"before"', b'"after"']
    assert (await rotated.decode([old]))[0].data == b'"before"'


async def test_unencrypted_payloads_pass_and_bad_ones_fail_naming_the_key(tmp_path: Path) -> None:
    codec = EncryptionCodec(_ring(tmp_path))
    clear = plain("written before encryption was on")
    assert (await codec.decode([clear]))[0] == clear
    [sealed] = await codec.encode([plain("x")])
    tampered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + b"\x00")
    with pytest.raises(KeyRingError, match="fails authentication"):
        await codec.decode([tampered])
    moved = Payload(metadata={**sealed.metadata, "encryption-key-id": b"k-other"}, data=sealed.data)
    with pytest.raises(KeyRingError, match="'k-other' is not in the key ring"):
        await codec.decode([moved])


def test_the_ring_is_private_and_malformed_rings_are_named(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = ensure_ring(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(ring.keys[ring.active]) == 32
    assert ensure_ring(path) == ring  # never replaced
    with pytest.raises(KeyRingError, match="no payload key ring"):
        KeyRing.load(tmp_path / "missing.json")
    path.write_text(json.dumps({"active": "a", "keys": {"a": base64.b64encode(b"short").decode()}}))
    with pytest.raises(KeyRingError, match="not 256-bit"):
        KeyRing.load(path)
    path.write_text("{")
    with pytest.raises(KeyRingError, match="unreadable"):
        KeyRing.load(path)


# --- the codec server ------------------------------------------------------------------------

TOKEN = "t" * 43


@pytest.fixture
def server(tmp_path: Path) -> tuple[TestClient, Settings, EncryptionCodec]:
    settings = Settings(home=tmp_path, temporal_ui_port=18233, codec_port=17246)
    ensure_ring(settings.codec_keys_path)
    return (
        TestClient(make_app(settings, TOKEN)),
        settings,
        EncryptionCodec(settings.codec_keys_path),
    )


def body(payloads: list[Payload]) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


async def test_the_codec_server_decodes_for_a_token_holder_only(server) -> None:  # noqa: ANN001
    http, _, codec = server
    [sealed] = await codec.encode([plain({"note": NOTE})])
    sent = body([sealed])
    assert NOTE not in sent
    for headers, path in (
        ({"Authorization": f"Bearer {TOKEN}"}, "/decode"),
        ({}, f"/t/{TOKEN}/decode"),
    ):
        answer = http.post(
            path, content=sent, headers=headers | {"content-type": "application/json"}
        )
        assert answer.status_code == 200, answer.text
        decoded = json_format.Parse(answer.text, Payloads()).payloads[0]
        assert json.loads(decoded.data) == {"note": NOTE}
    for headers, path in (
        ({}, "/decode"),
        ({"Authorization": "Bearer wrong"}, "/decode"),
        ({"Authorization": f"Basic {TOKEN}"}, "/decode"),
        ({}, "/t/wrong/decode"),
    ):
        refused = http.post(path, content=sent, headers=headers)
        assert refused.status_code == 401 and NOTE not in refused.text


async def test_the_codec_server_encodes_what_the_workers_decode(server) -> None:  # noqa: ANN001
    http, _, codec = server
    answer = http.post("/encode", content=body([plain("from the CLI")]),
                       headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    [sealed] = json_format.Parse(answer.text, Payloads()).payloads
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    assert (await codec.decode([sealed]))[0].data == b'"from the CLI"'


def test_cors_answers_the_web_ui_origin_only(server) -> None:  # noqa: ANN001
    http, settings, _ = server
    ui = f"http://127.0.0.1:{settings.temporal_ui_port}"
    ok = http.options(f"/t/{TOKEN}/decode", headers={"Origin": ui})
    assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == ui
    assert "x-namespace" in ok.headers["access-control-allow-headers"]
    other = http.options("/decode", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_hostile_bodies_are_refused_without_harm(server) -> None:  # noqa: ANN001
    http, _, _ = server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert http.post("/decode", content=b"\x00{not json", headers=auth).status_code == 400
    fake = Payload(metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"nope"},
                   data=os.urandom(40))  # fmt: skip
    bad = http.post("/decode", content=body([fake]), headers=auth)
    assert bad.status_code == 400 and "nope" in bad.json()["error"]
    huge = http.post("/decode", content=b"[" * (9 * 1024 * 1024), headers=auth)
    assert huge.status_code == 413
    other_ns = http.post("/decode", content=body([]), headers=auth | {"X-Namespace": "prod"})
    assert other_ns.status_code == 403
    assert http.get("/health").json()["ok"] is True


def test_failures_travel_encoded(tmp_path: Path) -> None:
    from worker.temporal_client import data_converter

    settings = Settings(home=tmp_path)
    ensure_ring(settings.codec_keys_path)
    converter: DataConverter = data_converter(settings)
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
