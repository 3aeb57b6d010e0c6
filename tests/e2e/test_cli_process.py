"""The real `labelfabric` executable in fresh processes: the entry point, its lazily loaded
command groups, and one job from start to summary. (Every other CLI test runs the commands
in process, tests/integration.)"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from tests.helpers import run_cli, settings_env, write_jsonl
from worker.cli import COMMANDS
from worker.settings import PROJECT_ROOT, Settings

EXE = Path(sys.executable).parent / "labelfabric"
HEAVY = ("temporalio", "sqlalchemy", "boto3", "numpy", "sklearn", "catalog", "activities")

_LOADED_BY_HELP = """
import sys
sys.argv = ["labelfabric", "--help"]
from worker.cli import app
try:
    app(prog_name="labelfabric")
except SystemExit:
    pass
print("LOADED", *sorted({m.split(".")[0] for m in sys.modules}))
"""


def test_help_lists_every_command_and_loads_none_of_the_heavy_libraries() -> None:
    out = subprocess.run([EXE, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert all(f"  {name} " in out.stdout for name in COMMANDS), out.stdout
    probe = subprocess.run(
        [sys.executable, "-c", _LOADED_BY_HELP],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    loaded = set(probe.stdout.split("LOADED", 1)[1].split())
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_an_unknown_command_exits_2_naming_it() -> None:
    out = subprocess.run([EXE, "lable"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "No such command 'lable'" in out.stderr


def test_job_start_wait_in_a_fresh_process(
    stack: Settings, cli_worker: object, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", [r["text"] for r in gold_rows[4000:4012]])
    dataset = f"proc{uuid.uuid4().hex[:6]}"
    args = ["job", "start", str(source), "--dataset", dataset, "--task", "sentiment", "--wait"]
    out = run_cli(stack, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{dataset}@1" in out.stdout and "items" in out.stdout
    listed = subprocess.run(
        [EXE, "dataset", "versions", dataset],
        env=settings_env(stack) | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0 and f"{dataset}" in listed.stdout, listed.stderr
