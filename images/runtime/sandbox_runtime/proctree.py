"""Which processes belong to which command, found from /proc, and killing them.

A process group or a session is no bound: ``setsid``, ``setpgid`` and the classic double fork
leave both, and a daemon whose parent exited is re-parented away from the command. What cannot be
left is the server's subtree, once the server is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``;
as PID 1 of a container it is the reaper anyway): every orphan of every command is re-parented to
the server itself. So each process under the server is attributed like this:

- below a command's leader (matched by PID *and* start time, so a recycled PID is not mistaken
  for it): that command, exactly;
- below an orphan (a child of the server that is no leader): every command that was already
  running when the orphan started (its start time is after the command's), because any of them
  may have forked it. A process is killed only when *all* the commands it may belong to have
  ended, so a running command never loses a process; an orphan is at worst kept until the last
  of its candidates ends, which its timeout bounds;
- an orphan that started while no command was running belongs to no command and is left alone
  (e.g. something ``kubectl exec`` left behind).

Without the subreaper (``prctl`` refused) orphans go to another reaper and are lost to this view;
then members of the leader's process group or session are attributed to it as a fallback.

Start times are ``/proc/<pid>/stat`` field 22, clock ticks since boot, the clock of
``CLOCK_BOOTTIME``. Kills are SIGKILL, repeated until a fresh scan finds nothing left, so
children forked while their parents were being killed are caught as well.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

logger = logging.getLogger("sandbox_runtime.proctree")

ENDED = -1  # owner id standing for "a command that has already ended"
_PR_SET_CHILD_SUBREAPER = 36
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_KILL_ROUNDS = 200
_ids = itertools.count(1)


@dataclass(frozen=True)
class Proc:
    """One line of /proc/<pid>/stat, the fields attribution needs."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start: int


@dataclass
class TrackedCommand:
    """A command whose processes are still bounded by the runtime."""

    leader: int
    start: int  # the leader's start time, clock ticks since boot
    deadline: float  # event-loop time by which every process of the command is gone
    id: int = field(default_factory=lambda: next(_ids))
    running: bool = True  # the leader has not been collected yet (its request is open)
    over_limit: bool = False  # killed for starting too many processes
    ended: bool = False


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans; False where not possible."""
    if os.getpid() == 1:
        return True
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        return prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def now_ticks() -> int:
    """The current time on the clock of /proc start times."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLOCK_TICKS)


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return _parse_stat(pid, handle.read()).start
    except (OSError, ValueError, IndexError):
        return None


def seconds_since_exec(pid: int | None = None) -> float | None:
    """How long ago ``pid`` (default: this process) was started, to a clock tick; None if unknown."""
    start = process_start(os.getpid() if pid is None else pid)
    return None if start is None else max(0.0, (now_ticks() - start) / _CLOCK_TICKS)


def read_processes() -> dict[int, Proc]:
    """Every process visible in /proc."""
    found: dict[int, Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                raw = handle.read()
            found[int(name)] = _parse_stat(int(name), raw)
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
    return found


def attribute(processes: Mapping[int, Proc], server_pid: int, commands: Sequence[TrackedCommand],
              ended: Iterable[tuple[int, int]], *, sessions: bool = False) -> dict[int, frozenset[int]]:
    """For every process under ``server_pid``: the ids of the commands it may belong to
    (``ENDED`` for commands already ended, given as (start, end) tick intervals)."""
    children: dict[int, list[int]] = defaultdict(list)
    for proc in processes.values():
        children[proc.ppid].append(proc.pid)
    leaders = {(command.leader, command.start): command for command in commands}
    ended = list(ended)
    owners: dict[int, frozenset[int]] = {}

    def mark(root: int, who: frozenset[int]) -> None:
        pending = [root]
        while pending:
            pid = pending.pop()
            if pid in owners:
                continue
            owners[pid] = who
            pending.extend(children.get(pid, ()))

    for pid in children.get(server_pid, ()):
        proc = processes[pid]
        leader = leaders.get((pid, proc.start))
        if leader is not None:
            mark(pid, frozenset((leader.id,)))
            continue
        candidates = {command.id for command in commands if command.start <= proc.start}
        if any(start <= proc.start <= end for start, end in ended):
            candidates.add(ENDED)
        mark(pid, frozenset(candidates))
    if sessions:
        by_leader = {command.leader: command for command in commands}
        for proc in processes.values():
            if proc.pid in owners or proc.pid == server_pid:
                continue
            command = by_leader.get(proc.sid) or by_leader.get(proc.pgid)
            if command is not None and proc.start >= command.start:
                mark(proc.pid, frozenset((command.id,)))
    return owners


def process_counts(processes: Mapping[int, Proc], owners: Mapping[int, frozenset[int]]) -> dict[int, int]:
    """Live (non-zombie) processes per command id; a process counts for each of its candidates."""
    counts: dict[int, int] = defaultdict(int)
    for pid, who in owners.items():
        if processes[pid].state != "Z":
            for command_id in who:
                counts[command_id] += 1
    return counts


def kill_commands(server_pid: int, commands: Callable[[], Sequence[TrackedCommand]],
                  ended: Sequence[tuple[int, int]], targets: frozenset[int], *,
                  lock: AbstractContextManager[object] = contextlib.nullcontext(), sessions: bool = False) -> int:
    """SIGKILL every process that may only belong to ``targets`` (command ids) or to commands
    already ended; repeat until a scan finds none. ``commands`` gives the tracked commands as
    they are *now* (a command started during the kill must be seen as such), and each round
    holds ``lock``, which the runner also holds while it spawns and registers a command.
    Blocking: run it in a worker thread. Returns how many signals were sent."""
    allowed = targets | {ENDED}
    sent = 0
    for round_number in range(_KILL_ROUNDS):
        with lock:
            processes = read_processes()
            owners = attribute(processes, server_pid, commands(), ended, sessions=sessions)
            victims = [pid for pid, who in owners.items()
                       if who and who <= allowed and processes[pid].state not in ("Z", "X")]
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                    sent += 1
                except ProcessLookupError:
                    pass
                except PermissionError:
                    logger.warning("not permitted to kill process %d", pid)
        if not victims:
            return sent
        # Give the signals a moment to land before looking for children forked meanwhile.
        time.sleep(0.002 if round_number < 10 else 0.02)
    logger.warning("processes of commands %s were still appearing after %d kill rounds", sorted(targets), _KILL_ROUNDS)
    return sent


def _parse_stat(pid: int, raw: bytes) -> Proc:
    # The command name may hold spaces and parentheses; the fields resume after the last ')'.
    fields = raw[raw.rfind(b")") + 2:].split()
    return Proc(pid=pid, ppid=int(fields[1]), pgid=int(fields[2]), sid=int(fields[3]),
                state=fields[0].decode("ascii", "replace"), start=int(fields[19]))
