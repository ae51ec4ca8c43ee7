"""Unit tests for sandbox_router.response_head: the response head the client gets from the
sandbox's status and headers, and the body framing chosen with it (pure, no sockets)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "router"))

from sandbox_router.request_head import HOP_BY_HOP  # noqa: E402
from sandbox_router.response_head import OUT_CHUNKED, OUT_NONE, OUT_RAW, RESPONSE_DROP, response_head  # noqa: E402

CL2 = [(b"Content-Length", b"2")]
CHUNKED = [(b"Transfer-Encoding", b"chunked")]


def reframe(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None, *, reason: bytes = b"OK",
            head: bool = False, version: str = "1.1", keep_alive: bool = True) -> tuple[bytes, int, bool, bool]:
    return response_head(status, reason, CL2 if headers is None else headers, head, version, keep_alive)


# -- framing: (status, headers, HEAD request, client version, keep-alive) -> head, mode, close-delimited, keep-alive
FRAMING = [
    # Content-Length: relayed verbatim, the connection stays open.
    (200, CL2, False, "1.1", True, b"Content-Length: 2\r\n", OUT_RAW, False, True),
    (200, [(b"content-length", b"2")], False, "1.1", True, b"Content-Length: 2\r\n", OUT_RAW, False, True),
    (200, CL2, False, "1.0", True, b"Content-Length: 2\r\nConnection: keep-alive\r\n", OUT_RAW, False, True),
    (200, CL2, False, "1.1", False, b"Content-Length: 2\r\nConnection: close\r\n", OUT_RAW, False, False),
    (200, CL2, False, "1.0", False, b"Content-Length: 2\r\nConnection: close\r\n", OUT_RAW, False, False),
    # Chunked from the sandbox: re-chunked for HTTP/1.1, relayed raw and closed for HTTP/1.0.
    (200, CHUNKED, False, "1.1", True, b"Transfer-Encoding: chunked\r\n", OUT_CHUNKED, False, True),
    (200, CHUNKED, False, "1.0", True, b"Connection: close\r\n", OUT_RAW, False, False),
    (200, [(b"transfer-encoding", b"gzip, chunked")], False, "1.1", True, b"Transfer-Encoding: chunked\r\n",
     OUT_CHUNKED, False, True),
    # Both (llhttp refuses this before): chunked wins, the length is dropped.
    (200, CL2 + CHUNKED, False, "1.1", True, b"Transfer-Encoding: chunked\r\n", OUT_CHUNKED, False, True),
    # Neither: the body ends when the sandbox closes.
    (200, [], False, "1.1", True, b"Transfer-Encoding: chunked\r\n", OUT_CHUNKED, True, True),
    (200, [], False, "1.1", False, b"Transfer-Encoding: chunked\r\nConnection: close\r\n", OUT_CHUNKED, True, False),
    (200, [], False, "1.0", True, b"Connection: close\r\n", OUT_RAW, True, False),
    # No body at all: HEAD, 204, 304 (a Content-Length is passed on, nothing else is added).
    (200, [(b"Content-Length", b"10")], True, "1.1", True, b"Content-Length: 10\r\n", OUT_NONE, False, True),
    (200, [], True, "1.1", True, b"", OUT_NONE, False, True),
    (200, CHUNKED, True, "1.1", True, b"", OUT_NONE, False, True),
    (200, [], True, "1.0", True, b"Connection: keep-alive\r\n", OUT_NONE, False, True),
    (204, [], False, "1.1", True, b"", OUT_NONE, False, True),
    (204, CHUNKED, False, "1.1", False, b"Connection: close\r\n", OUT_NONE, False, False),
    (304, [(b"Content-Length", b"10")], False, "1.1", True, b"Content-Length: 10\r\n", OUT_NONE, False, True),
    (304, [], False, "1.0", True, b"Connection: keep-alive\r\n", OUT_NONE, False, True),
    (205, [], False, "1.1", True, b"Transfer-Encoding: chunked\r\n", OUT_CHUNKED, True, True),
]


@pytest.mark.parametrize(("status", "headers", "head", "version", "keep_alive", "framing", "out_mode",
                          "close_delimited", "keeps"), FRAMING)
def test_framing(status: int, headers: list[tuple[bytes, bytes]], head: bool, version: str, keep_alive: bool,
                 framing: bytes, out_mode: int, close_delimited: bool, keeps: bool) -> None:
    raw, mode, delimited, kept = reframe(status, headers, reason=b"R", head=head, version=version,
                                         keep_alive=keep_alive)
    assert raw == b"HTTP/1.1 %d R\r\n" % status + framing + b"\r\n"
    assert (mode, delimited, kept) == (out_mode, close_delimited, keeps)


@pytest.mark.parametrize(("status", "reason", "line"), [
    (200, b"OK", b"HTTP/1.1 200 OK\r\n"),
    (200, b"", b"HTTP/1.1 200 OK\r\n"),
    (404, b"", b"HTTP/1.1 404 Not Found\r\n"),
    (201, b"Made It", b"HTTP/1.1 201 Made It\r\n"),
    (599, b"", b"HTTP/1.1 599 Unknown\r\n"),
    (299, b"Odd", b"HTTP/1.1 299 Odd\r\n"),
])
def test_status_line_is_always_http11_with_the_sandbox_reason_or_the_standard_one(
        status: int, reason: bytes, line: bytes) -> None:
    assert reframe(status, reason=reason)[0].startswith(line)


def test_headers_keep_their_order_case_and_repeats_and_the_length_goes_last() -> None:
    headers = [(b"content-length", b"1"), (b"Set-Cookie", b"a=1"), (b"x-lower", b"v"), (b"Set-Cookie", b"b=2")]
    assert reframe(headers=headers)[0] == (b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nx-lower: v\r\nSet-Cookie: b=2\r\n"
                                           b"Content-Length: 1\r\n\r\n")


@pytest.mark.parametrize("name", sorted(RESPONSE_DROP))
@pytest.mark.parametrize("case", [bytes.lower, bytes.upper, bytes.title])
def test_hop_by_hop_headers_never_reach_the_client(name: bytes, case) -> None:  # type: ignore[no-untyped-def]
    raw = reframe(headers=[(case(name), b"from-the-sandbox"), (b"X-Keep", b"1")] + CL2)[0]
    assert b"from-the-sandbox" not in raw
    assert b"X-Keep: 1\r\n" in raw


def test_the_dropped_set_is_hop_by_hop_plus_content_length() -> None:
    assert RESPONSE_DROP == HOP_BY_HOP | {b"content-length"}


@pytest.mark.parametrize(("connection", "kept"), [
    ([b"x-hop, close"], [b"X-Keep", b"X-Other"]),
    ([b"close"], [b"X-Keep", b"X-Hop", b"X-Other", b"x-hop"]),
    ([b"Keep-Alive, Upgrade, , close"], [b"X-Keep", b"X-Hop", b"X-Other", b"x-hop"]),
    ([b" X-HOP ", b"x-other"], [b"X-Keep"]),  # tokens of several Connection headers add up
    ([b"X-Keep,X-Hop,X-Other"], []),
    ([b"content-length"], [b"X-Keep", b"X-Hop", b"X-Other", b"x-hop"]),  # the length is re-added anyway
])
def test_headers_nominated_by_connection_are_dropped(connection: list[bytes], kept: list[bytes]) -> None:
    headers = [(b"Connection", value) for value in connection]
    headers += [(b"X-Keep", b"1"), (b"X-Hop", b"2"), (b"X-Other", b"3"), (b"x-hop", b"4")] + CL2
    raw = reframe(headers=headers)[0]
    names = [line.split(b": ", 1)[0] for line in raw.split(b"\r\n")[1:] if b": " in line]
    assert names == kept + [b"Content-Length"]


def test_101_switches_to_a_websocket_tunnel() -> None:
    headers = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade, X-Hop"), (b"X-Hop", b"1"),
               (b"Sec-WebSocket-Accept", b"zz"), (b"Content-Length", b"5")]
    raw = response_head(101, b"Switching Protocols", headers, False, "1.1", True)[0]
    assert raw == (b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: zz\r\n"
                   b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert response_head(101, b"", [], False, "1.0", False)[0] == (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")


def test_the_routers_server_timing_goes_last_before_the_blank_line() -> None:
    head, _, _, _ = response_head(200, b"OK", [(b"Server-Timing", b"runtime;dur=1")] + CL2, False, "1.1", True,
                                  b"router;dur=2.000")
    assert head.endswith(b"Content-Length: 2\r\nServer-Timing: router;dur=2.000\r\n\r\n")
    assert head.count(b"Server-Timing") == 2  # the sandbox's own entry is relayed too
    assert b"Server-Timing" not in reframe()[0]


def test_server_timing_value_names_the_three_parts_in_milliseconds() -> None:
    from sandbox_router.timing import server_timing

    assert server_timing(1.0, 0.0008, False, 1.001, 1.0615) == \
        b"router;dur=61.500, connect;dur=0.800;desc=new, sandbox;dur=60.500"
    assert b"desc=pooled" in server_timing(0.0, 0.0, True, 0.0, 0.001)
