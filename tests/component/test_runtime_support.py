"""Launching the real runtime server (``python -m sandbox_runtime``) on loopback for tests.

Holds no tests itself; the runtime's component tests import ``RuntimeServer`` from here.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_SOURCE = REPO_ROOT / "images" / "runtime"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RuntimeServer:
    """The runtime running in a child process; use as a context manager."""

    def __init__(self, base_dir: Path, env: dict[str, str] | None = None, command_prefix: list[str] | None = None,
                 python: str = sys.executable) -> None:
        self.base_dir = base_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._extra_env = env or {}
        self._prefix = command_prefix or []
        self._python = python
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path = base_dir.parent / f"runtime-{self.port}.log"

    def __enter__(self) -> "RuntimeServer":
        self.base_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PYTHONPATH": str(RUNTIME_SOURCE),
            "PYTHONDONTWRITEBYTECODE": "1",
            "SANDBOX_HOST": "127.0.0.1",
            "SANDBOX_PORT": str(self.port),
            "SANDBOX_BASE_DIR": str(self.base_dir),
            **self._extra_env,
        }
        log = open(self._log_path, "wb")
        self.process = subprocess.Popen(
            [*self._prefix, self._python, "-m", "sandbox_runtime"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.base_dir.parent),
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"runtime exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, _ = self.request("GET", "/")
                if status == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError(f"runtime did not become healthy within 20 s:\n{self.log()}")

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def pid(self) -> int:
        """PID of the server process."""
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        """Everything the server printed so far."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def request(self, method: str, raw_path: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
        """Send one request with the path exactly as given (no client-side normalisation)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, raw_path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def execute(self, command: str, timeout_seconds: float | None = None, timeout: float = 60) -> dict[str, Any]:
        """POST /execute and return the decoded JSON reply (asserting HTTP 200)."""
        payload: dict[str, Any] = {"command": command}
        if timeout_seconds is not None:
            payload["timeout_seconds"] = timeout_seconds
        status, body = self.request("POST", "/execute", json.dumps(payload).encode(), {"Content-Type": "application/json"}, timeout=timeout)
        assert status == 200, body
        return json.loads(body)


def children_of(pid: int) -> list[tuple[int, str, str]]:
    """(pid, state, command name) of every live process whose parent is ``pid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        command = raw[raw.find(b"(") + 1:raw.rfind(b")")].decode(errors="replace")
        fields = raw[raw.rfind(b")") + 2:].split()
        if int(fields[1]) == pid:
            found.append((int(name), fields[0].decode(), command))
    return found


def process_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2:].split()[0] != b"Z"


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (VmHWM) of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")
