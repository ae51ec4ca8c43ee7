"""The runtime as it runs in its image: uid 1000, read-only root filesystem, writable base dir.

A private mount namespace (``unshare -m``) remounts every mount read-only, bind-mounts the base
directory back read-write, drops to uid/gid 1000 with ``setpriv`` and starts the server there.
The host's mounts are untouched. Needs root and mount namespaces; skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.component.test_runtime_support import RUNTIME_SOURCE, RuntimeServer

UID = 1000
SYSTEM_PYTHON = "/usr/bin/python3"
LOCKDOWN = r"""
set -e
awk '{print $2}' /proc/self/mounts | sort -u | while read -r mountpoint; do
  mount -o remount,bind,ro "$mountpoint" 2>/dev/null || true
done
mount --bind "$SANDBOX_BASE_DIR" "$SANDBOX_BASE_DIR"
mount -o remount,bind,rw "$SANDBOX_BASE_DIR"
exec setpriv --reuid=1000 --regid=1000 --clear-groups --inh-caps=-all --bounding-set=-all -- "$@"
"""


def _why_not_runnable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a mount namespace and switch to uid 1000"
    for tool in ("unshare", "setpriv", "awk"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} (an interpreter uid 1000 can execute) is missing"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"mount namespaces are not available here: {probe.stderr.strip()}"
    # The checkout and the venv must be readable by uid 1000 with an interpreter it may run.
    imports = subprocess.run(
        ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", SYSTEM_PYTHON, "-c", "import sandbox_runtime.app"],
        env={"PYTHONPATH": _server_path(), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True, text=True, cwd="/",
    )
    if imports.returncode != 0:
        last_line = (imports.stderr.strip().splitlines() or ["no output"])[-1]
        return f"uid {UID} cannot import the runtime with {SYSTEM_PYTHON} and this venv's packages: {last_line}"
    return None


def _server_path() -> str:
    """PYTHONPATH for the system interpreter: the runtime package and this venv's packages."""
    return os.pathsep.join([str(RUNTIME_SOURCE), *site.getsitepackages()])


@pytest.fixture(scope="module")
def locked_down() -> Iterator[RuntimeServer]:
    reason = _why_not_runnable()
    if reason:
        pytest.skip(reason)
    # pytest's tmp dirs are private to root; uid 1000 must be able to reach the base dir.
    root = Path(tempfile.mkdtemp(prefix="runtime-ro-"))
    try:
        root.chmod(0o755)
        base = root / "app"
        base.mkdir()
        os.chown(base, UID, UID)
        # The venv interpreter lives under /root (mode 0700); the system interpreter of the same
        # minor version runs the server with the venv's packages on its path instead.
        env = {"PYTHONPATH": _server_path(), "HOME": str(base), "TMPDIR": "/nonexistent-tmp"}
        prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", LOCKDOWN, "lockdown"]
        with RuntimeServer(base, env=env, command_prefix=prefix, python=SYSTEM_PYTHON) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_runs_as_uid_1000(locked_down: RuntimeServer) -> None:
    assert locked_down.execute("id -u")["stdout"].strip() == str(UID)


def test_root_filesystem_is_read_only_for_commands(locked_down: RuntimeServer) -> None:
    reply = locked_down.execute("sh -c 'touch /etc/runtime-ro-probe || touch /var/tmp/runtime-ro-probe'")
    assert reply["exit_code"] != 0 and "Read-only file system" in reply["stderr"]


def test_files_and_commands_work_in_the_writable_base_dir(locked_down: RuntimeServer) -> None:
    url = locked_down.url
    payload = os.urandom(3 * 1024 * 1024)
    assert requests.post(f"{url}/upload", files={"file": ("a/b/c.bin", payload)}, timeout=30).status_code == 200
    assert requests.get(f"{url}/download/a/b/c.bin", timeout=30).content == payload
    assert [e["name"] for e in requests.get(f"{url}/list/a/b", timeout=30).json()] == ["c.bin"]
    assert json.loads(locked_down.request("GET", "/exists/a%2Fb")[1])["exists"] is True
    assert locked_down.execute("sh -c 'echo made > here.txt && cat here.txt'")["stdout"] == "made\n"
    assert (locked_down.base_dir / "a/b/c.bin").stat().st_uid == UID
    assert locked_down.execute("sleep 5", timeout_seconds=0.3)["timed_out"] is True
