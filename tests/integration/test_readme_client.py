"""The README's "From your own service" snippet runs as written, against the test stack.

The snippet is taken from README.md, not copied here: it is run in a fresh interpreter whose
environment points at the test stack (LABELFABRIC_* as a worker's would be), with
LABELFABRIC_HOME a state dir of its own holding the small sample it labels and
LABELFABRIC_CODEC_KEYS the stack's key ring, as the snippet's comment says.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import settings_env, write_jsonl
from worker.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.slow


def readme_snippet() -> str:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("From your own service") :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "no python block after 'From your own service' in README.md"
    return found[1]


def test_the_snippet_is_a_whole_program() -> None:
    code = readme_snippet()
    compile(code, "README.md", "exec")
    assert "asyncio.run(main())" in code and "await" not in code.split("async def main")[0]


def test_the_readme_client_snippet_runs_against_the_stack(
    stack: Settings, cli_worker: None, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / "samples").mkdir(parents=True)
    # What `labelfabric sample` writes, cut to a few lines so the job stays small.
    write_jsonl(home / "samples" / "items.jsonl", [r["text"] for r in gold_rows[800:830]])
    env = settings_env(stack) | {
        "LABELFABRIC_HOME": str(home),
        "LABELFABRIC_CODEC_KEYS": str(stack.codec_keys_path),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", readme_snippet()],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OutcomeCounts(" in done.stdout
    version_id = done.stdout.split()[-1]
    assert re.fullmatch(r"[0-9a-f]{16,}", version_id), done.stdout
