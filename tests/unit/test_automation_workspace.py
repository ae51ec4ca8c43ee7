"""The engine's workspace: the inline program, the work dir mirroring the project's settings,
the Pulumi CLI it runs, and recovering a stack left locked by a run killed hard."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from automation.project import ProjectPaths
from automation.workspace import remove_stale_locks


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
