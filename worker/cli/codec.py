"""`labelfabric codec serve | rotate | ui`: the payload key ring and its codec server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli import group
from worker.cli.console import console, fail

app = group("Payload encryption: the key ring and the codec server for the Web UI and CLI.")


def _settings(home: Path | None):  # -> Settings
    from worker.settings import Settings

    return Settings(home=home) if home else Settings()


def _token(settings) -> str:  # noqa: ANN001
    from worker import secrets as stack_secrets

    token = stack_secrets.read(settings.home_dir).get("codec_token")
    if not token:
        raise fail(f"no codec token in {settings.home_dir}/secrets.json: run `labelfabric up`")
    return token


@app.command("serve")
def serve(
    home: Annotated[Path | None, typer.Option(help="State dir (default LABELFABRIC_HOME).")] = None,
) -> None:
    """Serve Temporal's codec protocol (/encode, /decode) on loopback (`up` starts it)."""
    import logging

    from worker.codec import KeyRingError
    from worker.codec_server import serve as run

    settings = _settings(home)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        run(settings, _token(settings))
    except KeyRingError as err:
        raise fail(str(err)) from err


@app.command("rotate")
def rotate() -> None:
    """Make a new payload key the one that encrypts; older keys still decrypt old histories."""
    from worker.codec import KeyRingError, rotate_ring

    settings = _settings(None)
    try:
        ring = rotate_ring(settings.codec_keys_path)
    except KeyRingError as err:
        raise fail(str(err)) from err
    console.print(
        f"payload key {ring.active} now encrypts ({len(ring.keys)} keys in "
        f"{settings.codec_keys_path}); running workers pick it up when they first meet it, "
        "and encrypt with it after a restart"
    )


@app.command("ui")
def ui() -> None:
    """How to see decoded payloads: the Web UI (wired by `up`) and the `temporal` CLI."""
    from worker.stack.codec import ui_endpoint

    settings = _settings(None)
    token = _token(settings)
    console.print(
        f"Web UI (decodes through {settings.codec_url}): {settings.temporal_ui_url}",
        soft_wrap=True,
    )
    console.print(
        "temporal CLI: temporal workflow show -w WORKFLOW_ID "
        f"--address {settings.temporal_address} --codec-endpoint {settings.codec_url} "
        f"--codec-auth 'Bearer {token}'",
        soft_wrap=True,
    )
    console.print(
        f"(endpoint with the token for a browser's codec setting: {ui_endpoint(settings, token)})",
        soft_wrap=True,
    )
