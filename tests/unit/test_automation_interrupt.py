"""Interrupting the driver during an engine command, and recovering a stack left locked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from automation import tunnel
from automation.project import ProjectPaths
from automation.workspace import remove_stale_locks


def test_first_ctrl_c_during_an_engine_command_waits_for_the_engine(monkeypatch) -> None:
    previous = signal.getsignal(signal.SIGINT)
    tunnel.install_signal_cleanup()
    try:
        with pytest.raises(KeyboardInterrupt):
            with tunnel.engine_operation():
                os.kill(os.getpid(), signal.SIGINT)  # handled: the operation goes on
                assert tunnel.engine_was_interrupted()
        assert tunnel.engine_was_interrupted()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # outside an engine command: stop at once
    finally:
        signal.signal(signal.SIGINT, previous)


def test_second_ctrl_c_forces() -> None:
    previous = signal.getsignal(signal.SIGINT)
    tunnel.install_signal_cleanup()
    try:
        with pytest.raises(KeyboardInterrupt):
            with tunnel.engine_operation():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                pytest.fail("the second interrupt must raise")
    finally:
        signal.signal(signal.SIGINT, previous)


def _lock(paths: ProjectPaths, stack: str, pid: int, hostname: str) -> "os.PathLike[str]":
    folder = paths.state_dir / ".pulumi" / "locks" / "organization" / "agent-sandbox" / stack
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / f"lock-{pid}.json"
    lock.write_text(json.dumps({"pid": pid, "username": "root", "hostname": hostname, "timestamp": "t"}))
    (folder / f"lock-{pid}.json.attrs").write_text("{}")
    return lock


def test_only_locks_of_dead_local_processes_are_removed(tmp_path) -> None:
    paths = ProjectPaths(root=tmp_path, out_dir=tmp_path / "out")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = _lock(paths, "local", dead.pid, socket.gethostname())
    live = _lock(paths, "local", os.getpid(), socket.gethostname())
    remote = _lock(paths, "local", dead.pid + 100000, "another-host")
    removed = remove_stale_locks(paths, "local")
    assert len(removed) == 1 and str(dead.pid) in removed[0]
    assert not stale.exists() and not stale.with_name(stale.name + ".attrs").exists()
    assert live.exists() and remote.exists()
