"""The router's ``Server-Timing`` header (W3C Server Timing): where the time of one exchange
went, from the router's side, so that a caller can split its own latency without access to the
router.

    Server-Timing: router;dur=<ms>, connect;dur=<ms>;desc=pooled|new, sandbox;dur=<ms>

``router``: from the request head read to the sandbox's response head (everything the router
waited for); ``connect``: getting a sandbox connection (a pooled one, or a new one dialled);
``sandbox``: from the request sent to the sandbox's response head. What the router itself spent
is router - connect - sandbox. The sandbox's own entries (the runtime's ``runtime;dur=``) are
relayed as they came. The compiled router (images/router-go/timing.go) writes the same header.
"""

from __future__ import annotations


def server_timing(started: float, connect_seconds: float, pooled: bool, sent_at: float, head_at: float) -> bytes:
    """The header's value for one exchange (``perf_counter`` instants and seconds)."""
    return b"router;dur=%.3f, connect;dur=%.3f;desc=%s, sandbox;dur=%.3f" % (
        (head_at - started) * 1000, connect_seconds * 1000, b"pooled" if pooled else b"new", (head_at - sent_at) * 1000)
