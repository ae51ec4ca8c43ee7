"""Reaping orphaned zombies: the runtime is PID 1 of its container and a child subreaper.

Commands may leave background children behind; when their parent exits they are re-parented to
the nearest subreaper, which is this server (it sets PR_SET_CHILD_SUBREAPER so that it keeps
every command's process tree in view, see proctree.py), or PID 1, which is this server too when
the image has no init. Unreaped orphans would pile up as zombies. Only children that are *not* the leaders of running commands are reaped, so the
event loop's own child watcher keeps receiving the exit status of the commands it waits for.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable

logger = logging.getLogger("sandbox_runtime.reaper")

REAP_INTERVAL_SECONDS = 2.0


def zombie_children(parent_pid: int) -> list[int]:
    """PIDs of zombie processes whose parent is ``parent_pid`` (read from /proc)."""
    zombies: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat_line = handle.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; fields resume after the last ')'.
        fields = stat_line[stat_line.rfind(b")") + 2:].split()
        if len(fields) >= 2 and fields[0] == b"Z" and int(fields[1]) == parent_pid:
            zombies.append(int(name))
    return zombies


def reap_orphans(protected: Iterable[int]) -> list[int]:
    """Reap zombie children of this process except ``protected`` PIDs; return the reaped PIDs."""
    keep = set(protected)
    reaped: list[int] = []
    for pid in zombie_children(os.getpid()):
        if pid in keep:
            continue
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if finished:
            reaped.append(pid)
    return reaped


async def reap_orphans_forever(protected: Callable[[], Iterable[int]], interval: float = REAP_INTERVAL_SECONDS) -> None:
    """Call reap_orphans every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            reaped = reap_orphans(protected())
        except OSError as exc:
            logger.warning("orphan reaping failed: %s", exc)
            continue
        if reaped:
            logger.debug("reaped orphaned processes %s", reaped)
