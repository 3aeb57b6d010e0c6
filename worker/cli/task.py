"""`labelfabric task list`: the labeling tasks (tasks/*.yaml)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from worker.cli import group
from worker.cli.tables import JSON_HELP

app = group("Labeling tasks (tasks/*.yaml).")


@app.command("list")
def task_list(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """List the known tasks with their labels and agents."""
    from agents.tasks import TaskError, load_task, task_names
    from worker.cli.tables import Col, emit_json, show
    from worker.settings import Settings

    tasks_dir = Settings().tasks_dir
    rows: list[dict[str, Any]] = []
    for name in task_names(tasks_dir):
        try:
            t = load_task(tasks_dir, name)
        except TaskError as err:
            rows.append({"task": name, "error": str(err), "labels": [], "text_field": None,
                         "agents": [], "gate": None, "file": None})  # fmt: skip
            continue
        rows.append({"task": t.name, "error": None, "labels": list(t.labels),
                     "text_field": t.text_field,
                     "agents": [{"name": a.name, "kind": a.kind} for a in t.agents],
                     "gate": t.gate or None, "file": str(t.path)})  # fmt: skip
    if as_json:
        emit_json({"tasks_dir": str(tasks_dir), "tasks": rows})
        return
    cols = [
        Col("task"),
        Col("labels", wrap=True, fmt=lambda v: ", ".join(v)),
        Col("text_field", "text field"),
        Col("agents", wrap=True, fmt=lambda v: ", ".join(f"{a['name']} ({a['kind']})" for a in v)),
        Col("file", wrap=True, fmt=lambda v: v or ""),
    ]
    show("tasks", cols, [r if not r["error"] else {**r, "file": f"invalid: {r['error']}"}
                         for r in rows])  # fmt: skip
