"""CommandRunner in-process: no shell, exit codes, output caps, group kill on timeout."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from sandbox_runtime.executor import TIMEOUT_EXIT_CODE, CommandResult, CommandRunner


def run(tmp_path: Path, command: str, timeout: float = 10, cap: int = 1 << 20) -> CommandResult:
    return asyncio.run(CommandRunner(str(tmp_path), cap).run(command, timeout))


def test_stdout_stderr_and_exit_code(tmp_path: Path) -> None:
    result = run(tmp_path, "sh -c 'printf out; printf err >&2; exit 5'")
    assert (result.stdout, result.stderr, result.exit_code, result.timed_out) == ("out", "err", 5, False)
    assert result.as_json() == {"stdout": "out", "stderr": "err", "exit_code": 5}


def test_arguments_are_split_like_a_shell_but_not_interpreted(tmp_path: Path) -> None:
    assert run(tmp_path, "printf '%s|' 'a b' \"c d\" $PATH '>' x").stdout == "a b|c d|$PATH|>|x|"
    assert not (tmp_path / "x").exists()


def test_runs_in_the_given_directory(tmp_path: Path) -> None:
    assert run(tmp_path, "pwd").stdout.strip() == os.path.realpath(tmp_path)


def test_missing_program_and_parse_errors(tmp_path: Path) -> None:
    missing = run(tmp_path, "no-such-program-xyz")
    assert missing.exit_code == 1 and "no-such-program-xyz" in missing.stderr
    assert run(tmp_path, "   ").exit_code == 1
    assert "No closing quotation" in run(tmp_path, "echo 'open").stderr


def test_timeout_kills_group_including_grandchildren(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    result = run(tmp_path, f"sh -c 'sleep 30 & echo $! > {pid_file}; echo partial; sleep 30'", timeout=0.5)
    assert time.monotonic() - started < 3
    assert result.timed_out and result.exit_code == TIMEOUT_EXIT_CODE
    assert result.stdout == "partial\n"
    assert result.as_json()["timed_out"] is True
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 3
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_background_child_holding_pipes_counts_against_timeout(tmp_path: Path) -> None:
    result = run(tmp_path, "sh -c 'sleep 30 & echo started'", timeout=0.5)
    assert result.timed_out and result.stdout == "started\n"


def test_detached_background_child_does_not_block(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run(tmp_path, "sh -c 'sleep 2 >/dev/null 2>&1 & echo done'", timeout=10)
    assert (result.stdout, result.exit_code, result.timed_out) == ("done\n", 0, False)
    assert time.monotonic() - started < 1.5


def test_output_cap_keeps_head_and_counts_rest(tmp_path: Path) -> None:
    result = run(tmp_path, "head -c 10000 /dev/zero", cap=100)
    assert result.stdout.startswith("\0" * 100)
    assert "[output truncated: 9900 more bytes not shown; the limit is 100 bytes per stream]" in result.stdout


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    assert run(tmp_path, "printf '\\377ok'").stdout == "\ufffdok"


def test_cancellation_kills_the_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def scenario() -> None:
        runner = CommandRunner(str(tmp_path), 1024)
        task = asyncio.create_task(runner.run(f"sh -c 'echo $$ > {pid_file}; sleep 30'", 60))
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert runner.live_process_groups == frozenset()

    asyncio.run(scenario())
    shell = int(pid_file.read_text())
    deadline = time.monotonic() + 3
    while _alive(shell) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(shell)


def _alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2:].split()[0] != b"Z"
