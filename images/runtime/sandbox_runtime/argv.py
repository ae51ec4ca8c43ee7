"""Turning a command string into an argv: ``shlex.split`` rules in linear time, within exec limits.

``shlex.split`` (POSIX mode, no comments) defines how /execute splits a command, but it grows each
word one character at a time (``token = token + char``), which is quadratic in a word's length: a
single 1 MB word took about 11 s of CPU on the event loop. This module applies the same rules with
one regular expression (possessive quantifiers, so no backtracking) and so takes time linear in
the command's length. The unit tests compare it with ``shlex.split`` on random strings.

It also refuses, before anything is started, what ``execve`` would refuse anyway with E2BIG: an
argument longer than the kernel's per-argument limit, or an argument list plus environment larger
than ``ARG_MAX``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

# Linux: MAX_ARG_STRLEN is 32 pages (131072 bytes on 4 KiB pages) including the terminating NUL.
MAX_ARGUMENT_BYTES = 32 * 4096 - 1
_POINTER_BYTES = 8

# Whitespace is shlex's (space, tab, CR, LF). A word is a run of pieces: plain characters, a
# single-quoted string, a double-quoted string (where a backslash escapes anything for the purpose
# of finding the closing quote; which escapes are then removed is decided in _unescape_double) or
# a backslash and the character it escapes.
_PIECES = r"""
      (?P<plain>[^ \t\r\n'"\\]++)
    | '(?P<single>[^']*+)'
    | "(?P<double>(?:[^"\\]++|\\.)*+)"
    | \\(?P<escaped>.)
"""
_PIECE = re.compile(_PIECES, re.VERBOSE | re.DOTALL)
# The same pieces without capturing groups: CPython 3.11's possessive repeat of a group that
# captures can fail with "The span of capturing group is wrong".
_WORD = re.compile("(?:" + re.sub(r"\(\?P<\w+>", "(?:", _PIECES) + ")++", re.VERBOSE | re.DOTALL)
_WHITESPACE = " \t\r\n"
_DOUBLE_QUOTE_ESCAPE = re.compile(r'\\(["\\])')
_OPEN_DOUBLE = re.compile(r'"(?:[^"\\]++|\\.)*+', re.DOTALL)


class CommandTooLarge(ValueError):
    """The command cannot be executed because of its size (what execve reports as E2BIG)."""


def split_command(command: str) -> list[str]:
    """Split like ``shlex.split(command)``; raise ValueError with shlex's messages on bad quoting
    and CommandTooLarge as soon as one argument, or the whole list, is over the exec limits (so
    a command of millions of words is refused before it costs memory)."""
    words: list[str] = []
    budget = _arg_max()
    position = 0
    for match in _WORD.finditer(command):
        if match.start() != position and command[position:match.start()].strip(_WHITESPACE):
            # finditer skipped something no piece matches: an open quote or a trailing backslash.
            raise ValueError(_unmatched(command, position + _first_non_space(command[position:match.start()])))
        position = match.end()
        raw = match.group()
        if len(raw) > 2 * MAX_ARGUMENT_BYTES + 2:
            # Unescaping keeps at least half of the characters: too long whatever it holds.
            raise _argument_too_long(len(words))
        word = raw if raw.isalnum() or not _needs_unquoting(raw) else _unquote(raw)
        size = len(word) if word.isascii() else _encoded_length(word)
        if size > MAX_ARGUMENT_BYTES:
            raise _argument_too_long(len(words))
        budget -= size + 1 + _POINTER_BYTES
        if budget < 0:
            raise CommandTooLarge(
                f"the argument list is longer than the kernel's limit (ARG_MAX) of {_arg_max()} bytes "
                f"after {len(words)} arguments: pass large data in a file (POST /upload) instead"
            )
        words.append(word)
    rest = command[position:]
    if rest.strip(_WHITESPACE):
        raise ValueError(_unmatched(command, position + _first_non_space(rest)))
    return words


def check_exec_size(argv: Sequence[str], environment: Mapping[str, str]) -> None:
    """Raise CommandTooLarge when ``argv`` plus ``environment`` exceed what execve accepts."""
    total = 0
    for argument in argv:
        total += _encoded_length(argument) + 1 + _POINTER_BYTES
    for name, value in environment.items():
        total += _encoded_length(name) + _encoded_length(value) + 2 + _POINTER_BYTES
    limit = _arg_max()
    if total > limit:
        raise CommandTooLarge(
            f"the argument list of {len(argv)} arguments and the environment take {total} bytes; "
            f"the kernel's limit (ARG_MAX) is {limit} bytes: pass large data in a file (POST /upload) instead"
        )


def _needs_unquoting(word: str) -> bool:
    return "'" in word or '"' in word or "\\" in word


def _unquote(word: str) -> str:
    """The word's text once its quotes and escapes are removed."""
    pieces = []
    for piece in _PIECE.finditer(word):
        kind = piece.lastgroup
        text = piece.group(kind)  # type: ignore[arg-type]
        pieces.append(_unescape_double(text) if kind == "double" else text)
    return "".join(pieces)


def _first_non_space(text: str) -> int:
    return len(text) - len(text.lstrip(_WHITESPACE))


def _argument_too_long(index: int) -> CommandTooLarge:
    return CommandTooLarge(
        f"argument {index} is more than {MAX_ARGUMENT_BYTES} bytes long, the kernel's limit for one "
        "argument: pass large data in a file (POST /upload) instead"
    )


def _unmatched(command: str, position: int) -> str:
    """shlex's message for the one thing no piece matches: an open quote or a trailing backslash."""
    if command[position] == "\\":
        return "No escaped character"
    if command[position] == '"' and _OPEN_DOUBLE.match(command, position).end() == len(command) - 1:  # type: ignore[union-attr]
        return "No escaped character"  # '"abc\\' ends inside an escape, as shlex reports it
    return "No closing quotation"


def _unescape_double(text: str) -> str:
    # In double quotes shlex removes a backslash only before '"' or another backslash.
    # split() with the captured character in between is several times faster than sub().
    return "".join(_DOUBLE_QUOTE_ESCAPE.split(text)) if "\\" in text else text


def _encoded_length(text: str) -> int:
    # What the argument costs once encoded for execve; surrogatepass so that a lone surrogate is
    # measured here and reported by Popen, not by this check.
    return len(text.encode("utf-8", "surrogatepass"))


def _arg_max() -> int:
    try:
        value = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        value = -1
    return value if value > 0 else 2 * 1024 * 1024
