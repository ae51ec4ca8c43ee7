"""split_command: the same words and errors as shlex.split, in linear time, within exec limits."""

from __future__ import annotations

import random
import shlex
import time

import pytest

from sandbox_runtime.argv import MAX_ARGUMENT_BYTES, CommandTooLarge, check_exec_size, split_command

MIB = 1024 * 1024


def _shlex(command: str) -> list[str] | str:
    try:
        return shlex.split(command)
    except ValueError as exc:
        return f"error: {exc}"


def _ours(command: str) -> list[str] | str:
    try:
        return split_command(command)
    except ValueError as exc:
        return f"error: {exc}"


@pytest.mark.parametrize("command", [
    "", "   ", "a", "a b", " a\tb\nc\r d ", "''", '""', "a''", "''a", "'' ''", "a'b c'd", 'a"b c"d',
    "'a\\b'", '"a\\b"', '"a\\"b"', '"a\\\\b"', '"\\$x"', "a\\ b", "\\\\", "\\'", '\\"', "a\\\nb",
    "'unclosed", '"unclosed', "trailing\\", '"esc at end\\', "'x\\", "é ü 文件", "a#b #c", "$HOME ; | && >",
    '"a\\\\\\"b"', "'\"'", "\"'\"", "x\"\"y", "\t", "\\\n",
])
def test_same_words_and_errors_as_shlex(command: str) -> None:
    assert _ours(command) == _shlex(command)


def test_same_as_shlex_on_random_strings() -> None:
    rng = random.Random(11)
    alphabet = "ab '\"\\\t\n#$é"
    for _ in range(20000):
        command = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 14)))
        assert _ours(command) == _shlex(command), repr(command)


@pytest.mark.parametrize("command", [
    "a" * (4 * MIB), "'" + "a b " * MIB + "'", '"' + "\\\\" * (2 * MIB) + '"', "x " * (2 * MIB),
], ids=["word", "single-quoted", "escapes", "many-words"])
def test_four_mebibytes_are_handled_in_linear_time(command: str) -> None:
    started = time.perf_counter()
    with pytest.raises(CommandTooLarge):
        split_command(command)
    assert time.perf_counter() - started < 2.0  # shlex: minutes


def test_argument_at_the_kernel_limit_is_accepted_and_one_byte_more_is_not() -> None:
    assert split_command("echo " + "a" * MAX_ARGUMENT_BYTES) == ["echo", "a" * MAX_ARGUMENT_BYTES]
    with pytest.raises(CommandTooLarge, match="argument 1 is more than 131071 bytes"):
        split_command("echo " + "a" * (MAX_ARGUMENT_BYTES + 1))
    # The limit is in encoded bytes, not characters.
    with pytest.raises(CommandTooLarge):
        split_command("echo " + "é" * (MAX_ARGUMENT_BYTES // 2 + 1))


def test_exec_size_counts_arguments_and_environment() -> None:
    check_exec_size(["echo", "x" * 1000], {"PATH": "/bin"})
    with pytest.raises(CommandTooLarge, match="ARG_MAX"):
        check_exec_size(["echo"] + ["b" * 60000] * 40, {})
    with pytest.raises(CommandTooLarge):
        check_exec_size(["echo"], {"BIG": "v" * (3 * MIB)})
