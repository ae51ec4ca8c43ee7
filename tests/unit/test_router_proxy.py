"""Unit tests for sandbox_router.proxy: the protocol state machine driven with fake transports.

No sockets: a ClientConnection and a pooled UpstreamConnection get in-memory transports, raw
bytes are fed in, and the bytes each side would have sent are inspected.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "router"))

from sandbox_router.app import RouterApp  # noqa: E402
from sandbox_router.proxy import ClientConnection  # noqa: E402
from sandbox_router.settings import load_settings  # noqa: E402
from sandbox_router.upstream import UpstreamConnection  # noqa: E402

TOKEN = "unit-test-token-123456"


class FakeTransport(asyncio.Transport):
    """Collects written bytes and records pause/close calls."""

    def __init__(self, peer: tuple[str, int] = ("10.1.1.1", 40000)) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.peer = peer

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, chunks) -> None:  # type: ignore[override]
        for chunk in chunks:
            self.data += chunk

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


@pytest.fixture()
def app() -> Iterator[RouterApp]:
    loop = asyncio.new_event_loop()
    settings = load_settings({"ROUTER_AUTH_TOKEN": TOKEN, "ROUTER_ALLOW_LOOPBACK_POD_IP": "true",
                              "ROUTER_MAX_REQUEST_BODY_BYTES": "1000", "ROUTER_RESOLVER": "dns"})
    yield RouterApp(settings, loop)
    loop.close()


def pooled_upstream(app: RouterApp, port: int = 9000) -> tuple[UpstreamConnection, FakeTransport]:
    conn = UpstreamConnection(app.pool, ("127.0.0.1", port, ""))
    transport = FakeTransport()
    conn.connection_made(transport)
    app.pool.release(conn, app.now)
    return conn, transport


def client(app: RouterApp, peer: tuple[str, int] = ("10.1.1.1", 40000)) -> tuple[ClientConnection, FakeTransport]:
    conn = ClientConnection(app)
    transport = FakeTransport(peer)
    conn.connection_made(transport)
    return conn, transport


def request(target: str = "/run", method: str = "GET", extra: str = "", body: bytes = b"", port: int = 9000) -> bytes:
    head = (f"{method} {target} HTTP/1.1\r\nHost: router\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"X-Sandbox-ID: sbx\r\nX-Sandbox-Pod-IP: 127.0.0.1\r\nX-Sandbox-Port: {port}\r\n{extra}\r\n")
    return head.encode() + body


def test_get_is_forwarded_with_rewritten_head_and_response_relayed(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/a%2Fb?q=1", extra="X-Keep: 1\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"))
    sent = up_transport.take()
    assert sent.startswith(b"GET /a%2Fb?q=1 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n")
    assert b"X-Keep: 1" in sent
    for forbidden in (b"Authorization", b"X-Sandbox", b"X-Drop", b"Connection", b"router"):
        assert forbidden not in sent
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-hop\r\nX-Hop: 1\r\n"
                           b"X-Other: 2\r\n\r\nok")
    reply = transport.take()
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nok")
    assert b"Content-Length: 2" in reply and b"X-Other: 2" in reply and b"X-Hop" not in reply
    assert app.pool.take_idle(("127.0.0.1", 9000, ""), app.now) is upstream  # returned to the pool
    assert not transport.closed


def test_chunked_upstream_response_is_rechunked_and_request_body_streamed(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/echo", "POST", "Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n"))
    conn.data_received(b"2\r\nde\r\n0\r\n\r\n")
    sent = up_transport.take()
    assert b"Transfer-Encoding: chunked" in sent
    assert sent.endswith(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    upstream.data_received(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n")
    reply = transport.take()
    assert reply.startswith(b"HTTP/1.1 201 Created\r\n") and b"Transfer-Encoding: chunked" in reply
    assert reply.endswith(b"4\r\nwxyz\r\n0\r\n\r\n")


def test_pipelined_requests_are_answered_in_order(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/one") + request("/two"))
    assert up_transport.take().startswith(b"GET /one ")
    assert not transport.reading  # the queued request holds reading back
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    assert up_transport.take().startswith(b"GET /two ")
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
    replies = transport.take()
    assert replies.index(b"\r\n\r\n1") < replies.index(b"\r\n\r\n2")
    assert transport.reading


def without_timing(reply: bytes) -> bytes:
    """A reply without the router's Server-Timing field (timing.py), which every relayed response has."""
    return re.sub(rb"Server-Timing: router;[^\r]*\r\n", b"", reply)


