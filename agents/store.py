"""The task files a worker reads: one `TaskStore` per process, shared by every activity.

Role: the single place a running worker turns a task name into a `TaskSpec`, with exactly
the checks and `TaskError`s of `agents.tasks.load_task`.

Invariants:
- Every call re-reads the task file's bytes (cheap) and hashes them; the parsed `TaskSpec` is
  reused only when the hash is the one it was parsed from, so an edited file is always seen
  and an unchanged one is parsed (its regexes compiled) once per worker.
- What a spec depends on besides its own bytes, its agents' seed files existing, is checked
  again on every call: a seed removed since is the same `TaskError` `load_task` gives.
- No awaits and no Temporal: safe to call from any coroutine; the cache is guarded by a lock,
  so threads may share a store too.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from agents.tasks import TaskSpec, parse_task, read_task_file, task_file, task_names

__all__ = ["TaskStore"]


class TaskStore:
    """The tasks under one folder (`<folder>/<name>.yaml`), each file version parsed once."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._cache: dict[str, tuple[str, TaskSpec]] = {}  # name -> (sha256, spec)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TaskStore({str(self.folder)!r})"

    def names(self) -> list[str]:
        """Names of the task files in the folder, valid or not (`get` each to find out)."""
        return task_names(self.folder)

    def get(self, name: str) -> TaskSpec:
        """Task `name`; a `TaskError` naming the file and field when it is unknown or invalid."""
        path = task_file(self.folder, name)
        data = read_task_file(path)
        sha256 = hashlib.sha256(data).hexdigest()
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached[0] == sha256 and _seeds_present(cached[1]):
            return cached[1]
        spec = parse_task(path, data)  # raises what load_task raises for these bytes
        with self._lock:
            self._cache[name] = (sha256, spec)
        return spec


def _seeds_present(spec: TaskSpec) -> bool:
    """Whether every seed file the spec's agents name still exists (checked at parse)."""
    return all(
        (spec.path.parent / str(agent.settings["seed"])).is_file()
        for agent in spec.agents
        if "seed" in agent.settings
    )
