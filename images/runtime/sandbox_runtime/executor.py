"""Running one client command: no shell, own process group, bounded time and output.

The command string is split with ``shlex`` and executed directly, so pipes, redirects and ``&&``
are ordinary arguments unless the client explicitly asks for ``sh -c "..."``. Each command gets a
new session (and so a new process group); when the timeout fires the whole group is killed with
SIGKILL, which also takes down children the command started. Output is read concurrently while
the command runs and capped per stream; the rest is drained and counted so the command never
blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import subprocess
from dataclasses import dataclass, field

logger = logging.getLogger("sandbox_runtime.executor")

TIMEOUT_EXIT_CODE = 124  # the convention of coreutils timeout(1); timed_out is set as well
# After SIGKILL the pipes close as soon as the group is gone; only processes that escaped the
# group (setsid) can keep them open, and they are not worth waiting for.
_PIPE_GRACE_AFTER_KILL_SECONDS = 0.5
_READ_CHUNK = 64 * 1024
_EXIT_POLL_MAX_SECONDS = 0.05
_REAP_PATIENCE_SECONDS = 60.0


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
    """Keeps the first ``limit`` bytes of a stream and counts the rest."""

    limit: int
    data: bytearray = field(default_factory=bytearray)
    omitted: int = 0

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.omitted += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        decoded = self.data.decode("utf-8", errors="replace")
        if self.omitted:
            decoded += f"\n[output truncated: {self.omitted} more bytes not shown; the limit is {self.limit} bytes per stream]\n"
        return decoded


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
    """Starts commands and remembers the live process groups so shutdown can kill them.

    Processes are started with ``subprocess.Popen`` (vfork/exec: about a millisecond, where
    uvloop's own spawn takes 5-15 ms here), the read ends of their pipes are watched by the
    running event loop (``add_reader``), and the exit is collected with non-blocking
    ``waitpid`` once both pipes reach EOF. No thread is parked per command and no SIGCHLD
    handler is involved, so it works the same on uvloop and on the standard asyncio loop.
    """

    def __init__(self, cwd: str, max_output_bytes: int) -> None:
        self._cwd = cwd
        self._max_output_bytes = max_output_bytes
        self._live_groups: set[int] = set()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def live_process_groups(self) -> frozenset[int]:
        """Process group ids (= leader PIDs) of commands that are still running."""
        return frozenset(self._live_groups)

    async def run(self, command: str, timeout_seconds: float) -> CommandResult:
        """Run ``command`` (shlex-split, no shell) for at most ``timeout_seconds``."""
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            return _failure(f"cannot parse command: {exc}")
        if not argv:
            return _failure("command is empty")
        stdout_read, stdout_write = os.pipe2(os.O_CLOEXEC)
        stderr_read, stderr_write = os.pipe2(os.O_CLOEXEC)
        try:
            process = subprocess.Popen(
                argv,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout_write,
                stderr=stderr_write,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(stdout_read)
            os.close(stderr_read)
            return _failure(f"[Errno {exc.errno}] {exc.strerror}: {argv[0]!r}")
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
        loop = asyncio.get_running_loop()
        stdout, stderr = _CappedBuffer(self._max_output_bytes), _CappedBuffer(self._max_output_bytes)
        readers = [_PipeReader(loop, stdout_read, stdout), _PipeReader(loop, stderr_read, stderr)]
        pipes_closed = [reader.closed for reader in readers]
        finished = asyncio.ensure_future(_settle(process, pipes_closed))
        try:
            done, _ = await asyncio.wait({finished}, timeout=timeout_seconds)
            if done:
                return CommandResult(stdout.text(), stderr.text(), process.returncode or 0)
            await _kill_and_settle(group, finished)
            message = (
                f"Failed to execute command: Command {argv!r} timed out after {timeout_seconds:g} seconds; "
                "its process group was killed"
            )
            errors = stderr.text()
            separator = "\n" if errors and not errors.endswith("\n") else ""
            return CommandResult(stdout.text(), f"{errors}{separator}{message}", TIMEOUT_EXIT_CODE, timed_out=True)
        except asyncio.CancelledError:
            # Request or server shutdown: never leave the command running unsupervised.
            await asyncio.shield(_kill_and_settle(group, finished))
            raise
        finally:
            for reader in readers:
                reader.close()
            self._live_groups.discard(group)
            if process.returncode is None:
                reaping = loop.create_task(_reap_eventually(process))
                # The loop only keeps weak references to tasks; hold this one until it is done.
                self._background.add(reaping)
                reaping.add_done_callback(self._background.discard)

    def kill_all(self) -> None:
        """SIGKILL every live command's process group (used at shutdown)."""
        for group in list(self._live_groups):
            kill_process_group(group)


def kill_process_group(group: int) -> None:
    """SIGKILL a process group, ignoring one that is already gone."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        logger.warning("not permitted to kill process group %d", group)


async def _kill_and_settle(group: int, finished: asyncio.Future[None]) -> None:
    """Kill the group, then give the exit and the pipe EOFs a moment to arrive (collecting the last output)."""
    kill_process_group(group)
    done, _ = await asyncio.wait({finished}, timeout=_PIPE_GRACE_AFTER_KILL_SECONDS)
    if not done:
        # Only a process that left the group (setsid) can still hold the pipes; stop waiting for it.
        finished.cancel()


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


def _failure(reason: str) -> CommandResult:
    """The contract's shape for a command that could not be started."""
    return CommandResult(stdout="", stderr=f"Failed to execute command: {reason}", exit_code=1)
