"""Behaviour of the router between a real client and a recording upstream on loopback:
auth, header stripping, limits, timeouts, dead upstreams, WebSocket, concurrency, metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from sdk_harness import (
    ROUTER_DIR, TEST_TOKEN, RecordingUpstream, RouterProcess, build_request, free_port, raw_request,
)

pytestmark = pytest.mark.timeout(180)
MAX_BODY = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def router(router_impl: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    log = tmp_path_factory.mktemp("router") / "router.log"
    with RouterProcess(log_path=log, ROUTER_MAX_REQUEST_BODY_BYTES=str(MAX_BODY),
                       ROUTER_CONNECT_TIMEOUT_SECONDS="2") as process:
        yield process


def routing(upstream: RecordingUpstream, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_TOKEN}", "X-Sandbox-ID": "sbx-proxy",
            "X-Sandbox-Namespace": "default", "X-Sandbox-Port": str(upstream.port),
            "X-Sandbox-Pod-IP": "127.0.0.1", **extra}


def test_healthz_needs_no_token(router: RouterProcess) -> None:
    response = requests.get(f"{router.url}/healthz", timeout=5)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Token {TEST_TOKEN}"])
def test_missing_or_wrong_token_is_401(router: RouterProcess, upstream: RecordingUpstream, auth: str | None) -> None:
    upstream.clear()
    headers = routing(upstream)
    headers.pop("Authorization")
    if auth is not None:
        headers["Authorization"] = auth
    response = requests.get(f"{router.url}/anything", headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "detail" in response.json()
    assert upstream.seen == []


def test_headers_are_stripped_before_forwarding(router: RouterProcess, upstream: RecordingUpstream) -> None:
    upstream.clear()
    request = build_request(list(routing(upstream, **{"X-Sandbox-Timeout": "30"}).items()) + [
        ("Connection", "keep-alive, X-Hop-Nominated"), ("X-Hop-Nominated", "secret"),
        ("Keep-Alive", "timeout=5"), ("Proxy-Authorization", "Basic abc"), ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"), ("Trailer", "X-T"), ("Upgrade", "websocket"), ("X-Sandbox-Uid", "1234"),
        ("X-Sandbox-Anything", "x"), ("X-Kept", "yes"), ("User-Agent", "hostile/1.0"),
        ("X_Sandbox_Pod_IP", "10.0.0.1"), ("Proxy_Authorization", "x"), ("authorization_", "ok-to-keep"),
    ], target="/dir/a%2Fb%2E%2E?x=1&y=%2F")
    response = raw_request(router.port, request)
    assert response.status == 200
    seen = upstream.seen[-1]
    names = {name.lower() for name, _ in seen.headers}
    for dropped in ("authorization", "connection", "x-hop-nominated", "keep-alive", "proxy-authorization",
                    "proxy-connection", "te", "trailer", "upgrade", "x-sandbox-id", "x-sandbox-namespace",
                    "x-sandbox-port", "x-sandbox-pod-ip", "x-sandbox-timeout", "x-sandbox-uid",
                    "x-sandbox-anything"):
        assert dropped not in names, f"{dropped} reached the upstream"
    assert seen.header("host") == [f"127.0.0.1:{upstream.port}"]
    assert "x_sandbox_pod_ip" not in names and "proxy_authorization" not in names
    assert seen.header("authorization_") == ["ok-to-keep"]  # underscore names do reach the upstream
    assert seen.header("x-kept") == ["yes"] and seen.header("user-agent") == ["hostile/1.0"]
    assert seen.raw_path == "/dir/a%2Fb%2E%2E" and seen.query == "x=1&y=%2F"
    # Response side: hop-by-hop and Connection-nominated headers of the sandbox are dropped too.
    assert "x-secret-hop" not in response.headers and response.headers["x-upstream"] == "recording"


def test_declared_oversized_body_is_413(router: RouterProcess, upstream: RecordingUpstream) -> None:
    upstream.clear()
    headers = {**routing(upstream), "Content-Length": str(MAX_BODY + 1)}
    response = raw_request(router.port, build_request(list(headers.items()), "POST"))
    assert response.status == 413 and "too large" in response.json()["detail"]
    assert upstream.seen == []


def test_streamed_oversized_body_is_413(router: RouterProcess, upstream: RecordingUpstream) -> None:
    def body() -> Iterator[bytes]:
        block = b"z" * 65536
        for _ in range(MAX_BODY // len(block) + 8):
            yield block
    try:
        response = requests.post(f"{router.url}/upload", headers=routing(upstream), data=body(), timeout=30)
    except requests.ConnectionError:
        pytest.fail("router reset the connection instead of answering 413")
    assert response.status_code == 413


def test_streamed_upload_and_download(router: RouterProcess, upstream: RecordingUpstream) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    response = requests.post(f"{router.url}/echo", headers=routing(upstream),
                             data=iter([payload[i:i + 100000] for i in range(0, len(payload), 100000)]),
                             timeout=30)
    assert response.status_code == 200 and response.content == payload
    size = 64 * 1024 * 1024
    with requests.get(f"{router.url}/big?bytes={size}", headers=routing(upstream), stream=True,
                      timeout=60) as big:
        assert big.status_code == 200
        assert sum(len(chunk) for chunk in big.iter_content(1 << 20)) == size


def test_slow_upstream_is_504(router: RouterProcess, upstream: RecordingUpstream) -> None:
    started = time.monotonic()
    response = requests.get(f"{router.url}/slow?seconds=6", headers=routing(upstream, **{"X-Sandbox-Timeout": "1"}),
                            timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["detail"] == "Timed out waiting for the backend sandbox: sbx-proxy"
    assert 0.9 <= elapsed < 4


def test_dead_upstream_is_502(router: RouterProcess, upstream: RecordingUpstream) -> None:
    headers = routing(upstream, **{"X-Sandbox-Port": str(free_port())})
    response = requests.get(f"{router.url}/x", headers=headers, timeout=10)
    assert response.status_code == 502
    assert response.json()["detail"] == "Could not connect to the backend sandbox: sbx-proxy"


def test_a_sandbox_that_refuses_at_first_is_connected_again(router: RouterProcess) -> None:
    """A pod just Ready can refuse the router until the NetworkPolicy agent admits it: the router
    connects again within its connect timeout instead of answering 502 at once."""
    import http.server
    import threading

    port = free_port()

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    servers: list[http.server.HTTPServer] = []

    def listen_later() -> None:
        time.sleep(0.6)
        servers.append(http.server.HTTPServer(("127.0.0.1", port), Ok))
        servers[0].serve_forever()

    threading.Thread(target=listen_later, daemon=True).start()
    headers = {"Authorization": f"Bearer {TEST_TOKEN}", "X-Sandbox-ID": "sbx-late", "X-Sandbox-Namespace": "default",
               "X-Sandbox-Port": str(port), "X-Sandbox-Pod-IP": "127.0.0.1"}
    started = time.monotonic()
    try:
        response = requests.get(f"{router.url}/late", headers=headers, timeout=10)
    finally:
        if servers:
            servers[0].shutdown()
    assert response.status_code == 200 and response.text == "ok"
    assert 0.5 < time.monotonic() - started < 2.5
    metrics = requests.get(f"{router.url}/metrics", headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=5).text
    assert 'sandbox_router_upstream_errors_total{kind="connect_retried"}' in metrics


def test_upstream_status_and_body_pass_through(router: RouterProcess, upstream: RecordingUpstream) -> None:
    response = requests.get(f"{router.url}/status?code=404", headers=routing(upstream), timeout=5)
    assert response.status_code == 404 and response.json()["raw_path"] == "/status"


def test_keep_alive_pipelining_in_order(router: RouterProcess, upstream: RecordingUpstream) -> None:
    one = build_request(list(routing(upstream).items()), target="/first")
    two = build_request(list(routing(upstream).items()), target="/second")
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        sock.sendall(one + two)
        data = b""
        while data.count(b"0\r\n\r\n") < 2:
            chunk = sock.recv(65536)
            assert chunk, "router closed the pipelined connection"
            data += chunk
    assert data.index(b'"/first"') < data.index(b'"/second"')


def test_websocket_echo_through_router(router: RouterProcess, upstream: RecordingUpstream) -> None:
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{router.port}/ws"
    with connect(url, additional_headers=routing(upstream), open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo:hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"\x00\x01binary"
    assert upstream.seen[-1].method == "WEBSOCKET"
    assert not upstream.seen[-1].header("authorization")


def test_websocket_without_token_is_refused(router: RouterProcess, upstream: RecordingUpstream) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    headers = routing(upstream)
    headers.pop("Authorization")
    with pytest.raises(InvalidStatus) as err:
        connect(f"ws://127.0.0.1:{router.port}/ws", additional_headers=headers, open_timeout=10)
    assert err.value.response.status_code == 401


def test_200_concurrent_requests(router: RouterProcess, upstream: RecordingUpstream) -> None:
    def one(index: int) -> tuple[int, int]:
        if index % 2:
            response = requests.post(f"{router.url}/c{index}", headers=routing(upstream),
                                     data=b"p" * (1000 + index), timeout=30)
            return response.status_code, response.json()["body_size"] - (1000 + index)
        response = requests.get(f"{router.url}/c{index}", headers=routing(upstream), timeout=30)
        return response.status_code, 0 if response.json()["raw_path"] == f"/c{index}" else 1

    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(one, range(200)))
    assert results == [(200, 0)] * 200
    assert requests.get(f"{router.url}/healthz", timeout=5).status_code == 200


def test_metrics_content(router: RouterProcess, upstream: RecordingUpstream) -> None:
    requests.get(f"{router.url}/m", headers=routing(upstream), timeout=5)
    requests.get(f"{router.url}/m", headers={**routing(upstream), "Authorization": "Bearer no"}, timeout=5)
    requests.get(f"{router.url}/m", headers=routing(upstream, **{"X-Sandbox-Port": str(free_port())}), timeout=5)
    assert requests.get(f"{router.url}/metrics", timeout=5).status_code == 401
    response = requests.get(f"{router.url}/metrics", headers=router.auth_headers(), timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for expected in ('sandbox_router_requests_total{code="200"}', 'sandbox_router_requests_total{code="401"}',
                     'sandbox_router_requests_total{code="502"}',
                     'sandbox_router_request_duration_seconds_bucket{le="0.005"}',
                     "sandbox_router_request_duration_seconds_count",
                     'sandbox_router_upstream_errors_total{kind="connect_failed"}',
                     'sandbox_router_rejected_total{reason="auth"}', "sandbox_router_client_connections"):
        assert expected in text, expected
    count = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith('sandbox_router_requests_total{code="200"}'))
    assert count >= 1


def _metric(router: RouterProcess, name: str) -> float:
    text = requests.get(f"{router.url}/metrics", headers=router.auth_headers(), timeout=5).text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_upstream_connections_are_reused(router: RouterProcess, upstream: RecordingUpstream) -> None:
    opened_before = _metric(router, "sandbox_router_upstream_connections_opened_total")
    with requests.Session() as session:
        for index in range(50):
            assert session.get(f"{router.url}/reuse{index}", headers=routing(upstream), timeout=5).ok
    opened = _metric(router, "sandbox_router_upstream_connections_opened_total") - opened_before
    assert opened <= 2, f"{opened} upstream connections for 50 sequential requests: pooling is broken"


def test_per_client_connection_limit(upstream: RecordingUpstream) -> None:
    with RouterProcess(ROUTER_MAX_CONNECTIONS_PER_CLIENT="3") as limited:
        held = []
        try:
            for _ in range(2):  # the health probe's connection may still be closing
                held.append(socket.create_connection(("127.0.0.1", limited.port), timeout=5))
            time.sleep(0.3)
            held.append(socket.create_connection(("127.0.0.1", limited.port), timeout=5))
            response = raw_request(limited.port, build_request(list(routing(upstream).items())))
            assert response.status == 429
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert raw_request(limited.port, build_request(list(routing(upstream).items()))).status == 200


def test_slow_headers_are_cut_off(upstream: RecordingUpstream) -> None:
    with RouterProcess(ROUTER_HEADER_TIMEOUT_SECONDS="1") as router_:
        with socket.create_connection(("127.0.0.1", router_.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            started = time.monotonic()
            data = sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 4


def test_refuses_to_start_without_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "ALLOW_UNAUTH"))}
    result = subprocess.run([sys.executable, "-m", "sandbox_router"], cwd=ROUTER_DIR, env={
        **env, "PYTHONPATH": str(ROUTER_DIR), "ROUTER_PORT": str(free_port()), "ROUTER_HOST": "127.0.0.1"},
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "ROUTER_AUTH_TOKEN" in result.stderr and "ALLOW_UNAUTHENTICATED_ROUTER" in result.stderr


def test_explicit_dev_opt_out_serves_without_token(upstream: RecordingUpstream) -> None:
    with RouterProcess(token=None) as open_router:
        headers = routing(upstream)
        headers.pop("Authorization")
        response = requests.get(f"{open_router.url}/open", headers=headers, timeout=5)
        assert response.status_code == 200 and json.loads(response.text)["raw_path"] == "/open"


def test_sigterm_drains_in_flight_requests(upstream: RecordingUpstream) -> None:
    import threading

    router_ = RouterProcess().start()
    try:
        with requests.Session() as idle:  # an idle keep-alive connection must not delay the exit
            assert idle.get(f"{router_.url}/idle", headers=routing(upstream), timeout=5).ok
            result: dict[str, int] = {}

            def slow() -> None:
                result["status"] = requests.get(f"{router_.url}/slow?seconds=2", headers=routing(upstream),
                                                timeout=15).status_code

            worker = threading.Thread(target=slow)
            worker.start()
            time.sleep(0.5)
            started = time.monotonic()
            router_.process.terminate()
            assert router_.process.wait(timeout=20) == 0
            worker.join(timeout=15)
            assert result == {"status": 200}
            assert time.monotonic() - started < 8
    finally:
        router_.stop()
