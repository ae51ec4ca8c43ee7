"""Hostile sandboxes and token-less clients against a real router process (issue 11 items 2, 4, 10).

Each test reproduces one finding of the security review on loopback: a sandbox that desyncs the
upstream pool, 1xx responses that stretch X-Sandbox-Timeout, a WebSocket tunnel that ignores it,
and the ways an unauthenticated client could hold router resources (connection flood that
starves /healthz, endless /healthz bodies, a 2 GiB Content-Length, silent connections).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from sdk_harness import TEST_TOKEN, RecordingUpstream, RouterProcess, build_request, raw_request

pytestmark = pytest.mark.timeout(120)


class RawUpstream:
    """A TCP server on 127.0.0.1 whose per-connection behaviour is a plain function.

    `handler(sock, index)` runs in its own thread for every accepted connection (`index` counts
    connections from 0), so a test can write any bytes, valid HTTP or not.
    """

    def __init__(self, handler: Callable[[socket.socket, int], None]) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            index = self.connections
            self.connections += 1
            threading.Thread(target=self._run, args=(sock, index), daemon=True).start()

    def _run(self, sock: socket.socket, index: int) -> None:
        with sock:
            try:
                self.handler(sock, index)
            except OSError:
                pass

    def close(self) -> None:
        """Stop accepting."""
        self._stop = True
        self._thread.join(timeout=5)
        self.listener.close()


def read_request_head(sock: socket.socket) -> bytes:
    """Read up to the end of one request head (the tests send no request bodies)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("router closed the upstream connection")
        data += chunk
    return data


@pytest.fixture(scope="module")
def router(router_impl: str) -> Iterator[RouterProcess]:
    with RouterProcess(ROUTER_CONNECT_TIMEOUT_SECONDS="2") as process:
        yield process


def routing(port: int, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_TOKEN}", "X-Sandbox-ID": "sbx-abuse", "X-Sandbox-Namespace": "default",
            "X-Sandbox-Port": str(port), "X-Sandbox-Pod-IP": "127.0.0.1", **extra}


# -- item 2: response desync / pool poisoning ---------------------------------------------------------
def test_second_response_head_does_not_poison_the_pool(router: RouterProcess) -> None:
    """Reproduction of the review: a sandbox answers the first request on a connection and
    appends a second response head. The next request (same client connection, same sandbox)
    must be answered on a fresh upstream connection, through the router's own framing."""
    import httpx

    def handler(sock: socket.socket, index: int) -> None:
        first = True
        while True:
            read_request_head(sock)
            if first and index == 0:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nattacker")
            else:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: X-Private\r\n"
                             b"X-Private: secret\r\n\r\nhonest")
            first = False

    upstream = RawUpstream(handler)
    try:
        with httpx.Client(base_url=router.url, headers=routing(upstream.port), timeout=10,
                          limits=httpx.Limits(max_connections=1)) as client:
            first = client.get("/first")
            assert (first.status_code, first.text) == (200, "ok")
            second = client.get("/second")
            assert (second.status_code, second.text) == (200, "honest")
            assert "x-private" not in second.headers, "the reply was relayed raw, past the router's framing"
        assert upstream.connections == 2, "the poisoned upstream connection was reused"
    finally:
        upstream.close()


# -- item 10: X-Sandbox-Timeout is not stretched by 1xx responses, and bounds WebSocket tunnels ---------
def test_repeated_1xx_responses_do_not_stretch_the_timeout(router: RouterProcess) -> None:
    def handler(sock: socket.socket, index: int) -> None:
        read_request_head(sock)
        for _ in range(100):
            sock.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
            time.sleep(0.2)

    upstream = RawUpstream(handler)
    try:
        started = time.monotonic()
        response = raw_request(router.port, build_request(list(routing(upstream.port, **{
            "X-Sandbox-Timeout": "1"}).items())), timeout=15)
        elapsed = time.monotonic() - started
        assert response.status == 504, response.body
        assert elapsed < 4, f"504 after {elapsed:.1f}s for a 1 s timeout"
    finally:
        upstream.close()


def test_idle_websocket_tunnel_obeys_x_sandbox_timeout(router: RouterProcess) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    upstream = RecordingUpstream().start()
    try:
        headers = routing(upstream.port, **{"X-Sandbox-Timeout": "1"})
        with connect(f"ws://127.0.0.1:{router.port}/ws", additional_headers=headers, open_timeout=10,
                     ping_interval=None) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "echo:hello"
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=6)
            assert time.monotonic() - started < 4
    finally:
        upstream.stop()


# -- item 4: no denial of service without a token ---------------------------------------------------------
def _half_sent(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: router\r\nX-Slow: ")
    return sock


def test_connection_flood_does_not_starve_healthz(tmp_path) -> None:  # noqa: ANN001
    """Half-sent requests from several clients fill the global connection cap; the kubelet's
    /healthz (and a real client) still get in."""
    with RouterProcess(ROUTER_MAX_CONNECTIONS="40", ROUTER_MAX_CONNECTIONS_PER_CLIENT="10",
                       ROUTER_HEADER_TIMEOUT_SECONDS="30") as limited:
        held = [_half_sent(limited.port, f"127.0.0.{2 + index // 10}") for index in range(40)]
        try:
            time.sleep(0.5)
            with socket.create_connection(("127.0.0.1", limited.port), timeout=10,
                                          source_address=("127.0.0.9", 0)) as probe:
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: router\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := probe.recv(65536):
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 200 "), reply
        finally:
            for sock in held:
                sock.close()


def _router_stops_reading(sock: socket.socket, piece: bytes, within: float) -> bool:
    """Keep sending `piece`; True when the router closes the connection within `within` s."""
    sock.settimeout(0.05)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            sock.sendall(piece)
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def test_endless_chunked_healthz_body_is_cut_off(router: RouterProcess) -> None:
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert _router_stops_reading(sock, b"400\r\n" + b"x" * 1024 + b"\r\n", within=5)


def test_huge_content_length_on_healthz_is_not_read(router: RouterProcess) -> None:
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: r\r\nContent-Length: 2147483648\r\n\r\n")
        assert _router_stops_reading(sock, b"x" * 65536, within=5)


def test_silent_connection_gets_the_header_timeout() -> None:
    with RouterProcess(ROUTER_HEADER_TIMEOUT_SECONDS="1", ROUTER_KEEPALIVE_TIMEOUT_SECONDS="60") as quick:
        with socket.create_connection(("127.0.0.1", quick.port), timeout=10) as sock:
            started = time.monotonic()
            sock.settimeout(8)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                pytest.fail("a connection that sent nothing was still open after 8 s")
            assert data == b"" and time.monotonic() - started < 4
