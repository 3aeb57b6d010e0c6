"""The one way anything of ours connects to Temporal: workers, the CLI, the review page,
the codec server's tests. Every client gets the same data converter (checked decoding,
payload encryption with the state dir's key ring, encoded failure messages) and the same
transport settings (TLS, mTLS, API key), so nothing writes history another cannot read.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.service import TLSConfig

from activities.payloads import DATA_CONVERTER
from worker.settings import Settings


class TemporalUnreachable(Exception):
    """Temporal did not answer, or the settings to reach it are wrong; says which."""


def data_converter(settings: Settings) -> DataConverter:
    """The product's converter: encrypted payloads (when `settings.codec`); decoding always
    understands encrypted payloads when the ring is there, so turning encryption off never
    makes old histories unreadable."""
    from worker.codec import EncryptionCodec, KeyRingError

    path = settings.codec_keys_path
    if not settings.codec and not path.exists():
        return DATA_CONVERTER
    try:
        codec = EncryptionCodec(path, encrypt=settings.codec)
    except KeyRingError as err:
        raise TemporalUnreachable(str(err)) from None
    return dataclasses.replace(
        DATA_CONVERTER,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS from our settings or Temporal's own variables (as the `temporal` CLI reads them)."""
    env = os.environ

    def read(path: object, var: str) -> bytes | None:
        where = path or env.get(var)
        if not where:
            return None
        try:
            with open(str(where), "rb") as fh:
                return fh.read()
        except OSError as err:
            raise TemporalUnreachable(f"cannot read {var} ({where}): {err}") from None

    ca = read(settings.temporal_tls_ca, "TEMPORAL_TLS_SERVER_CA_CERT_PATH")
    cert = read(settings.temporal_tls_cert, "TEMPORAL_TLS_CLIENT_CERT_PATH")
    key = read(settings.temporal_tls_key, "TEMPORAL_TLS_CLIENT_KEY_PATH")
    if bool(cert) != bool(key):
        raise TemporalUnreachable("mTLS needs both a client certificate and its key")
    wanted = settings.temporal_tls or env.get("TEMPORAL_TLS", "").lower() in ("1", "true")
    if not (wanted or ca or cert or api_key(settings)):
        return False
    if not (ca or cert or settings.temporal_tls_server_name):
        return True  # the system's roots, e.g. Temporal Cloud with an API key
    return TLSConfig(
        server_root_ca_cert=ca,
        client_cert=cert,
        client_private_key=key,
        domain=settings.temporal_tls_server_name,
    )


def api_key(settings: Settings) -> str | None:
    return settings.temporal_api_key or os.environ.get("TEMPORAL_API_KEY") or None


async def connect(
    settings: Settings, *, interceptors: Sequence[Interceptor] = (), **kwargs: Any
) -> Client:
    """A client of `settings`' namespace; `TemporalUnreachable` names what went wrong."""
    converter = data_converter(settings)
    from worker.metrics import temporal_runtime

    # In a process that exports metrics, the SDK's own go with them (worker/metrics.py).
    kwargs.setdefault("runtime", temporal_runtime())
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=converter,
            interceptors=list(interceptors),
            tls=tls_config(settings),
            api_key=api_key(settings),
            **kwargs,
        )
    except TemporalUnreachable:
        raise
    except Exception as err:
        raise TemporalUnreachable(
            f"cannot reach Temporal at {settings.temporal_address} ({err})"
        ) from err