def test_head_and_204_have_no_body(app: RouterApp) -> None:
    upstream, _ = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/h", "HEAD"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    reply = without_timing(transport.take())
    assert reply.endswith(b"Content-Length: 10\r\n\r\n")
    assert upstream.closed  # llhttp would wait for 10 bytes, so it is not reused
    upstream2, _ = pooled_upstream(app)
    conn.data_received(request("/n"))
    upstream2.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert without_timing(transport.take()) == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_close_delimited_response_is_completed_on_eof(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/stream"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart1")
    upstream.connection_lost(None)
    reply = transport.take()
    assert b"Transfer-Encoding: chunked" in reply and reply.endswith(b"5\r\npart1\r\n0\r\n\r\n")
    assert app.metrics.stats.by_code == {200: 1}


def test_expect_continue_is_answered_by_the_router(app: RouterApp) -> None:
    _, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/upload", "POST", "Content-Length: 3\r\nExpect: 100-continue\r\n"))
    assert transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.data_received(b"abc")
    sent = up_transport.take()
    assert b"Expect" not in sent and sent.endswith(b"Content-Length: 3\r\n\r\nabc")


def test_streamed_body_over_limit_is_413_and_upstream_dropped(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/up", "POST", "Transfer-Encoding: chunked\r\n"))
    conn.data_received(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
    assert not transport.data
    conn.data_received(b"1\r\ny\r\n")
    reply = transport.take()
    assert reply.startswith(b"HTTP/1.1 413 ") and json.loads(reply.split(b"\r\n\r\n", 1)[1])["detail"]
    assert transport.closed and up_transport.aborted


def test_101_for_plain_request_is_502(app: RouterApp) -> None:
    upstream, _ = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/x"))
    upstream.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    assert transport.take().startswith(b"HTTP/1.1 502 ")


def test_websocket_becomes_a_byte_tunnel(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/ws", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n"
                                            "Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n") + b"early")
    sent = up_transport.take()
    assert b"Connection: Upgrade\r\nUpgrade: websocket\r\n" in sent and b"Sec-WebSocket-Key: abc" in sent
    upstream.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           b"Sec-WebSocket-Accept: zz\r\n\r\nserver-frame")
    reply = transport.take()
    assert reply.startswith(b"HTTP/1.1 101 ") and reply.endswith(b"\r\n\r\nserver-frame")
    assert up_transport.take() == b"early"
    conn.data_received(b"client-frame")
    assert up_transport.take() == b"client-frame"
    upstream.data_received(b"more")
    assert transport.take() == b"more"


