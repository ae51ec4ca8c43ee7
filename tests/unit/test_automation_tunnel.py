"""The managed tunnel process: started, waited for, and always stopped - on close, on a failing
start and when the driver is killed outright (a real dummy long-running process stands
in for ``kubectl port-forward``; SIGTERM/SIGINT of the driver: test_automation_interrupt.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from automation import tunnel as tunnels

REPO_ROOT = Path(__file__).resolve().parents[2]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def process_gone(pid: int, timeout: float = 10.0) -> bool:
    """True once ``pid`` no longer exists (or is only a zombie awaiting its reaper)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_command_forwards_the_router_service_with_the_stack_kube_args():
    command = tunnels.port_forward_command(["--kubeconfig", "/k/config", "--context", "kind-x"], 40123)
    assert command[1:] == ["--kubeconfig", "/k/config", "--context", "kind-x", "port-forward", "--address",
                           "127.0.0.1", "-n", "agent-sandbox-system", "svc/sandbox-router-svc", "40123:8080"]


def test_context_exit_stops_the_process():
    with tunnels.PortForwardTunnel(command=SLEEPER, wait_for_port=False) as tunnel:
        pid = tunnel.pid
        assert not process_gone(pid, timeout=0.2)
        assert tunnel in tunnels.live_tunnels()
    assert process_gone(pid)
    assert tunnel not in tunnels.live_tunnels()


def test_start_waits_until_the_port_accepts_connections():
    port = tunnels.free_local_port()
    server = [sys.executable, "-c", textwrap.dedent(f"""
        import socket, time
        time.sleep(0.5)
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", {port})); s.listen(); time.sleep(600)
    """)]
    started = time.monotonic()
    with tunnels.PortForwardTunnel(local_port=port, command=server, ready_timeout=20) as tunnel:
        assert time.monotonic() - started >= 0.4
        assert tunnel.url == f"http://127.0.0.1:{port}"
        pid = tunnel.pid
    assert process_gone(pid)


def test_a_tunnel_that_exits_raises_with_its_output():
    failing = [sys.executable, "-c", "import sys; print('error: services \"sandbox-router-svc\" not found'); sys.exit(1)"]
    with pytest.raises(tunnels.TunnelError, match="sandbox-router-svc.*not found"):
        tunnels.PortForwardTunnel(command=failing, ready_timeout=20).start()
    assert tunnels.live_tunnels() == []


def test_a_tunnel_that_never_listens_times_out_and_is_stopped():
    tunnel = tunnels.PortForwardTunnel(command=SLEEPER, ready_timeout=0.5)
    with pytest.raises(tunnels.TunnelError, match="did not open"):
        tunnel.start()
    assert process_gone(tunnel.pid)


def test_close_kills_a_process_that_ignores_sigterm():
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                      "print('armed', flush=True); time.sleep(600)"]
    tunnel = tunnels.PortForwardTunnel(command=stubborn, wait_for_port=False).start()
    assert tunnel.process.stdout.readline().strip() == "armed"
    started = time.monotonic()
    tunnel.close()
    assert process_gone(tunnel.pid)
    assert time.monotonic() - started < 15


DRIVER = textwrap.dedent("""
    import sys, time
    from automation import tunnel as tunnels
    tunnel = tunnels.PortForwardTunnel(command=[sys.executable, "-c", "import time; time.sleep(600)"],
                                       wait_for_port=False).start()
    print(tunnel.pid, flush=True)
    time.sleep(600)
""")


def test_tunnel_dies_with_a_driver_that_is_killed_outright():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        tunnel_pid = int(driver.stdout.readline())
        driver.kill()  # SIGKILL: no handler runs; the kernel's parent-death signal must do it
        driver.wait(timeout=20)
        assert process_gone(tunnel_pid)
    finally:
        if driver.poll() is None:
            driver.kill()
