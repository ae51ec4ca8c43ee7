"""Process lifecycle of ``python -m sandbox_runtime``: bad configuration, shutdown with running commands."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.component.test_runtime_support import RUNTIME_SOURCE, RuntimeServer, process_alive


def test_bad_configuration_exits_2_with_the_variable_named(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(RUNTIME_SOURCE), "SANDBOX_BASE_DIR": str(tmp_path), "SANDBOX_PORT": "eighty"}
    done = subprocess.run([sys.executable, "-m", "sandbox_runtime"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "SANDBOX_PORT='eighty'" in done.stderr and "65535" in done.stderr


def test_the_log_says_how_long_the_server_took_to_start_and_routes_answer_like_a_framework(tmp_path: Path) -> None:
    with RuntimeServer(tmp_path / "app") as server:
        # The line is logged before the first request is served, so it is there once / answers.
        match = re.search(r"serving (\d+\.\d\d) s after the server was started", server.log())
        assert match, server.log()
        assert 0 < float(match.group(1)) < 20
        assert server.request("GET", "/nowhere") == (404, b"Not Found")
        assert server.request("DELETE", "/execute") == (405, b"Method Not Allowed")
        assert server.request("HEAD", "/")[0] == 200


def test_sigterm_kills_running_commands_and_exits(tmp_path: Path) -> None:
    server = RuntimeServer(tmp_path / "app").__enter__()
    try:
        payload = json.dumps({"command": "sh -c 'echo $$ > shell.pid; sleep 120'"}).encode()

        def call() -> None:
            # The connection is dropped at shutdown; only the server side matters here.
            try:
                server.request("POST", "/execute", payload, timeout=60)
            except OSError:
                pass

        worker = threading.Thread(target=call)
        worker.start()
        pid_file = server.base_dir / "shell.pid"
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
        shell = int(pid_file.read_text())
        assert process_alive(shell)
        started = time.monotonic()
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        assert time.monotonic() - started < 15, "shutdown waited for the command instead of killing it"
        worker.join(timeout=10)
        deadline = time.monotonic() + 5
        while process_alive(shell) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(shell), "the command outlived the server"
    finally:
        server.__exit__(None, None, None)


def test_as_pid_1_orphaned_zombies_are_reaped(tmp_path: Path) -> None:
    """In its own PID namespace the server is PID 1 and must reap orphans of finished commands."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give the server its own PID namespace")
    probe = subprocess.run(["unshare", "-p", "-f", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"PID namespaces are not available here: {probe.stderr.strip()}")
    # --kill-child: the server (the forked PID 1) dies with unshare when the test stops it, not
    # re-parented to the host's init.
    prefix = ["unshare", "-p", "-f", "--mount-proc", "--kill-child"]
    with RuntimeServer(tmp_path / "app", command_prefix=prefix) as server:
        assert server.execute("sh -c 'echo $PPID'")["stdout"].strip() == "1"
        orphans = []
        for _ in range(5):
            # The shell exits at once; its detached sleep is re-parented to PID 1 and exits soon after.
            reply = server.execute("sh -c 'sleep 0.1 >/dev/null 2>&1 & echo $!'")
            orphans.append(int(reply["stdout"]))
        list_unreaped = "sh -c '" + "; ".join(f"test -e /proc/{pid} && echo {pid}" for pid in orphans) + "; true'"
        deadline = time.monotonic() + 8
        remaining = [str(pid) for pid in orphans]
        while remaining and time.monotonic() < deadline:
            time.sleep(0.3)
            remaining = server.execute(list_unreaped)["stdout"].split()
        assert not remaining, f"orphans {remaining} of PID 1 were never reaped (left as zombies)"


def _first_connection_timing(tmp_path: Path) -> tuple[float, float, bytes]:
    """Start the server; connect as soon as the port accepts, send GET / on that connection.
    Returns (seconds from start to the accepted connection, seconds from there to the answer, answer)."""
    import socket

    from tests.component.sdk_harness import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(RUNTIME_SOURCE), "SANDBOX_BASE_DIR": str(tmp_path),
           "SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": str(port)}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "sandbox_runtime"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = started + 30
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=20)
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the runtime never listened"
                time.sleep(0.002)
        connected = time.monotonic()
        with conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            answer = conn.recv(65536)
        return connected - started, time.monotonic() - connected, answer
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_the_port_listens_before_the_imports_and_the_early_probe_is_answered(tmp_path: Path) -> None:
    """A kubelet probe that comes while the server still imports must wait and succeed, not fail
    and leave the pod unready for another probe period."""
    to_connect, to_answer, answer = _first_connection_timing(tmp_path)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    # the connection was accepted while the application was still being imported: its answer
    # came later by about the import time (hundreds of ms), not right away
    assert to_answer > 0.05, f"listened only once the app ran ({to_connect:.3f}s to listen, {to_answer:.3f}s to answer)"