def test_backpressure_pauses_the_other_side(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/big"))
    conn.pause_writing()
    assert not up_transport.reading
    conn.resume_writing()
    assert up_transport.reading
    upstream.pause_writing()
    assert not transport.reading
    upstream.resume_writing()
    assert transport.reading


def test_request_timeout_gives_504(app: RouterApp) -> None:
    pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/slow", extra="X-Sandbox-Timeout: 2\r\n"))
    conn.check_timers(app.now + 1)
    assert not transport.data
    conn.check_timers(app.now + 2.5)
    assert transport.take().startswith(b"HTTP/1.1 504 ")


def test_per_client_connection_limit(app: RouterApp) -> None:
    limit = app.settings.max_connections_per_client
    conns = [client(app) for _ in range(limit)]
    assert all(not t.closed for _, t in conns)
    _, refused = client(app)
    assert refused.take().startswith(b"HTTP/1.1 429 ") and refused.closed
    conns[0][0].connection_lost(None)
    _, accepted = client(app)
    assert not accepted.closed


def test_invalid_upstream_response_is_502(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/bad"))
    upstream.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    reply = transport.take()
    assert reply.startswith(b"HTTP/1.1 502 ") and b"invalid HTTP response" in reply
    assert up_transport.aborted and transport.closed


def test_http10_client_gets_close_delimited_body_and_connection_close(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/old").replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    assert up_transport.take().startswith(b"GET /old HTTP/1.1\r\n")  # upstream side is always 1.1
    upstream.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    reply = transport.take()
    assert b"Transfer-Encoding" not in reply and b"Connection: close" in reply
    assert reply.endswith(b"\r\n\r\nabc") and transport.closed


def test_upstream_that_closes_before_answering_is_502(app: RouterApp) -> None:
    upstream, _ = pooled_upstream(app)
    upstream.reused = False  # a fresh connection: nothing to retry
    conn, transport = client(app)
    conn.data_received(request("/x", "POST", "Content-Length: 2\r\n", b"hi"))
    upstream.connection_lost(ConnectionResetError())
    assert transport.take().startswith(b"HTTP/1.1 502 ")
    assert app.metrics.upstream_errors.labels(kind="reset")._value.get() == 1


def test_unknown_method_and_metrics_endpoint(app: RouterApp) -> None:
    conn, transport = client(app)
    conn.data_received(request("/x", "PROPFIND"))
    assert transport.take().startswith(b"HTTP/1.1 405 ")
    conn, transport = client(app)
    conn.data_received(f"GET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    reply = transport.take()
    assert reply.startswith(b"HTTP/1.1 200 ") and b'sandbox_router_requests_total{code="405"} 1.0' in reply


# -- issue 11 item 2: response desync / pool poisoning ------------------------------------------
def test_second_response_after_a_complete_one_poisons_the_connection(app: RouterApp) -> None:
    """A sandbox that sends a second response head right after a complete response must not get
    that head (or its body) delivered to the next request, pipelined or not."""
    fresh, fresh_transport = pooled_upstream(app)
    upstream, up_transport = pooled_upstream(app)  # most recently pooled: handed out first
    conn, transport = client(app)
    conn.data_received(request("/one") + request("/two"))
    assert up_transport.take().startswith(b"GET /one ")
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                           b"HTTP/1.1 200 OK\r\nX-Evil: 1\r\nContent-Length: 100\r\n\r\nEVIL")
    reply = transport.take()
    assert reply.count(b"HTTP/1.1 ") == 1 and reply.endswith(b"\r\n\r\nok"), reply
    assert b"EVIL" not in reply and b"X-Evil" not in reply
    assert upstream.closed, "a connection with bytes after a complete response was kept"
    assert not up_transport.take().startswith(b"GET /two "), "/two was sent on the poisoned connection"
    assert fresh_transport.take().startswith(b"GET /two ")
    fresh.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
    assert transport.take().endswith(b"\r\n\r\ntwo")


def test_poisoned_connection_never_serves_the_next_client(app: RouterApp) -> None:
    """The second head arrives in the same read as the end of the first response; its body
    would arrive later. The next request must get a fresh connection and only its own answer."""
    fresh, fresh_transport = pooled_upstream(app)
    upstream, up_transport = pooled_upstream(app)  # most recently pooled: handed out first
    conn, transport = client(app)
    conn.data_received(request("/one"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                           b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert transport.take().endswith(b"\r\n\r\nok")
    other, other_transport = client(app, ("10.1.1.2", 40001))
    other.data_received(request("/two"))
    if not upstream.closed:
        upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhonest")
    assert fresh_transport.take().startswith(b"GET /two ")
    fresh.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean")
    reply = other_transport.take()
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nclean"), reply
    assert reply.count(b"HTTP/1.1") == 1


def test_garbage_after_a_complete_response_closes_the_connection(app: RouterApp) -> None:
    upstream, _ = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/one"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\x00\x01garbage")
    assert transport.take().endswith(b"\r\n\r\nok") and not transport.closed
    assert upstream.closed


# -- issue 11 item 10: 1xx responses and WebSocket tunnels obey X-Sandbox-Timeout --------------
def test_interim_responses_do_not_stretch_the_request_timeout(app: RouterApp) -> None:
    upstream, _ = pooled_upstream(app)
    conn, transport = client(app)
    now = [app.now]
    conn.clock = lambda: now[0]
    conn.last_activity = now[0]
    conn.data_received(request("/slow", extra="X-Sandbox-Timeout: 2\r\n"))
    for step in range(1, 9):
        now[0] = app.now + step * 0.5
        if not upstream.closed:
            upstream.data_received(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        conn.check_timers(now[0])
    assert transport.take().startswith(b"HTTP/1.1 504 "), "1xx responses kept the request alive"


def test_websocket_tunnel_obeys_x_sandbox_timeout(app: RouterApp) -> None:
    upstream, _ = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/ws", extra="X-Sandbox-Timeout: 2\r\nConnection: Upgrade\r\n"
                                            "Upgrade: websocket\r\nSec-WebSocket-Key: abc\r\n"
                                            "Sec-WebSocket-Version: 13\r\n"))
    upstream.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\n\r\n")
    assert conn.tunnel
    conn.check_timers(conn.last_activity + 1)
    assert not transport.closed
    conn.check_timers(conn.last_activity + 2.5)
    assert transport.closed, "an idle tunnel outlived its X-Sandbox-Timeout"


def test_websocket_tunnel_without_timeout_header_keeps_the_websocket_idle_limit(app: RouterApp) -> None:
    upstream, _ = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/ws", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n"
                                            "Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n"))
    upstream.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\n\r\n")
    conn.check_timers(conn.last_activity + app.settings.proxy_timeout_seconds + 10)
    assert not transport.closed


# -- issue 11 item 4: denial of service without a token -------------------------------------------
def test_connection_that_sends_nothing_gets_the_header_timeout(app: RouterApp) -> None:
    conn, transport = client(app)
    conn.check_timers(conn.last_activity + app.settings.header_timeout_seconds - 1)
    assert not transport.closed
    conn.check_timers(conn.last_activity + app.settings.header_timeout_seconds + 0.5)
    assert transport.closed, "a silent connection was held for the keep-alive timeout"


def test_keep_alive_timeout_applies_after_an_authenticated_request(app: RouterApp) -> None:
    upstream, _ = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/one"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    conn.check_timers(conn.last_activity + app.settings.header_timeout_seconds + 5)
    assert not transport.closed
    conn.check_timers(conn.last_activity + app.settings.keepalive_timeout_seconds + 1)
    assert transport.closed


def test_unauthenticated_healthz_keep_alive_gets_the_header_timeout(app: RouterApp) -> None:
    conn, transport = client(app)
    conn.data_received(b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
    assert transport.take().startswith(b"HTTP/1.1 200 ") and not transport.closed
    conn.check_timers(conn.last_activity + app.settings.header_timeout_seconds + 0.5)
    assert transport.closed


@pytest.mark.parametrize("framing", [b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                                     b"Content-Length: 2147483648\r\n\r\nxxxx"])
def test_healthz_with_a_body_is_answered_and_closed(app: RouterApp, framing: bytes) -> None:
    conn, transport = client(app)
    conn.data_received(b"GET /healthz HTTP/1.1\r\nHost: r\r\n" + framing)
    reply = transport.take()
    assert reply.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in reply
    assert transport.closed, "the router kept reading an unauthenticated body"


def test_full_router_evicts_the_oldest_idle_connection_for_a_new_one() -> None:
    loop = asyncio.new_event_loop()
    try:
        settings = load_settings({"ROUTER_AUTH_TOKEN": TOKEN, "ROUTER_MAX_CONNECTIONS": "4",
                                  "ROUTER_MAX_CONNECTIONS_PER_CLIENT": "2", "ROUTER_RESOLVER": "dns"})
        app = RouterApp(settings, loop)
        held = []
        for index in range(4):
            conn, transport = client(app, (f"10.2.0.{index}", 40000))
            conn.data_received(b"GET / HTTP/1.1\r\nHost: r\r\nX-Slow: ")  # half-sent request
            conn.last_activity = float(index)  # held[0] has been silent longest
            held.append((conn, transport))
        probe, probe_transport = client(app, ("10.9.0.1", 40000))
        assert not probe_transport.closed, probe_transport.take()
        assert held[0][1].closed and not any(t.closed for _, t in held[1:])
        probe.data_received(b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
        assert probe_transport.take().startswith(b"HTTP/1.1 200 ")
        assert len(app.connections) == 4
    finally:
        loop.close()


# -- issue 12: every way the router ends an exchange itself -------------------------------------------
def counted(app: RouterApp) -> dict[str, float]:
    """The refusal and upstream-error counters that are not zero, as "reason=..."/"kind=..."."""
    out = {}
    for family in app.metrics.registry.collect():
        if family.name in ("sandbox_router_rejected", "sandbox_router_upstream_errors"):
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    out.update({f"{key}={value}": sample.value for key, value in sample.labels.items()})
    return out


TOO_MANY_HEADERS = "".join(f"X-H{i}: v\r\n" for i in range(130))
ANSWERS = [
    # (request bytes, status, detail, extra header, counter)
    (request("/x").replace(f"Bearer {TOKEN}".encode(), b"Bearer nope"), 401, "Invalid token.",
     b"WWW-Authenticate: Bearer", "reason=auth"),
    (request("/x").replace(f"Bearer {TOKEN}".encode(), b"Basic x"), 401, "Missing or invalid Authorization header.",
     b"WWW-Authenticate: Bearer", "reason=auth"),
    (request("http://x/"), 400, "Request target must be an origin-form path.", None, "reason=routing"),
    (request("/x", extra="X-Sandbox-Port: 1\r\n"), 400, "Duplicate X-Sandbox-Port header.", None, "reason=routing"),
    (request("/x", port=0), 400, "Invalid port format.", None, "reason=routing"),
    (request("/x", "PROPFIND"), 405, "Method not allowed through the router.", None, "reason=method"),
    (request("/x", extra="Connection: upgrade\r\nUpgrade: h2c\r\n"), 400, "Only WebSocket upgrades are supported.",
     None, "reason=routing"),
    (request("/x", "POST", "Content-Length: 1001\r\n"), 413, "Request body too large.", None,
     "reason=request_too_large"),
    (request("/x", "POST", "Transfer-Encoding: chunked\r\n", b"3e9\r\n" + b"x" * 1001), 413, "Request body too large.",
     None, "reason=request_too_large"),
    (request("/x", extra=TOO_MANY_HEADERS), 431, "Request headers too large.", None,
     "reason=headers_too_large"),
    (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, "Malformed HTTP request: Invalid header token.", None,
     "reason=malformed"),
]


@pytest.mark.parametrize(("raw", "status", "detail", "header", "counter"), ANSWERS)
def test_refusals_answer_json_count_their_reason_and_close(app: RouterApp, raw: bytes, status: int, detail: str,
                                                           header: bytes | None, counter: str) -> None:
    _, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(raw)
    head, body = transport.take().split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 %d " % status) and head.endswith(b"\r\nConnection: close")
    assert json.loads(body) == {"detail": detail}
    assert (header in head.split(b"\r\n")) if header else head.count(b"\r\n") == 3
    assert counted(app) == {counter: 1.0}
    assert app.metrics.stats.by_code == {status: 1}
    assert transport.closed and not transport.aborted and conn.closing
    assert not up_transport.data


def test_header_timeout_is_408_for_the_connection(app: RouterApp) -> None:
    conn, transport = client(app)
    conn.data_received(b"GET /x HTTP/1.1\r\nHost: r\r\n")
    conn.check_timers(app.now + app.settings.header_timeout_seconds + 1)
    head, body = transport.take().split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 ") and json.loads(body) == {"detail": "Timed out reading the request headers."}
    assert counted(app) == {"reason=header_timeout": 1.0} and app.metrics.stats.by_code == {408: 1}
    assert transport.closed and not transport.aborted


def test_a_pipelined_refusal_before_the_response_began_is_answered(app: RouterApp) -> None:
    _, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/one") + request("/two", extra=TOO_MANY_HEADERS))
    assert transport.take().startswith(b"HTTP/1.1 431 ") and transport.closed and not transport.aborted
    assert up_transport.aborted  # /one is given up with its connection
    assert counted(app) == {"reason=headers_too_large": 1.0} and app.metrics.stats.by_code == {431: 1}


@pytest.mark.parametrize("second", [request("/two", extra=TOO_MANY_HEADERS), b"GARBAGE\r\n\r\n"])
def test_a_refusal_after_the_response_began_drops_both_sides(app: RouterApp, second: bytes) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/one"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart")
    assert transport.take().endswith(b"\r\n\r\npart")
    conn.data_received(second)
    assert not transport.data, "an error response was written into a response already under way"
    assert transport.aborted and up_transport.aborted
    assert len(counted(app)) == 1 and app.metrics.stats.by_code == {}


def test_a_body_over_the_limit_during_the_response_drops_both_sides(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/slow", "POST", "Transfer-Encoding: chunked\r\n"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart")
    assert transport.take().endswith(b"\r\n\r\npart")
    conn.data_received(b"3e9\r\n" + b"x" * 1001)
    assert not transport.data and transport.aborted and up_transport.aborted
    assert counted(app) == {"reason=request_too_large": 1.0} and app.metrics.stats.by_code == {}


def test_a_pipelined_body_over_the_limit_is_not_written_into_the_response_before_it(app: RouterApp) -> None:
    upstream, up_transport = pooled_upstream(app)
    conn, transport = client(app)
    conn.data_received(request("/one"))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart")
    assert transport.take().endswith(b"\r\n\r\npart")
    conn.data_received(request("/two", "POST", "Transfer-Encoding: chunked\r\n") + b"3e9\r\n" + b"x" * 1001)
    assert not transport.data, "the 413 of /two was written into the middle of /one's response"
    assert transport.aborted and up_transport.aborted


@pytest.mark.parametrize(("response", "kind"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000, "response_too_large"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart", "reset_mid_response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart", "timeout_mid_response"),
])
def test_upstream_failures_mid_response_drop_both_sides(response: bytes, kind: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        settings = load_settings({"ROUTER_AUTH_TOKEN": TOKEN, "ROUTER_ALLOW_LOOPBACK_POD_IP": "true",
                                  "ROUTER_MAX_RESPONSE_BODY_BYTES": "4096", "ROUTER_RESOLVER": "dns"})
        app = RouterApp(settings, loop)
        upstream, up_transport = pooled_upstream(app)
        conn, transport = client(app)
        conn.data_received(request("/x", extra="X-Sandbox-Timeout: 2\r\n"))
        upstream.data_received(response)
        if kind == "reset_mid_response":
            upstream.connection_lost(ConnectionResetError())
        elif kind == "timeout_mid_response":
            conn.check_timers(conn.last_activity + 3)
        assert transport.aborted and up_transport.aborted is (kind != "reset_mid_response")  # a reset one is gone
        assert b"HTTP/1.1 5" not in transport.take()
        assert counted(app) == {f"kind={kind}": 1.0} and app.metrics.stats.by_code == {}
    finally:
        loop.close()


@pytest.mark.parametrize(("raw", "connection_close", "closed"), [
    (b"GET /healthz HTTP/1.1\r\n\r\n", False, False),
    (b"HEAD /healthz HTTP/1.1\r\n\r\n", False, False),
    (b"GET /healthz HTTP/1.0\r\n\r\n", True, True),
    (b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", True, True),
    (b"GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", False, False),
    (b"GET /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\n", True, True),
    (f"GET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode(), False, False),
    (f"GET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 3\r\n\r\nabc".encode(), True, True),
    (f"GET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
     True, True),
])
def test_endpoint_answers_keep_the_connection_unless_asked_or_sent_a_body(
        app: RouterApp, raw: bytes, connection_close: bool, closed: bool) -> None:
    conn, transport = client(app)
    conn.data_received(raw)
    head, body = transport.take().split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert (b"\r\nConnection: close" in head) is connection_close
    assert (body == b"") is raw.startswith(b"HEAD")
    assert transport.closed is closed and not transport.aborted
    assert counted(app) == {} and app.metrics.stats.by_code == {200: 1}


def test_a_refused_connect_is_tried_again_within_milliseconds(app: RouterApp) -> None:
    """A pod just Ready refuses until the NetworkPolicy agent admits the router: the first retry
    comes 5 ms later, so a 60 ms budget holds three (a 25 ms first delay left room for one)."""
    import socket

    from sandbox_router.routing import RouteTarget

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = RouteTarget.build("sbx", "default", "127.0.0.1", port, True, 5.0)
    with pytest.raises(ConnectionRefusedError):
        app.loop.run_until_complete(app.pool.connect_retrying(target, app.loop.time() + 0.06))
    assert app.metrics.upstream_errors.labels(kind="connect_retried")._value.get() >= 2
