"""`labelfabric codec serve`: Temporal's remote codec protocol over the payload key ring.

``POST /encode`` and ``POST /decode`` take and return ``{"payloads": [...]}`` (protobuf JSON
of `temporal.api.common.v1.Payloads`), as Temporal's Web UI and ``temporal --codec-endpoint``
expect (the same shape as samples-python's encryption codec server).

Only a token holder gets plaintext: the bearer token from the state dir's secrets, sent as
``Authorization: Bearer <token>`` (``temporal --codec-auth``) or, for the Web UI, which
sends no header of its own, as the path prefix ``/t/<token>`` of the endpoint `up` hands
the UI (``--ui-codec-endpoint``). Whoever can open that UI can therefore read payloads: it
listens on loopback only. CORS answers the UI's origin and nobody else's; request bodies
and payload counts are bounded; a payload that does not decrypt fails the request (400),
naming the key id, without taking the server down.
"""

from __future__ import annotations

import hmac
import logging

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.codec import EncryptionCodec, KeyRingError
from worker.settings import Settings
from worker.stack.codec import ui_origins

log = logging.getLogger("labelfabric.codec")

MAX_BODY = 8 * 1024 * 1024
MAX_PAYLOADS = 10_000


def make_app(settings: Settings, token: str) -> Starlette:
    codec = EncryptionCodec(settings.codec_keys_path, encrypt=settings.codec)
    origins = ui_origins(settings)
    expected = token.encode()

    def cors(request: Request, response: Response) -> Response:
        origin = request.headers.get("origin")
        if origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "content-type, x-namespace, authorization"
            )
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        return response

    def authorized(request: Request) -> bool:
        given = request.path_params.get("token")
        if given is None:
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(given.encode(), expected)

    async def preflight(request: Request) -> Response:
        return cors(request, Response(status_code=204))

    async def apply(request: Request, decode: bool) -> Response:
        if not authorized(request):
            return cors(request, JSONResponse({"error": "a valid codec token is needed"}, 401))
        namespace = request.headers.get("x-namespace")
        if namespace and namespace != settings.temporal_namespace:
            message = f"this codec serves namespace {settings.temporal_namespace!r} only"
            return cors(request, JSONResponse({"error": message}, 403))
        body = await _read_bounded(request)
        if body is None:
            return cors(request, JSONResponse({"error": f"body over {MAX_BODY} bytes"}, 413))
        from temporalio.api.common.v1 import Payloads

        try:
            payloads = json_format.Parse(body, Payloads())
        except json_format.ParseError as err:
            message = f"not a Payloads JSON: {str(err)[:200]}"
            return cors(request, JSONResponse({"error": message}, 400))
        if len(payloads.payloads) > MAX_PAYLOADS:
            message = f"over {MAX_PAYLOADS} payloads"
            return cors(request, JSONResponse({"error": message}, 413))
        try:
            fn = codec.decode if decode else codec.encode
            out = Payloads(payloads=await fn(list(payloads.payloads)))
        except (KeyRingError, ValueError) as err:
            return cors(request, JSONResponse({"error": str(err)[:300]}, 400))
        text = json_format.MessageToJson(out)
        return cors(request, Response(text, media_type="application/json"))

    async def encode(request: Request) -> Response:
        return await apply(request, decode=False)

    async def decode(request: Request) -> Response:
        return await apply(request, decode=True)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "active_key": codec.active})

    routes = []
    for prefix in ("", "/t/{token}"):
        routes += [
            Route(f"{prefix}/encode", encode, methods=["POST"]),
            Route(f"{prefix}/decode", decode, methods=["POST"]),
            Route(f"{prefix}/encode", preflight, methods=["OPTIONS"]),
            Route(f"{prefix}/decode", preflight, methods=["OPTIONS"]),
        ]
    routes.append(Route("/health", health))
    return Starlette(routes=routes)


async def _read_bounded(request: Request) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


READY_LINE = "codec server listening"


def serve(settings: Settings, token: str) -> None:
    import uvicorn

    app = make_app(settings, token)
    log.info("%s on %s", READY_LINE, settings.codec_url)
    print(f"{READY_LINE} on {settings.codec_url}", flush=True)  # noqa: T201 (the ready line)
    uvicorn.run(app, host=settings.host, port=settings.codec_port, log_level="warning")
