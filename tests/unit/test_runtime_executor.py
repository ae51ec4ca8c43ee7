"""CommandRunner in-process: no shell, exit codes, output caps (raw and escaped), group kill on
timeout, minimal environment, refusals (too large, too many); proctree's attribution rules."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from sandbox_runtime.executor import TIMEOUT_EXIT_CODE, CommandRefused, CommandResult, CommandRunner
from sandbox_runtime.proctree import ENDED, Proc, TrackedCommand, attribute, process_counts


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
    # Each NUL is six bytes in the reply (\\u0000): the 2 x cap reply budget keeps 33 of them.
    assert result.stdout.startswith("\0" * 33) and not result.stdout.startswith("\0" * 34)
    assert "[output truncated: 9967 more bytes not shown; the limit is 100 bytes per stream]" in result.stdout


def test_text_output_within_the_cap_is_never_cut_for_escaping(tmp_path: Path) -> None:
    # Newlines and quotes escape to two bytes; non-ASCII text travels as UTF-8, unescaped.
    result = run(tmp_path, "printf '\\n\\n\\n\\n\\n\\t\\t\\t\\t\\t'", cap=10)
    assert result.stdout == "\n" * 5 + "\t" * 5
    assert run(tmp_path, "printf 'ééééé'", cap=10).stdout == "ééééé"


@pytest.mark.parametrize("command", ["head -c 50000 /dev/zero", "sh -c 'head -c 50000 /dev/urandom'",
                                     "printf '\\377\\377\\377\\377\\377\\377\\377\\377'"])
def test_reply_size_is_bounded_once_escaped(tmp_path: Path, command: str) -> None:
    result = run(tmp_path, command, cap=1000)
    escaped = len(json.dumps(result.as_json(), ensure_ascii=False).encode())  # the reply is UTF-8 JSON
    assert escaped <= 2 * 2 * 1000 + 400, f"{escaped} reply bytes for a 1000-byte cap"


def test_commands_get_a_minimal_environment(tmp_path: Path) -> None:
    os.environ["SANDBOX_TEST_SECRET"] = "leak"
    try:
        lines = run(tmp_path, "env").stdout.splitlines()
    finally:
        del os.environ["SANDBOX_TEST_SECRET"]
    assert sorted(line.split("=", 1)[0] for line in lines) == ["HOME", "LANG", "PATH", "PYTHONUNBUFFERED"]
    assert f"HOME={tmp_path}" in lines and "LANG=C.UTF-8" in lines


def test_too_large_commands_are_refused_not_started(tmp_path: Path) -> None:
    for command in ("echo " + "a" * 200_000, "echo " + " ".join(["b" * 60000] * 40)):
        with pytest.raises(CommandRefused) as refused:
            run(tmp_path, command)
        assert refused.value.status == 422 and "too large" in refused.value.detail


def test_commands_over_the_concurrency_cap_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        runner = CommandRunner(str(tmp_path), 1024, max_concurrent=2)
        slow = [asyncio.create_task(runner.run("sleep 0.5", 10)) for _ in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(CommandRefused) as refused:
            await runner.run("echo third", 10)
        assert refused.value.status == 429 and "SANDBOX_MAX_CONCURRENT_COMMANDS" in refused.value.detail
        assert [result.exit_code for result in await asyncio.gather(*slow)] == [0, 0]
        assert (await runner.run("echo again", 10)).stdout == "again\n"

    asyncio.run(scenario())


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


# --- proctree.attribute: who may own which process --------------------------------------------

SERVER = 100


def _proc(pid: int, ppid: int, start: int, state: str = "S") -> Proc:
    return Proc(pid=pid, ppid=ppid, pgid=pid, sid=pid, state=state, start=start)


def test_descendants_of_a_leader_belong_to_its_command_only() -> None:
    command = TrackedCommand(leader=200, start=50, deadline=0)
    other = TrackedCommand(leader=300, start=10, deadline=0)
    processes = {p.pid: p for p in [_proc(200, SERVER, 50), _proc(201, 200, 60), _proc(202, 201, 70),
                                    _proc(300, SERVER, 10), _proc(999, 1, 5)]}
    owners = attribute(processes, SERVER, [command, other], [])
    assert owners[201] == owners[202] == owners[200] == {command.id}
    assert owners[300] == {other.id} and 999 not in owners


def test_a_recycled_leader_pid_is_not_the_leader() -> None:
    command = TrackedCommand(leader=200, start=50, deadline=0)
    owners = attribute({200: _proc(200, SERVER, 80)}, SERVER, [command], [])
    assert owners[200] == {command.id}  # an orphan started after the command: a candidate, not exact
    assert attribute({200: _proc(200, SERVER, 40)}, SERVER, [command], []) == {200: frozenset()}


def test_orphans_may_belong_to_every_command_running_when_they_started() -> None:
    early = TrackedCommand(leader=200, start=10, deadline=0)
    late = TrackedCommand(leader=300, start=50, deadline=0)
    processes = {p.pid: p for p in [_proc(400, SERVER, 30), _proc(401, 400, 31), _proc(500, SERVER, 60),
                                    _proc(600, SERVER, 5), _proc(700, SERVER, 95)]}
    owners = attribute(processes, SERVER, [early, late], [(80, 100)])
    assert owners[400] == owners[401] == {early.id}
    assert owners[500] == {early.id, late.id}
    assert owners[600] == frozenset()  # started before any command: left alone
    assert owners[700] == {early.id, late.id, ENDED}


def test_process_counts_skip_zombies_and_count_every_candidate() -> None:
    early = TrackedCommand(leader=200, start=10, deadline=0)
    late = TrackedCommand(leader=300, start=50, deadline=0)
    processes = {p.pid: p for p in [_proc(200, SERVER, 10), _proc(201, 200, 11, "Z"), _proc(300, SERVER, 50),
                                    _proc(500, SERVER, 60)]}
    counts = process_counts(processes, attribute(processes, SERVER, [early, late], []))
    assert (counts[early.id], counts[late.id]) == (2, 2)


def test_without_subreaper_the_session_and_group_are_the_fallback() -> None:
    command = TrackedCommand(leader=200, start=10, deadline=0)
    stray = Proc(pid=800, ppid=1, pgid=200, sid=200, state="S", start=20)
    owners = attribute({200: _proc(200, SERVER, 10), 800: stray}, SERVER, [command], [], sessions=True)
    assert owners[800] == {command.id}
    assert 800 not in attribute({200: _proc(200, SERVER, 10), 800: stray}, SERVER, [command], [])
