"""`labelfabric policy validate` in process: a broken rule is named with its file and rule,
and a policy without cases is refused (no servers)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import cli
from worker.settings import PROJECT_ROOT, Settings


def test_validate_names_file_rule_and_position(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    text = (PROJECT_ROOT / "policy_rules" / "route_default" / "v2.yaml").read_text()
    (folder / "v1.yaml").write_text(
        text.replace("id: route_default", "id: bad")
        .replace("version: 2", "version: 1")
        .replace("ensemble.agreement < params.min_agreement", "ensemble.agreemnt < 1")
    )
    settings = Settings(policies_dir=tmp_path)
    out = cli(settings, "policy", "validate", str(folder))
    assert out.returncode == 1
    assert "v1.yaml" in out.stdout and "agents_disagree" in out.stdout and "agreemnt" in out.stdout
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "v1.yaml").write_text(
        text.replace("id: route_default", "id: bad").replace("version: 2", "version: 1")
    )
    no_cases = cli(settings, "policy", "validate", str(folder))
    assert (
        no_cases.returncode == 1 and "a policy without cases cannot be activated" in no_cases.stdout
    )
