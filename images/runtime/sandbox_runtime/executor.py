"""Running one client command: no shell, a minimal environment, bounded time, processes and output.

The command string is split with ``shlex``'s rules (argv.py, in linear time and within the exec
limits) and executed directly, so pipes, redirects and ``&&`` are ordinary arguments unless the
client explicitly asks for ``sh -c "..."``. Each command gets a new session and the documented
minimal environment (PATH, HOME, LANG, PYTHONUNBUFFERED), not the server's.

Every process a command starts is bounded, wherever it went (proctree.py): when the timeout fires
the whole tree is killed, setsid/double-forked daemons included; a command that exits early may
leave background processes, which live until its deadline; a command with more than
``max_processes`` processes is killed whole. Output is read concurrently while the command runs
and capped per stream, both in raw bytes and in the size it takes in the JSON reply once escaped;
the rest is drained and counted so the command never blocks on a full pipe. The number of
commands running at once is capped too.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import proctree
from .argv import CommandTooLarge, check_exec_size, split_command
from .proctree import TrackedCommand

logger = logging.getLogger("sandbox_runtime.executor")

TIMEOUT_EXIT_CODE = 124  # the convention of coreutils timeout(1); timed_out is set as well
PROCESS_LIMIT_EXIT_CODE = 137  # 128 + SIGKILL, what a shell reports for a killed command
DEFAULT_MAX_CONCURRENT_COMMANDS = 128
DEFAULT_MAX_COMMAND_PROCESSES = 256
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# After SIGKILL the pipes close as soon as the killed processes are gone.
_PIPE_GRACE_AFTER_KILL_SECONDS = 0.5
_READ_CHUNK = 64 * 1024
_EXIT_POLL_MAX_SECONDS = 0.05
_REAP_PATIENCE_SECONDS = 60.0
# Commands up to this size are split on the event loop (linear time: well under a millisecond);
# longer ones in a worker thread, so even a 4 MiB command never holds the loop.
_INLINE_SPLIT_CHARS = 16 * 1024
# Output up to this size is turned into the reply on the event loop; more in a worker thread.
_INLINE_RESULT_BYTES = 64 * 1024
# How often the process trees are looked at: the reaction time of the process cap and the lag
# with which background processes are killed after their command's deadline.
WATCH_INTERVAL_SECONDS = 0.5
# Processes that appear in this many clock ticks after their command ended still count as its own.
_ENDED_SLACK_TICKS = 100


class CommandRefused(Exception):
    """The command is not run; ``status`` and ``detail`` become the HTTP reply (4xx)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def minimal_environment(home: str, server_environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment commands run with: the server's PATH (the image's, so its Python comes
    first), HOME = the base dir, LANG = C.UTF-8 and PYTHONUNBUFFERED=1 (so a Python command that
    times out has printed what it had, and the reply can show it). Nothing else of the server's
    (SANDBOX_* settings, PYTHONPATH of the server's own code, Kubernetes service variables)
    reaches user code."""
    server = os.environ if server_environment is None else server_environment
    return {"PATH": server.get("PATH") or DEFAULT_PATH, "HOME": home, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}


@dataclass
class CommandResult:
    """What /execute returns: the contract's fields plus ``timed_out``."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False

    def as_json(self) -> dict[str, object]:
        """The response body; ``timed_out`` only appears when the timeout fired."""
        body: dict[str, object] = {"stdout": self.stdout, "stderr": self.stderr, "exit_code": self.exit_code}
        if self.timed_out:
            body["timed_out"] = True
        return body


@dataclass
class _CappedBuffer:
    """Keeps the first ``limit`` bytes of a stream and counts the rest.

    ``text()`` also keeps the stream's share of the reply within ``reply_limit`` bytes once
    JSON-escaped (the reply is UTF-8 JSON): a NUL or another control byte becomes a six-byte
    escape (``\\u0000``) and an invalid UTF-8 byte the three bytes of U+FFFD, so without that
    bound binary output would make replies up to six times the cap. Text is at most twice its
    size there (``\\n``, ``\\"``), so with the default budget of twice the cap it is never cut early.
    """

    limit: int
    reply_limit: int = 0
    data: bytearray = field(default_factory=bytearray)
    omitted: int = 0

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.omitted += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        kept = _fit_escaped(bytes(self.data), self.reply_limit or 2 * self.limit)
        decoded = self.data[:kept].decode("utf-8", errors="replace")
        hidden = self.omitted + len(self.data) - kept
        if hidden:
            decoded += f"\n[output truncated: {hidden} more bytes not shown; the limit is {self.limit} bytes per stream]\n"
        return decoded


def _escaped_size(data: bytes) -> int:
    """Bytes ``data`` takes inside the reply: decoded with replacement, JSON-escaped, UTF-8."""
    return len(json.dumps(data.decode("utf-8", errors="replace"), ensure_ascii=False).encode()) - 2


def _fit_escaped(data: bytes, budget: int) -> int:
    """The length of the longest prefix of ``data`` tried whose escaped size fits ``budget``."""
    # No byte escapes to more than six characters (NUL, controls, invalid UTF-8 as \\ufffd).
    if len(data) * 6 <= budget or _escaped_size(data) <= budget:
        return len(data)
    # Shrink in proportion to the overshoot: exact for uniform output, a few rounds otherwise.
    cut = len(data)
    for _ in range(8):
        size = _escaped_size(data[:cut])
        if size <= budget:
            return cut
        cut = _utf8_boundary(data, min(cut - 1, cut * budget // size))
    return _utf8_boundary(data, budget // 6)


def _utf8_boundary(data: bytes, cut: int) -> int:
    """Move ``cut`` back to the start of a UTF-8 sequence, so no character is split."""
    for _ in range(3):
        if 0 < cut < len(data) and data[cut] & 0xC0 == 0x80:
            cut -= 1
    return cut


class _PipeReader:
    """Reads one pipe (read end owned by this object) into a _CappedBuffer via ``add_reader``.

    The descriptor is closed exactly once, here. (Handing Popen's file objects to
    ``connect_read_pipe`` closes it twice on uvloop, libuv's close followed by the file object's,
    which can hit a descriptor another thread has just been given.)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, sink: _CappedBuffer) -> None:
        self._loop = loop
        self._fd: int | None = fd
        self._sink = sink
        self.closed: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, _READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self._sink.feed(data)
        else:
            self.close()

    def close(self) -> None:
        """Stop reading and close the descriptor (idempotent); resolves ``closed``."""
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if not self.closed.done():
            self.closed.set_result(None)


class CommandRunner:
    """Starts commands, bounds their process trees and remembers what is running.

    Processes are started with ``subprocess.Popen`` (vfork/exec: about a millisecond, where
    uvloop's own spawn takes 5-15 ms here), the read ends of their pipes are watched by the
    running event loop (``add_reader``), and the exit is collected with non-blocking
    ``waitpid`` once both pipes reach EOF. No thread is parked per command and no SIGCHLD
    handler is involved, so it works the same on uvloop and on the standard asyncio loop.
    One watcher task looks at the process trees every WATCH_INTERVAL_SECONDS while any command
    is tracked (proctree.py); killing happens in a worker thread.
    """

    def __init__(self, cwd: str, max_output_bytes: int, *, environment: Mapping[str, str] | None = None,
                 max_concurrent: int = DEFAULT_MAX_CONCURRENT_COMMANDS,
                 max_processes: int = DEFAULT_MAX_COMMAND_PROCESSES) -> None:
        self._cwd = cwd
        self._max_output_bytes = max_output_bytes
        self._environment = dict(environment) if environment is not None else minimal_environment(cwd)
        self._max_concurrent = max_concurrent
        self._max_processes = max_processes
        # Set by the server once it is the child subreaper (see proctree); without it orphans
        # are only found through their process group or session.
        self.subreaper = False
        self._live_groups: set[int] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._tracked: list[TrackedCommand] = []
        self._ended: deque[tuple[int, int]] = deque(maxlen=256)
        self._last_end = 0.0
        # Held while a command is spawned and registered, and during each kill round: a kill
        # scan must never see a new leader before it is known, or take it for someone's orphan.
        self._spawn_lock = threading.Lock()
        self._kill_lock: asyncio.Lock | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def live_process_groups(self) -> frozenset[int]:
        """Process group ids (= leader PIDs) of commands whose requests are still open."""
        return frozenset(self._live_groups)

    async def run(self, command: str, timeout_seconds: float) -> CommandResult:
        """Run ``command`` (shlex rules, no shell) for at most ``timeout_seconds``.

        Raises CommandRefused (422: too large to execute; 429: too many commands running).
        """
        self._check_capacity()
        try:
            if len(command) <= _INLINE_SPLIT_CHARS:
                argv = split_command(command)
            else:
                argv = await asyncio.to_thread(split_command, command)
            check_exec_size(argv, self._environment)
        except CommandTooLarge as exc:
            raise CommandRefused(422, f"command too large to execute: {exc}") from None
        except ValueError as exc:
            return _failure(f"cannot parse command: {exc}")
        if not argv:
            return _failure("command is empty")
        self._check_capacity()  # again: the split may have waited for a thread
        loop = asyncio.get_running_loop()
        stdout_read, stdout_write = os.pipe2(os.O_CLOEXEC)
        stderr_read, stderr_write = os.pipe2(os.O_CLOEXEC)
        try:
            with self._spawn_lock:
                process = subprocess.Popen(
                    argv,
                    cwd=self._cwd,
                    env=self._environment,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout_write,
                    stderr=stderr_write,
                    start_new_session=True,
                )
                tracked = self._track(process.pid, loop.time() + timeout_seconds)
        except OSError as exc:
            os.close(stdout_read)
            os.close(stderr_read)
            if exc.errno == errno.E2BIG:
                raise CommandRefused(422, "command too large to execute: the kernel refused the argument "
                                          "list as too long (E2BIG)") from None
            return _failure(f"[Errno {exc.errno}] {exc.strerror}: {argv[0][:200]!r}")
        except ValueError as exc:  # e.g. an argument with an embedded NUL byte
            os.close(stdout_read)
            os.close(stderr_read)
            return _failure(str(exc))
        finally:
            # The child has its copies; the parent must not keep the write ends open or EOF never comes.
            os.close(stdout_write)
            os.close(stderr_write)
        # start_new_session makes the child a session and group leader: its pgid is its pid.
        group = process.pid
        self._live_groups.add(group)
        reply_limit = 2 * self._max_output_bytes
        stdout = _CappedBuffer(self._max_output_bytes, reply_limit)
        stderr = _CappedBuffer(self._max_output_bytes, reply_limit)
        readers = [_PipeReader(loop, stdout_read, stdout), _PipeReader(loop, stderr_read, stderr)]
        pipes_closed = [reader.closed for reader in readers]
        finished = asyncio.ensure_future(_settle(process, pipes_closed))
        try:
            done, _ = await asyncio.wait({finished}, timeout=timeout_seconds)
            if done and not tracked.over_limit:
                return await _result(stdout, stderr, process.returncode or 0)
            if tracked.over_limit:
                await self._kill(tracked, finished)
                message = (
                    f"Failed to execute command: Command {_shown(argv)} started more than {self._max_processes} "
                    "processes (SANDBOX_MAX_COMMAND_PROCESSES); all its processes were killed"
                )
                return await _result(stdout, stderr, PROCESS_LIMIT_EXIT_CODE, message)
            await self._kill(tracked, finished)
            message = (
                f"Failed to execute command: Command {_shown(argv)} timed out after {timeout_seconds:g} seconds; "
                "it and every process it started were killed"
            )
            return await _result(stdout, stderr, TIMEOUT_EXIT_CODE, message, timed_out=True)
        except asyncio.CancelledError:
            # Request or server shutdown: never leave the command running unsupervised.
            await asyncio.shield(self._kill(tracked, finished))
            raise
        finally:
            for reader in readers:
                reader.close()
            self._live_groups.discard(group)
            # Background processes it left behind live on until its deadline (see _watch).
            tracked.running = False
            if process.returncode is None:
                reaping = loop.create_task(_reap_eventually(process))
                # The loop only keeps weak references to tasks; hold this one until it is done.
                self._background.add(reaping)
                reaping.add_done_callback(self._background.discard)

    def kill_all(self) -> None:
        """SIGKILL every process of every tracked command (used at shutdown; blocks briefly)."""
        if self._watcher is not None:
            self._watcher.cancel()
        for group in list(self._live_groups):
            kill_process_group(group)
        targets = frozenset(command.id for command in self._tracked)
        if targets:
            proctree.kill_commands(os.getpid(), self._tracked_now, list(self._ended), targets,
                                   lock=self._spawn_lock, sessions=not self.subreaper)

    # -- limits and process trees -----------------------------------------------------------
    def _check_capacity(self) -> None:
        if len(self._live_groups) >= self._max_concurrent:
            raise CommandRefused(429, f"too many commands running: {self._max_concurrent} at once "
                                      "(SANDBOX_MAX_CONCURRENT_COMMANDS); retry when one has finished")

    def _tracked_now(self) -> list[TrackedCommand]:
        return list(self._tracked)

    def _track(self, leader: int, deadline: float) -> TrackedCommand:
        start = proctree.process_start(leader)
        tracked = TrackedCommand(leader=leader, start=start if start is not None else proctree.now_ticks() - 1,
                                 deadline=deadline)
        self._tracked.append(tracked)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return tracked

    async def _kill(self, tracked: TrackedCommand, finished: asyncio.Future[None]) -> None:
        """Kill the command's group at once, then its whole tree; give the exit and the pipe EOFs
        a moment to arrive (collecting the last output)."""
        kill_process_group(tracked.leader)
        await self._end([tracked])
        done, _ = await asyncio.wait({finished}, timeout=_PIPE_GRACE_AFTER_KILL_SECONDS)
        if not done:
            finished.cancel()

    async def _end(self, commands: list[TrackedCommand], kill: bool = True) -> None:
        """Kill (unless ``kill`` is False: nothing left) and forget ``commands``."""
        if self._kill_lock is None:
            self._kill_lock = asyncio.Lock()
        async with self._kill_lock:
            targets = [command for command in commands if not command.ended]
            if kill:
                ids = frozenset(command.id for command in targets)
                await asyncio.to_thread(proctree.kill_commands, os.getpid(), self._tracked_now, list(self._ended),
                                        ids, lock=self._spawn_lock, sessions=not self.subreaper)
            end = proctree.now_ticks() + _ENDED_SLACK_TICKS
            for command in targets:
                command.ended = True
                self._tracked.remove(command)
                self._ended.append((command.start, end))
            self._last_end = time.monotonic()

    async def _watch(self) -> None:
        """While commands are tracked: enforce the process cap, end commands whose processes
        are all gone, kill background processes at their command's deadline and stragglers."""
        loop = asyncio.get_running_loop()
        while self._tracked or time.monotonic() - self._last_end < 2 * WATCH_INTERVAL_SECONDS:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            try:
                processes = await asyncio.to_thread(proctree.read_processes)
                commands = self._tracked_now()
                owners = proctree.attribute(processes, os.getpid(), commands, list(self._ended),
                                            sessions=not self.subreaper)
                counts = proctree.process_counts(processes, owners)
                now = loop.time()
                # Background processes left by a finished command are capped as well.
                over = [c for c in commands if counts.get(c.id, 0) > self._max_processes]
                for command in over:
                    command.over_limit = True
                due = [c for c in commands if not c.running and now >= c.deadline]
                gone = [c for c in commands if not c.running and now < c.deadline and not counts.get(c.id)]
                stragglers = counts.get(proctree.ENDED, 0) > 0
                if over or due or stragglers:
                    await self._end(over + due)
                if gone:
                    await self._end(gone, kill=False)
            except Exception:  # the watcher must survive anything /proc throws at it
                logger.exception("watching command processes failed")


def kill_process_group(group: int) -> None:
    """SIGKILL a process group, ignoring one that is already gone."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        logger.warning("not permitted to kill process group %d", group)


async def _settle(process: subprocess.Popen[bytes], pipes_closed: list[asyncio.Future[None]]) -> None:
    """Done means: nothing holds the output pipes open any more and the command has exited."""
    await asyncio.gather(*pipes_closed)
    # The exit usually lands together with the EOF; a command that closed its output early is
    # polled with a growing interval.
    delay = 0.0005
    while process.poll() is None:
        await asyncio.sleep(delay)
        delay = min(delay * 2, _EXIT_POLL_MAX_SECONDS)


async def _reap_eventually(process: subprocess.Popen[bytes]) -> None:
    """Collect a killed command's exit status in the background so it does not stay a zombie."""
    for _ in range(int(_REAP_PATIENCE_SECONDS / _EXIT_POLL_MAX_SECONDS)):
        if process.poll() is not None:
            return
        await asyncio.sleep(_EXIT_POLL_MAX_SECONDS)
    logger.warning("command process %d did not exit after SIGKILL", process.pid)


async def _result(stdout: _CappedBuffer, stderr: _CappedBuffer, exit_code: int, message: str | None = None,
                  timed_out: bool = False) -> CommandResult:
    """The reply for the collected output; fitting large output to the reply budget (decode and
    escape megabytes) happens in a worker thread, off the event loop."""
    def build() -> CommandResult:
        errors = stderr.text()
        return CommandResult(stdout.text(), _append_line(errors, message) if message else errors, exit_code, timed_out)

    if len(stdout.data) + len(stderr.data) <= _INLINE_RESULT_BYTES:
        return build()
    return await asyncio.to_thread(build)


def _shown(argv: list[str]) -> str:
    """The argv for a message, shortened: it may be two megabytes long."""
    text = repr(argv)
    return text if len(text) <= 300 else f"{text[:280]}... ({len(argv)} arguments)"


def _append_line(text: str, line: str) -> str:
    separator = "\n" if text and not text.endswith("\n") else ""
    return f"{text}{separator}{line}"


def _failure(reason: str) -> CommandResult:
    """The contract's shape for a command that could not be started."""
    return CommandResult(stdout="", stderr=f"Failed to execute command: {reason}", exit_code=1)
