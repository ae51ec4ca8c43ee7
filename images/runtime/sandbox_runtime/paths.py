"""Confinement of client-supplied paths to the runtime's base directory.

Rules (wire contract of the upstream runtime, plus defence in depth):
- a leading ``/`` is stripped, so ``/etc/passwd`` means ``<base>/etc/passwd`` (as upstream does);
- the joined path is resolved with ``realpath`` (``..`` and every symlink followed) and must stay
  inside the base directory, otherwise the request is refused;
- NUL bytes, other control characters, backslashes and percent-encoded separators, dots, NULs or
  percent signs that survive the server's single URL decoding are refused outright: they have no
  legitimate use in a sandbox path and are the usual ingredients of double-decoding and
  truncation attacks against whatever sits between the client and this server.
"""

from __future__ import annotations

import os
import re

# Percent-escapes still present after the one decoding the HTTP server performs: %2F (/), %5C (\),
# %2E (.), %00 (NUL) and %25 (%, i.e. a double encoding of any of them).
_RESIDUAL_ENCODED = re.compile(r"%(?:2f|5c|2e|00|25)", re.IGNORECASE)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class PathRefused(Exception):
    """A requested path is not allowed; ``reason`` says why (logged, not sent to the client)."""

    def __init__(self, requested: str, reason: str) -> None:
        super().__init__(f"path {requested!r} refused: {reason}")
        self.requested = requested
        self.reason = reason


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
    candidate = os.path.realpath(os.path.join(base_dir, requested.lstrip("/")))
    if not is_inside(base_dir, candidate):
        raise PathRefused(requested, f"resolves to {candidate!r}, outside the base directory")
    return candidate


def is_inside(base_dir: str, candidate: str) -> bool:
    """True when the absolute path ``candidate`` is ``base_dir`` or lies below it."""
    return candidate == base_dir or candidate.startswith(base_dir.rstrip(os.sep) + os.sep)
