"""bench/gvisor_idle.py: the process tree and CPU/context-switch readings it measures with."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import gvisor_idle


def test_a_process_tree_and_its_usage_are_read_from_proc() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tree = gvisor_idle.descendants(os.getpid())
        assert os.getpid() in tree and child.pid in tree
        cpu, switches = gvisor_idle.usage([os.getpid()])
        assert cpu > 0 and switches > 0
    finally:
        child.kill()
        child.wait()


def test_a_runsc_that_is_not_executable_is_named() -> None:
    with pytest.raises(SystemExit, match="--runsc old=/nonexistent/runsc: not an executable runsc"):
        gvisor_idle.main(["--runsc", "old=/nonexistent/runsc"])
