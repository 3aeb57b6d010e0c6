"""A process's metrics export (worker/metrics.py), in a fresh interpreter each (the
MeterProvider is set once per process): a long CLI command serves and records its duration
only when asked, `start` is idempotent, a port already taken is logged and not fatal, and
the Temporal runtime that meters the SDK exists once metrics are on."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

from worker.settings import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_long_command_exports_only_when_asked() -> None:
    out = run(
        """
        from worker import metrics
        from worker.settings import Settings
        with metrics.command(Settings(), "job start --wait"):
            pass
        print("state", metrics.current())
        """
    )
    assert "state None" in out  # nothing asked: nothing set up, every instrument a no-op

    port = free_port()
    out = run(
        f"""
        import urllib.request
        from worker import metrics
        from worker.settings import Settings
        s = Settings()
        with metrics.command(s, "review bot"):
            pass
        try:
            with metrics.command(s, "review bot"):
                raise SystemExit("refused")
        except SystemExit:
            pass
        assert metrics.temporal_runtime() is not None
        again = metrics.start("other", prometheus=True, port={port} + 1)
        assert again is metrics.current() and again.service == "labelfabric-cli"
        body = urllib.request.urlopen("http://127.0.0.1:{port}/metrics").read().decode()
        assert body.count("target_info{{") == 1, "one collection per scrape"
        print("\\n".join(x for x in body.splitlines() if "cli_command" in x and "_count" in x))
        """,
        LABELFABRIC_CLI_METRICS_PORT=str(port),
    )
    assert 'command="review bot",otel_scope_name' in out
    counts = {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in out.splitlines()
        if line.startswith("labelfabric_cli_command_duration_seconds_count")
    }
    assert counts == {"ok": 1.0, "error": 1.0}


def test_a_taken_port_is_logged_not_fatal() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run(
            f"""
            import logging
            logging.basicConfig(level=logging.INFO)
            from worker import metrics
            state = metrics.start("labelfabric-worker", prometheus=True, port={port})
            print("served", state.port)
            """
        )
    assert "served None" in out
    assert f"port {port} on 127.0.0.1 is not free" in out and "LABELFABRIC_METRICS_PORT" in out
