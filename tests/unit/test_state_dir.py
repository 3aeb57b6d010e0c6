"""Which state dir a command uses wherever it runs (worker/home.py), and a port-in-use error
that names the stack holding the port (issue 16, item 3). No servers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from worker.home import describe, find_home, pointer_file, state_dir_in, write_pointer
from worker.settings import Settings


def test_here_then_parents_then_the_pointer_then_a_new_one(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    project = tmp_path / "project"
    deep = project / "src" / "deep"
    deep.mkdir(parents=True)
    assert find_home(deep, env).why == "new"
    assert find_home(deep, env).path == deep / ".labelfabric"

    elsewhere = tmp_path / "elsewhere" / ".labelfabric"
    elsewhere.mkdir(parents=True)
    assert write_pointer(elsewhere, env) == pointer_file(env)
    assert (find_home(deep, env).path, find_home(deep, env).why) == (elsewhere, "pointer")

    (project / ".labelfabric").mkdir()  # like git: the nearest parent's wins over the pointer
    assert (find_home(deep, env).path, find_home(deep, env).why) == (
        project / ".labelfabric",
        "parent",
    )
    assert find_home(project, env).why == "here"
    given = env | {"LABELFABRIC_HOME": str(tmp_path / "given")}
    assert (find_home(deep, given).path, find_home(deep, given).why) == (
        tmp_path / "given",
        "LABELFABRIC_HOME",
    )


def test_a_pointer_to_a_folder_that_is_gone_is_ignored(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    write_pointer(tmp_path / "gone", env)
    assert find_home(tmp_path, env).why == "new"


def test_settings_default_follows_the_lookup_and_explicit_homes_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LABELFABRIC_HOME", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    (tmp_path / ".labelfabric").mkdir()
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert Settings().home_dir == tmp_path / ".labelfabric"
    assert Settings(home=tmp_path / "mine").home_dir == tmp_path / "mine"
    said = describe(Settings().home_dir)
    assert said.startswith(f"state dir: {tmp_path / '.labelfabric'} (found in a parent")
    assert said.endswith("LABELFABRIC_HOME=DIR uses another")
    monkeypatch.setenv("LABELFABRIC_HOME", str(tmp_path / "env"))
    assert Settings().home_dir == tmp_path / "env"
    assert "(from LABELFABRIC_HOME)" in describe(Settings().home_dir)


def test_the_state_dir_a_server_command_line_names(tmp_path: Path) -> None:
    home = tmp_path / ".labelfabric"
    (home / "run").mkdir(parents=True)
    (home / "run" / "stack.lock").touch()
    assert state_dir_in(["weed", "mini", f"-dir={home}/s3", "-ip=127.0.0.1"]) == home
    assert state_dir_in(["temporal", "--db-filename", str(home / "temporal.db")]) == home
    assert state_dir_in(["python", "-m", "worker", "codec", "serve", "--home", str(home)]) == home
    assert state_dir_in(["temporal", "--db-filename", str(tmp_path / "x.db")]) is None


def test_a_port_in_use_names_its_holder_or_the_stack_started_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from worker import home
    from worker.stack.process import StackError
    from worker.stack.temporal import _Temporal

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    other = tmp_path / "other" / ".labelfabric"
    other.mkdir(parents=True)
    write_pointer(other)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = Settings(home=tmp_path / "mine", temporal_port=port)
        with pytest.raises(StackError) as seen:
            _Temporal(settings).check_ports()
        # A holder this user cannot see (another user's): the stack `up` started last.
        monkeypatch.setattr(home, "port_holder", lambda host, port: "")
        with pytest.raises(StackError) as unseen:
            _Temporal(settings).check_ports()
    said = str(seen.value)
    assert f"state dir {settings.home_dir}: port {port} on 127.0.0.1 is already in use" in said
    assert f"in use by pid {os.getpid()} (" in said and "probably" not in said  # this process
    assert said.endswith("set LABELFABRIC_TEMPORAL_PORT to another port")
    said = str(unseen.value)
    assert f"probably the stack `labelfabric up` started last ({other})" in said
    assert f"use it with LABELFABRIC_HOME={other}, or set LABELFABRIC_TEMPORAL_PORT" in said
