"""A managed ``kubectl port-forward`` to the router Service.

The official SDK's own tunnel mode sends no ``Authorization`` header, and our router requires
one, so the driver opens the tunnel itself and hands the SDK a direct URL plus the bearer
token. The tunnel process is always cleaned up: on ``close()``/context exit, at interpreter
exit, on SIGINT/SIGTERM (``install_signal_cleanup``) and, on Linux, when the driver dies
without a chance to clean up (the child gets SIGTERM from the kernel via PR_SET_PDEATHSIG).
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
from types import FrameType
from typing import Optional, Sequence

from automation.errors import TunnelError
from automation.project import find_tool
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


_ENGINE_BUSY = threading.Event()
_ENGINE_INTERRUPTED = threading.Event()


class engine_operation:  # noqa: N801 - used as a context manager, reads like a statement
    """While a Pulumi engine command runs, a first Ctrl-C lets the engine cancel cleanly: the
    engine (same process group) gets the SIGINT too, finishes its in-flight steps, writes its
    state and releases the stack lock; the driver keeps reading its output until it exits.
    Killing the driver at once would close the engine's output pipe and leave a locked stack."""

    def __enter__(self) -> "engine_operation":
        _ENGINE_INTERRUPTED.clear()
        _ENGINE_BUSY.set()
        return self

    def __exit__(self, *exc: object) -> None:
        _ENGINE_BUSY.clear()
        if _ENGINE_INTERRUPTED.is_set() and exc[0] is None:
            raise KeyboardInterrupt


def engine_was_interrupted() -> bool:
    """True once a Ctrl-C arrived during the current or last engine command."""
    return _ENGINE_INTERRUPTED.is_set()


def _on_signal(signum: int, frame: Optional[FrameType]) -> None:
    close_all_tunnels()
    if signum == signal.SIGINT and _ENGINE_BUSY.is_set() and not _ENGINE_INTERRUPTED.is_set():
        _ENGINE_INTERRUPTED.set()
        print("interrupt: the Pulumi engine is cancelling cleanly (state saved, lock released); "
              "press Ctrl-C again to force", file=sys.stderr, flush=True)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_signal_cleanup() -> None:
    """Make SIGINT and SIGTERM stop every tunnel first, then unwind the driver normally
    (KeyboardInterrupt / SystemExit(143)), so ``finally`` blocks still delete claims."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


atexit.register(close_all_tunnels)
