"""Interrupting the driver: SIGTERM/SIGINT stop the tunnels first and unwind the driver (a real
dummy process stands in for ``kubectl port-forward``), and Ctrl-C during an engine command waits
for the engine unless pressed twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from automation import interrupt
from test_automation_tunnel import process_gone

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_first_ctrl_c_during_an_engine_command_waits_for_the_engine(monkeypatch) -> None:
    previous = signal.getsignal(signal.SIGINT)
    interrupt.install_signal_cleanup()
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupt.engine_operation():
                os.kill(os.getpid(), signal.SIGINT)  # handled: the operation goes on
                assert interrupt.engine_was_interrupted()
        assert interrupt.engine_was_interrupted()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # outside an engine command: stop at once
    finally:
        signal.signal(signal.SIGINT, previous)


def test_second_ctrl_c_forces() -> None:
    previous = signal.getsignal(signal.SIGINT)
    interrupt.install_signal_cleanup()
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupt.engine_operation():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                pytest.fail("the second interrupt must raise")
    finally:
        signal.signal(signal.SIGINT, previous)


DRIVER = textwrap.dedent("""
    import sys, time
    from automation import interrupt, tunnel as tunnels
    interrupt.install_signal_cleanup()
    tunnel = tunnels.PortForwardTunnel(command=[sys.executable, "-c", "import time; time.sleep(600)"],
                                       wait_for_port=False).start()
    print(tunnel.pid, flush=True)
    try:
        time.sleep(600)
    finally:
        print("unwound", flush=True)
""")


@pytest.mark.parametrize("signum,exit_code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)])
def test_signal_to_the_driver_stops_the_tunnel(signum, exit_code):
    """SIGTERM exits 143; an uncaught KeyboardInterrupt makes Python re-raise SIGINT (status -2)."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        tunnel_pid = int(driver.stdout.readline())
        assert not process_gone(tunnel_pid, timeout=0.2)
        driver.send_signal(signum)
        driver.wait(timeout=20)
        assert process_gone(tunnel_pid), "the tunnel outlived the driver"
        assert driver.returncode == exit_code
        assert driver.stdout.read().strip() == "unwound"  # finally blocks (claim cleanup) still ran
    finally:
        if driver.poll() is None:
            driver.kill()
