"""Flow control of one client connection: when the router stops reading the client socket, and when
it stops reading the sandbox because the client reads too slowly.

Reading the client is paused for any of several reasons at once (the PAUSE_* bit flags) and
resumes only when the last of them is gone. Writing towards the client is paused by asyncio (the
transport's buffer is full); the sandbox connection serving it then stops being read, so neither
direction buffers more than a socket's worth. Only the bookkeeping lives here, as in uvicorn's
FlowControl: the client connection (proxy.py) decides when to pause and resume.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

# Why client reading is paused (bit flags; reading resumes when none is left).
PAUSE_UPSTREAM = 1   # upstream socket buffer is full
PAUSE_PIPELINE = 2   # a complete request is queued behind the active one
PAUSE_PENDING = 4    # body bytes waiting for an upstream connection exceed the window

# How many body (or early tunnel) bytes may wait for an upstream connection before the client
# stops being read.
PENDING_WINDOW = 256 * 1024


class Readable(Protocol):
    """The sandbox connection, as far as client-side writing pauses concern it."""

    def pause_reading(self) -> None:
        """Stop reading (a no-op when already paused or closed)."""

    def resume_reading(self) -> None:
        """Read again (a no-op when not paused or closed)."""


class FlowControl:
    """Pause state of one client socket: why its reading is paused, and whether writing to it is."""

    __slots__ = ("transport", "reasons", "writing_paused", "closed")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.reasons = 0             # PAUSE_* bits currently holding reading back
        self.writing_paused = False  # the client transport's write buffer is full
        self.closed = False          # the socket is closing: never pause or resume its reading again

    def pause_reading(self, reason: int) -> None:
        """Hold client reading back for `reason` (the socket is paused with the first reason)."""
        if not self.reasons and not self.closed:
            self.transport.pause_reading()
        self.reasons |= reason

    def resume_reading(self, reason: int) -> None:
        """Drop `reason`; read the client again when no reason is left."""
        if self.reasons & reason:
            self.reasons &= ~reason
            if not self.reasons and not self.closed:
                self.transport.resume_reading()

    def pause_writing(self, upstream: Readable | None) -> None:
        """The client reads slower than the sandbox answers: stop reading the sandbox."""
        self.writing_paused = True
        if upstream is not None:
            upstream.pause_reading()

    def resume_writing(self, upstream: Readable | None) -> None:
        """The client caught up: read the sandbox again."""
        self.writing_paused = False
        if upstream is not None:
            upstream.resume_reading()
