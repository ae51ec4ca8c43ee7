"""A managed ``kubectl port-forward`` to the router Service.

The official SDK's own tunnel mode sends no ``Authorization`` header, and our router requires
one, so the driver opens the tunnel itself and hands the SDK a direct URL plus the bearer
token. The tunnel process is always cleaned up: on ``close()``/context exit, at interpreter
exit, on SIGINT/SIGTERM (:mod:`automation.interrupt` calls ``close_all_tunnels`` first) and, on
Linux, when the driver dies without a chance to clean up (the child gets SIGTERM from the kernel
via PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

from automation.errors import TunnelError
from automation.paths import find_tool
from agent_sandbox_pulumi.sandbox_iac import constants

_LIVE: "set[PortForwardTunnel]" = set()
_LIVE_LOCK = threading.Lock()
PR_SET_PDEATHSIG = 1


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass


def port_forward_command(kube_args: Sequence[str], local_port: int,
                         namespace: str = constants.ROUTER_NAMESPACE,
                         service: str = constants.ROUTER_SERVICE_NAME,
                         remote_port: int = constants.ROUTER_PORT) -> list[str]:
    """``kubectl port-forward`` of the router Service onto ``127.0.0.1:<local_port>``."""
    kubectl = find_tool("kubectl") or "kubectl"
    return [kubectl, *kube_args, "port-forward", "--address", "127.0.0.1", "-n", namespace,
            f"svc/{service}", f"{local_port}:{remote_port}"]


class PortForwardTunnel:
    """A child process forwarding a local port; ``url`` is ``http://127.0.0.1:<port>``.

    ``command`` replaces the kubectl command (tests use a dummy process); with
    ``wait_for_port=False`` start() does not wait for the port to accept connections."""

    def __init__(self, kube_args: Sequence[str] = (), local_port: Optional[int] = None,
                 command: Optional[Sequence[str]] = None, ready_timeout: float = 30.0,
                 wait_for_port: bool = True):
        self.local_port = local_port or free_local_port()
        self.command = list(command) if command else port_forward_command(kube_args, self.local_port)
        self.ready_timeout = ready_timeout
        self.wait_for_port = wait_for_port
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def start(self) -> "PortForwardTunnel":
        """Spawn the process (own session, so a terminal Ctrl-C reaches only the driver, which
        then stops it) and wait until the local port accepts connections."""
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        if not self.wait_for_port:
            return self
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read() if self.process.stdout else ""
                self.close()
                raise TunnelError(f"`{' '.join(self.command)}` exited with {self.process.returncode}: {output.strip()}")
            if _port_open(self.local_port):
                return self
            time.sleep(0.05)
        self.close()
        raise TunnelError(f"`{' '.join(self.command)}` did not open 127.0.0.1:{self.local_port} within "
                          f"{self.ready_timeout:.0f}s (is the router Service there? kubectl get svc -n "
                          f"{constants.ROUTER_NAMESPACE})")

    def close(self) -> None:
        """Stop the process group (SIGTERM, then SIGKILL after 5 s); idempotent."""
        with _LIVE_LOCK:
            _LIVE.discard(self)
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=5)

    def __enter__(self) -> "PortForwardTunnel":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def close_all_tunnels() -> None:
    """Stop every tunnel still running in this process."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for tunnel in live:
        tunnel.close()


def live_tunnels() -> list[PortForwardTunnel]:
    with _LIVE_LOCK:
        return list(_LIVE)


atexit.register(close_all_tunnels)
