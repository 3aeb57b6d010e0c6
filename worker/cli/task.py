"""`labelfabric task list`: the labeling tasks (tasks/*.yaml)."""

from __future__ import annotations

from worker.cli import group
from worker.cli.console import console

app = group("Labeling tasks (tasks/*.yaml).")


@app.command("list")
def task_list() -> None:
    """List the known tasks with their labels and agents."""
    from rich.markup import escape
    from rich.table import Table

    from agents.tasks import TaskError, load_task, task_names
    from worker.settings import Settings

    table = Table(title="tasks")
    for col in ("task", "labels", "text field", "agents", "file"):
        table.add_column(col)
    tasks_dir = Settings().tasks_dir
    for name in task_names(tasks_dir):
        try:
            t = load_task(tasks_dir, name)
        except TaskError as err:
            table.add_row(name, "[red]invalid[/]", "", escape(str(err)), "")
            continue
        table.add_row(
            t.name,
            ", ".join(t.labels),
            t.text_field,
            ", ".join(f"{a.name} ({a.kind})" for a in t.agents),
            str(t.path),
        )
    console.print(table)
