"""A background ``labelfabric worker`` process for a state dir (``up --worker``), run and
stopped like the servers: ``logs/worker.log``, ``run/worker.pid``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from worker.settings import PROJECT_ROOT
from worker.stack.process import _Part


class _Worker(_Part):
    """A background `labelfabric worker` (from `up --worker`); stopped by `down` like the rest."""

    name = "worker"
    program = Path(sys.executable).name
    READY_LINE = b"worker serving task queue"
    started_at = 0  # log offset of this start, so an old "serving" line does not count

    def ports(self) -> list[tuple[int, str]]:
        return []

    def is_ours(self, cmdline: list[str]) -> bool:
        return cmdline[1:4] == ["-m", "worker", "worker"] and str(self.home) in cmdline

    def start(self) -> None:
        self.started_at = self.log_file.stat().st_size if self.log_file.exists() else 0
        cmd = [sys.executable, "-m", "worker", "worker", "--home", str(self.home)]
        # Started from the project folder, but it reads sources from where `up` was run.
        roots = os.pathsep.join(map(str, self.settings.allowed_source_roots))
        self.spawn(cmd, cwd=PROJECT_ROOT, env=os.environ | {"LABELFABRIC_SOURCE_ROOTS": roots})

    def endpoints(self) -> dict[str, str]:
        return {"worker": f"task queue {self.settings.task_queue}"}

    def probe(self, endpoint: str) -> tuple[bool, str]:
        with open(self.log_file, "rb") as fh:
            fh.seek(self.started_at)
            ready = self.READY_LINE in fh.read()
        return ready, f"log {self.log_file}"
