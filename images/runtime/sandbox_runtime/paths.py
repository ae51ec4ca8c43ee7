"""Confinement of client-supplied paths to the runtime's base directory.

Rules (wire contract of the upstream runtime, plus defence in depth):
- a leading ``/`` is stripped, so ``/etc/passwd`` means ``<base>/etc/passwd`` (as upstream does);
- the joined path is resolved with ``realpath`` (``..`` and every symlink followed) and must stay
  inside the base directory, otherwise the request is refused;
- NUL bytes, other control characters, backslashes and percent-encoded separators, dots, NULs or
  percent signs that survive the server's single URL decoding are refused outright: they have no
  legitimate use in a sandbox path and are the usual ingredients of double-decoding and
  truncation attacks against whatever sits between the client and this server;
- a resolved path longer than PATH_MAX is refused as too long (400, not 403): no tool in the
  sandbox could use it, and it is what very deep upload paths used to crash on.

The answer is a path *name*; opening it is beneath.py's job, which opens that name relative to a
descriptor of the base directory without following symlinks, so nothing swapped in after this check
can redirect the open.
"""

from __future__ import annotations

import os
import re

# Percent-escapes still present after the one decoding the HTTP server performs: %2F (/), %5C (\),
# %2E (.), %00 (NUL) and %25 (%, i.e. a double encoding of any of them).
_RESIDUAL_ENCODED = re.compile(r"%(?:2f|5c|2e|00|25)", re.IGNORECASE)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
PATH_MAX = 4096  # Linux, including the terminating NUL


class PathRefused(Exception):
    """A requested path is not allowed; ``reason`` says why (logged, not sent to the client).

    ``status`` and ``message`` are the HTTP reply: 403 "Access denied" unless a subclass says otherwise.
    """

    status = 403
    message = "Access denied"

    def __init__(self, requested: str, reason: str) -> None:
        super().__init__(f"path {requested[:200]!r} refused: {reason}")
        self.requested = requested
        self.reason = reason


class PathTooLong(PathRefused):
    """The resolved path is longer than PATH_MAX."""

    status = 400
    message = f"Path too long: at most {PATH_MAX - 1} bytes once joined to the base directory"


def resolve_confined(base_dir: str, requested: str) -> str:
    """Return the absolute, symlink-free path for ``requested`` inside ``base_dir``.

    ``base_dir`` must already be a ``realpath``. Raises PathRefused when the path is malformed or
    would leave the base directory. The returned path may not exist yet.
    """
    if _CONTROL_CHARACTERS.search(requested):
        raise PathRefused(requested, "contains a NUL byte or another control character")
    if "\\" in requested:
        raise PathRefused(requested, "contains a backslash")
    if _RESIDUAL_ENCODED.search(requested):
        raise PathRefused(requested, "contains a percent-encoded separator, dot, NUL or percent sign")
    joined = os.path.join(base_dir, requested.lstrip("/"))
    if len(os.fsencode(joined)) >= PATH_MAX:
        raise PathTooLong(requested, f"longer than {PATH_MAX - 1} bytes")
    candidate = _realpath(requested, joined)
    if not is_inside(base_dir, candidate):
        raise PathRefused(requested, f"resolves to {candidate[:200]!r}, outside the base directory")
    if len(os.fsencode(candidate)) >= PATH_MAX:
        raise PathTooLong(requested, f"resolves to more than {PATH_MAX - 1} bytes")
    return candidate


def _realpath(requested: str, joined: str) -> str:
    """``os.path.realpath``, which raises when an entry changes kind while it resolves (lstat saw
    a symlink, readlink finds a directory): retried, then refused as the attack it usually is."""
    for _ in range(3):
        try:
            return os.path.realpath(joined)
        except OSError:
            continue
    raise PathRefused(requested, "changed while it was being resolved")


def relative_to_base(base_dir: str, resolved: str) -> str:
    """``resolved`` (a result of resolve_confined) relative to ``base_dir``; ``""`` for the base."""
    return "" if resolved == base_dir else resolved[len(base_dir.rstrip(os.sep)) + 1:]


def is_inside(base_dir: str, candidate: str) -> bool:
    """True when the absolute path ``candidate`` is ``base_dir`` or lies below it."""
    return candidate == base_dir or candidate.startswith(base_dir.rstrip(os.sep) + os.sep)
