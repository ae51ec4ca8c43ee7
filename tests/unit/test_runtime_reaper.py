"""Orphan reaping used when the runtime is PID 1: zombies are collected, protected PIDs are not."""

from __future__ import annotations

import os
import subprocess
import time

from sandbox_runtime.reaper import reap_orphans, zombie_children


def _spawn_zombie() -> int:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while child.pid not in zombie_children(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.pid in zombie_children(os.getpid())
    child.returncode = 0  # keep Popen.__del__ from waiting on it; the reaper owns it now
    return child.pid


def test_reaps_unprotected_zombies_only() -> None:
    orphan = _spawn_zombie()
    protected = _spawn_zombie()
    reaped = reap_orphans(protected=[protected])
    assert orphan in reaped and protected not in reaped
    assert orphan not in zombie_children(os.getpid())
    assert protected in zombie_children(os.getpid())
    os.waitpid(protected, 0)
