"""The codec server (`labelfabric codec serve`) as a part of the stack: started by `up`
before Temporal, whose Web UI is pointed at it (``--ui-codec-endpoint``), and stopped by
`down` like the rest: ``logs/codec.log``, ``run/codec.pid``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from worker.settings import PROJECT_ROOT, Settings
from worker.stack.process import _http_answers, _Part


def ui_origins(settings: Settings) -> set[str]:
    port = settings.temporal_ui_port
    return {f"http://{settings.host}:{port}", f"http://localhost:{port}"}


def ui_endpoint(settings: Settings, token: str) -> str:
    """What the Web UI is started with: the codec server, the token in its path."""
    return f"{settings.codec_url}/t/{token}"


class _CodecServer(_Part):
    name = "codec"
    program = Path(sys.executable).name

    def ports(self) -> list[tuple[int, str]]:
        return [(self.settings.codec_port, "LABELFABRIC_CODEC_PORT")]

    def is_ours(self, cmdline: list[str]) -> bool:
        return cmdline[1:5] == ["-m", "worker", "codec", "serve"] and str(self.home) in cmdline

    def start(self) -> None:
        s = self.settings
        cmd = [sys.executable, "-m", "worker", "codec", "serve", "--home", str(self.home)]
        env = os.environ | {
            "LABELFABRIC_HOST": s.host,
            "LABELFABRIC_CODEC_PORT": str(s.codec_port),
            "LABELFABRIC_CODEC_KEYS": str(s.codec_keys_path),
            "LABELFABRIC_TEMPORAL_UI_PORT": str(s.temporal_ui_port),
            "LABELFABRIC_TEMPORAL_NAMESPACE": s.temporal_namespace,
            "LABELFABRIC_CODEC": "1" if s.codec else "0",
        }
        self.spawn(cmd, cwd=PROJECT_ROOT, env=env)

    def endpoints(self) -> dict[str, str]:
        return {"codec": self.settings.codec_url}

    def probe(self, endpoint: str) -> tuple[bool, str]:
        ok = _http_answers(f"{self.settings.codec_url}/health")
        return (True, "decodes for the token in secrets.json") if ok else (False, "not answering")
