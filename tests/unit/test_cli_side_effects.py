"""Side effects that stay put and results that do not over-promise (issue 16, items 5 and 8),
without servers: an export of nothing writes nothing, an empty snapshot is not training-ready
(and rolls nothing back), eval's calibrated versions go to a folder of their own, and a
worker's policy store reads them after the released ones."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import pytest

from formats import snapshot_files
from formats.export import FORMATS, ExportError, export
from policy_rules.engine import Policy
from policy_rules.gates import SnapshotMetrics, verdict
from policy_rules.store import PolicyStore
from policy_rules.versions import with_params
from tests.unit.test_calibrate import copy_v1
from worker.settings import PROJECT_ROOT

ROWS = [
    {"id": f"{i:064x}", "text": f"text {i}", "label": "positive", "label_source": "agent",
     "job_id": "label:d:j", "split": None}
    for i in range(5)
]  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_of_no_items_is_refused_and_writes_nothing(tmp_path: Path, fmt: str) -> None:
    raw = b"".join(snapshot_files.encode(r) for r in ROWS)
    out = tmp_path / "train.out"
    with pytest.raises(ExportError, match=r"no items in split 'train' of this version \(5 in all"):
        export(io.BytesIO(raw), expected_sha256=hashlib.sha256(raw).hexdigest(), fmt=fmt,
               out=out, split="train", allow_empty=False)  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    out.write_text("kept")
    with pytest.raises(ExportError):
        export(io.BytesIO(raw), expected_sha256=hashlib.sha256(raw).hexdigest(), fmt=fmt,
               out=out, split="train", allow_empty=False)  # fmt: skip
    assert out.read_text() == "kept" and list(tmp_path.iterdir()) == [out]


def test_an_empty_snapshot_is_not_training_ready_and_rolls_nothing_back() -> None:
    from activities.gates import rollback_on_failure

    gate = Policy.load(PROJECT_ROOT / "policy_rules", "quality_default")
    assert gate.ref.version >= 2
    judged = verdict(gate, None, SnapshotMetrics().inputs(None))
    assert (judged["outcome"], judged["rule"]) == ("fail", "empty")
    one = SnapshotMetrics()
    one.add("i", "positive", "agent", {})
    assert verdict(gate, None, one.inputs(None))["outcome"] == "pass"
    # Emptiness says nothing against the routing version: no catalog is even asked.
    rolled = asyncio.run(
        rollback_on_failure(None, job_id="label:d:j", subject="d@1", judged=judged, at=None)  # type: ignore[arg-type]
    )
    assert rolled is None


def test_eval_versions_go_to_their_own_policy_in_another_folder(tmp_path: Path) -> None:
    released = tmp_path / "released"
    copy_v1(released / "route_calibrated")
    before = sorted(p.name for p in (released / "route_calibrated").iterdir())
    local = tmp_path / "home" / "eval" / "policies"
    params = {"min_confidence": 0.8125}
    ref, created = with_params(released, "route_calibrated", params, note="eval",
                               into=local, as_id="route_calibrated_eval")  # fmt: skip
    assert (ref.id, ref.version, created) == ("route_calibrated_eval", 1, True)
    assert sorted(p.name for p in (released / "route_calibrated").iterdir()) == before
    assert sorted(p.name for p in (local / "route_calibrated_eval").iterdir()) == [
        "cases.yaml",
        "v1.yaml",
    ]
    again = with_params(released, "route_calibrated", params, note="eval", into=local,
                        as_id="route_calibrated_eval")  # fmt: skip
    assert again == (ref, False)
    other = with_params(released, "route_calibrated", {"min_confidence": 0.9}, note="eval",
                        into=local, as_id="route_calibrated_eval")  # fmt: skip
    assert (other[0].version, other[1]) == (2, True)

    # A worker reads released policies first, then these; an id is never mixed across folders.
    store = PolicyStore(released, local)
    assert store.resolve("route_calibrated_eval@2").params["min_confidence"] == 0.9
    assert store.resolve("route_calibrated").ref.version == 1
    assert store.locate("route_calibrated_eval").version == 2
