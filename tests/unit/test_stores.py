"""PolicyStore and TaskStore: the one reader of policy and task files a worker builds at start.

Plain files in a temp dir, no servers: resolution, pinning, and the cache that parses a file
version once yet always sees a file edited on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agents.store import TaskStore
from agents.tasks import TaskError, load_task
from policy_rules.engine import Policy, PolicyError, PolicyRef
from policy_rules.store import PinnedPolicyChanged, PolicyStore, check_pin

POLICY = """\
id: {id}
version: {version}
description: test
inputs:
  ensemble.confidence: double
params:
  min_confidence: {threshold}
rules:
  - id: confident
    when: ensemble.confidence >= params.min_confidence
    outcome: auto_accept
default: {{outcome: human_review}}
"""

TASK = """\
name: {name}
description: test
labels: [positive, negative]
agents:
  - name: kw
    kind: rules
    rules:
      - {{label: positive, patterns: ["good"]}}
"""


def write_policy(root: Path, version: int, *, pid: str = "demo", threshold: float = 0.7) -> Path:
    folder = root / pid
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"v{version}.yaml"
    path.write_text(POLICY.format(id=pid, version=version, threshold=threshold))
    return path


def write_task(root: Path, name: str = "demo", text: str = TASK) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.yaml"
    path.write_text(text.format(name=name))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- PolicyStore ------------------------------------------------------------------------------


def test_resolve_gives_the_newest_version_or_the_one_named(tmp_path: Path) -> None:
    write_policy(tmp_path, 1, threshold=0.7)
    v2 = write_policy(tmp_path, 2, threshold=0.9)
    store = PolicyStore(tmp_path)

    newest = store.resolve("demo")
    assert newest.ref == PolicyRef(id="demo", version=2, sha256=sha(v2))
    assert newest.params["min_confidence"] == 0.9
    assert newest.path == v2
    first = store.resolve("demo@1")
    assert (first.ref.version, first.params["min_confidence"]) == (1, 0.7)
    # What the loader gives for the same ref, to the byte.
    assert store.resolve("demo@1").ref == Policy.load(tmp_path, "demo@1").ref
    assert store.locate("demo") == newest.ref  # hashed without parsing


def test_a_new_version_on_disk_is_the_newest_at_once(tmp_path: Path) -> None:
    write_policy(tmp_path, 1)
    store = PolicyStore(tmp_path)
    assert store.resolve("demo").ref.version == 1
    write_policy(tmp_path, 2)
    assert store.resolve("demo").ref.version == 2


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("nope", "unknown policy 'nope'"),
        ("demo@3", "policy 'demo' has no version 3; known versions: 1"),
        ("demo@x", "bad policy ref 'demo@x'"),
    ],
)
def test_an_unknown_policy_or_version_is_the_loaders_error(
    tmp_path: Path, ref: str, expected: str
) -> None:
    write_policy(tmp_path, 1)
    store = PolicyStore(tmp_path)
    with pytest.raises(PolicyError, match=expected) as info:
        store.resolve(ref)
    with pytest.raises(PolicyError) as direct:
        Policy.load(tmp_path, ref)
    assert str(info.value) == str(direct.value)
    with pytest.raises(PolicyError, match=expected):
        store.locate(ref)


def test_an_invalid_file_names_the_file_and_is_not_cached(tmp_path: Path) -> None:
    path = write_policy(tmp_path, 1)
    good = path.read_text()
    path.write_text(good.replace("outcome: auto_accept", "outcome: accept_it"))
    store = PolicyStore(tmp_path)
    with pytest.raises(PolicyError, match=rf"{path}:\d+:\d+: rule 'confident'"):
        store.resolve("demo@1")
    path.write_text(good)
    assert store.resolve("demo@1").rules[0].outcome == "auto_accept"


def test_an_unchanged_file_is_parsed_once(tmp_path: Path) -> None:
    write_policy(tmp_path, 1)
    store = PolicyStore(tmp_path)
    first = store.resolve("demo@1")
    assert store.resolve("demo@1") is first
    assert store.resolve("demo") is first  # the same version by another ref
    pin = first.ref
    assert store.pinned(pin) is first


def test_a_file_changed_on_disk_is_seen(tmp_path: Path) -> None:
    path = write_policy(tmp_path, 1, threshold=0.7)
    store = PolicyStore(tmp_path)
    before = store.resolve("demo@1")
    write_policy(tmp_path, 1, threshold=0.5)
    after = store.resolve("demo@1")
    assert after is not before
    assert after.ref.sha256 == sha(path) != before.ref.sha256
    assert after.params["min_confidence"] == 0.5
    assert store.locate("demo@1") == after.ref
    # Put back: the same bytes, the same policy as a fresh parse would give.
    write_policy(tmp_path, 1, threshold=0.7)
    assert store.resolve("demo@1").ref == before.ref


def test_pinned_refuses_other_bytes_naming_the_version_and_file(tmp_path: Path) -> None:
    path = write_policy(tmp_path, 1, threshold=0.7)
    store = PolicyStore(tmp_path)
    pin = store.resolve("demo@1").ref
    write_policy(tmp_path, 1, threshold=0.5)  # a released version edited in place
    with pytest.raises(PinnedPolicyChanged) as info:
        store.pinned(pin)
    err = info.value
    assert isinstance(err, PolicyError)  # callers that catch PolicyError still see it
    now = sha(path)
    # The message the activities have always given (their ApplicationError's message).
    assert str(err) == (
        f"policy demo@1 changed on disk since the job started (sha256 {now[:12]} != "
        f"{pin.sha256[:12]}): released versions are immutable; add a new version instead"
    )
    assert (err.ref, err.path, err.loaded_sha256, err.pinned_sha256) == (
        "demo@1",
        path,
        now,
        pin.sha256,
    )
    # The same check on a policy the caller already holds.
    with pytest.raises(PinnedPolicyChanged):
        check_pin(store.resolve("demo@1"), pin)
    write_policy(tmp_path, 1, threshold=0.7)  # restored: the pinned bytes again
    assert store.pinned(pin).ref == pin


def test_pinned_loads_before_it_compares(tmp_path: Path) -> None:
    """A pinned file that no longer parses is a PolicyError about the file, as before."""
    path = write_policy(tmp_path, 1)
    store = PolicyStore(tmp_path)
    pin = store.resolve("demo@1").ref
    path.write_text("id: [")
    with pytest.raises(PolicyError, match="not valid YAML") as info:
        store.pinned(pin)
    assert not isinstance(info.value, PinnedPolicyChanged)
    with pytest.raises(PolicyError, match="unknown policy 'gone'"):
        store.pinned(PolicyRef(id="gone", version=1, sha256=pin.sha256))


def test_the_cache_keeps_one_entry_per_version_file(tmp_path: Path) -> None:
    write_policy(tmp_path, 1)
    store = PolicyStore(tmp_path)
    for threshold in (0.1, 0.2, 0.3, 0.4):
        write_policy(tmp_path, 1, threshold=threshold)
        store.resolve("demo@1")
    assert len(store._cache) == 1


# --- TaskStore --------------------------------------------------------------------------------


def test_get_gives_what_load_task_gives(tmp_path: Path) -> None:
    write_task(tmp_path, "demo")
    write_task(tmp_path, "other")
    store = TaskStore(tmp_path)
    assert store.get("demo") == load_task(tmp_path, "demo")
    assert store.names() == ["demo", "other"]


@pytest.mark.parametrize("name", ["nope", "../demo", ""])
def test_an_unknown_task_is_load_tasks_error(tmp_path: Path, name: str) -> None:
    write_task(tmp_path, "demo")
    with pytest.raises(TaskError) as direct:
        load_task(tmp_path, name)
    with pytest.raises(TaskError, match=rf"unknown task '{name}'.*known tasks: demo") as info:
        TaskStore(tmp_path).get(name)
    assert str(info.value) == str(direct.value)


def test_an_invalid_task_names_the_file(tmp_path: Path) -> None:
    path = write_task(tmp_path, "demo", TASK.replace("labels:", "lables:"))
    store = TaskStore(tmp_path)
    with pytest.raises(TaskError, match="unknown field\\(s\\) 'lables'") as info:
        store.get("demo")
    assert str(path) in str(info.value)
    path.write_text("name: [")
    with pytest.raises(TaskError, match=f"{path}: not valid YAML"):
        store.get("demo")


def test_an_unchanged_task_is_parsed_once_and_an_edit_is_seen(tmp_path: Path) -> None:
    path = write_task(tmp_path, "demo")
    store = TaskStore(tmp_path)
    first = store.get("demo")
    assert store.get("demo") is first
    path.write_text(path.read_text().replace("labels: [positive, negative]", "labels: [a, b]"))
    # The rules agent's label must be one of the task's: the edit is parsed, and refused.
    with pytest.raises(TaskError, match="agent 'kw'"):
        store.get("demo")
    path.write_text(TASK.format(name="demo").replace("description: test", "description: new"))
    edited = store.get("demo")
    assert edited is not first and edited.description == "new"
    assert store.get("demo") is edited


def test_a_seed_file_removed_since_is_seen(tmp_path: Path) -> None:
    seed = tmp_path / "demo_seed.jsonl"
    seed.write_text('{"text": "good", "label": "positive"}\n')
    write_task(
        tmp_path,
        "demo",
        TASK + "  - {{name: model, kind: sklearn, seed: demo_seed.jsonl}}\n",
    )
    store = TaskStore(tmp_path)
    first = store.get("demo")
    assert store.get("demo") is first
    os.remove(seed)
    with pytest.raises(TaskError, match="seed file .*demo_seed.jsonl does not exist"):
        store.get("demo")


# --- what the activities make of the stores' errors -------------------------------------------


async def test_label_chunk_refuses_a_pinned_policy_changed_on_disk(tmp_path: Path) -> None:
    """The store's plain errors become the activity's ApplicationErrors, as they always were;
    and a worker that compiled the version already still sees the edit."""
    from temporalio.exceptions import ApplicationError

    from activities import ids
    from activities.labeling import LabelingActivities
    from activities.payloads import ChunkInput, PolicyRefPayload

    write_task(tmp_path / "tasks", "demo")
    path = write_policy(tmp_path / "policies", 1)
    acts = LabelingActivities(
        engine=None,  # type: ignore[arg-type]  # loading touches no database
        tasks=TaskStore(tmp_path / "tasks"),
        policies=PolicyStore(tmp_path / "policies"),
        models_dir=tmp_path / "models",
    )
    pinned = sha(path)

    def chunk(version: int = 1, sha256: str = pinned) -> ChunkInput:
        pin = PolicyRefPayload(id="demo", version=version, sha256=sha256)
        return ChunkInput(
            job_id="j", dataset="d", task="demo", agents=["kw"], policy=pin, chunk=0, start=0, end=1
        )

    _, _, policy = await acts._load(chunk())
    assert policy.ref.sha256 == pinned
    write_policy(tmp_path / "policies", 1, threshold=0.5)
    with pytest.raises(ApplicationError) as info:
        await acts._load(chunk())
    assert info.value.type == ids.POLICY_CHANGED and info.value.non_retryable
    assert info.value.message == (
        f"policy demo@1 changed on disk since the job started (sha256 {sha(path)[:12]} != "
        f"{pinned[:12]}): released versions are immutable; add a new version instead"
    )
    assert info.value.__cause__ is None
    with pytest.raises(ApplicationError) as unknown:
        await acts._load(chunk(version=7))
    assert unknown.value.type == ids.POLICY_ERROR
    assert "policy 'demo' has no version 7" in unknown.value.message
