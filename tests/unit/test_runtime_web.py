"""sandbox_runtime/web.py: dispatch, requests, responses and the lifespan, driven as ASGI."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox_runtime import web


def scope(method: str = "GET", path: str = "/", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


def call(app: Any, request_scope: dict[str, Any], messages: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run one request; return what the application sent."""
    incoming = list(messages or [{"type": "http.request", "body": b""}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # nothing more arrives
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(request_scope, receive, send), 5))
    return sent


def status_headers_body(sent: list[dict[str, Any]]) -> tuple[int, dict[bytes, bytes], bytes]:
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path_params.get("path"), "method": request.method})


APP = web.Application([web.route("/", hello, ["GET"]), web.route("/files/{path}", hello, ["GET"]),
                       web.route("/post", hello, ["POST"])])


def test_exact_and_prefix_routes_and_their_parameter() -> None:
    assert status_headers_body(call(APP, scope()))[2] == b'{"path":null,"method":"GET"}'
    assert status_headers_body(call(APP, scope(path="/files/a/b\nc")))[2] == b'{"path":"a/b\\nc","method":"GET"}'
    assert status_headers_body(call(APP, scope(path="/files/")))[2] == b'{"path":"","method":"GET"}'


def test_unknown_path_is_404_and_another_method_405_with_allow() -> None:
    status, headers, body = status_headers_body(call(APP, scope(path="/nope")))
    assert (status, body, headers[b"content-type"]) == (404, b"Not Found", b"text/plain; charset=utf-8")
    assert status_headers_body(call(APP, scope(path="/files")))[0] == 404  # no trailing slash: not the prefix
    status, headers, body = status_headers_body(call(APP, scope("DELETE", "/files/x")))
    assert (status, headers[b"allow"], body) == (405, b"GET, HEAD", b"Method Not Allowed")
    assert status_headers_body(call(APP, scope("GET", "/post")))[1][b"allow"] == b"POST"


def test_head_is_allowed_where_get_is_and_sends_headers_only() -> None:
    status, headers, body = status_headers_body(call(APP, scope("HEAD", "/")))
    assert (status, body) == (200, b"")
    assert headers[b"content-length"] == str(len(b'{"path":null,"method":"HEAD"}')).encode()


def test_json_escapes_non_ascii_and_surrogates_and_refuses_nan() -> None:
    response = web.json_response({"name": "caf\u00e9 \udcff"}, 201, {"Retry-After": "1"})
    assert response.body == b'{"name":"caf\\u00e9 \\udcff"}'
    assert (b"retry-after", b"1") in response.raw_headers(len(response.body))
    with pytest.raises(ValueError):
        web.json_response({"x": float("nan")})


def test_request_headers_first_wins_and_the_body_streams_once() -> None:
    seen: dict[str, Any] = {}

    async def read(request: web.Request) -> web.Response:
        seen["length"] = request.headers.get("content-length")
        seen["chunks"] = [chunk async for chunk in request.stream()]
        with pytest.raises(RuntimeError):
            async for _ in request.stream():
                pass
        return web.Response(b"ok")

    app = web.Application([web.route("/", read, ["POST"])])
    body = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b""}]
    call(app, scope("POST", "/", [(b"Content-Length", b"2"), (b"content-length", b"9")]), body)
    assert seen == {"length": "2", "chunks": [b"ab"]}


def test_a_disconnect_while_reading_the_body_raises_client_disconnect() -> None:
    caught: list[bool] = []

    async def read(request: web.Request) -> web.Response:
        try:
            async for _ in request.stream():
                pass
        except web.ClientDisconnect:
            caught.append(True)
        return web.Response(b"")

    app = web.Application([web.route("/", read, ["POST"])])
    call(app, scope("POST"), [{"type": "http.request", "body": b"a", "more_body": True}, {"type": "http.disconnect"}])
    assert caught == [True]


def test_a_streamed_body_stops_reading_after_a_disconnect_and_closes_its_source() -> None:
    state = {"read": 0, "closed": False}

    async def source() -> AsyncIterator[bytes]:
        try:
            for _ in range(1000):
                state["read"] += 1
                await asyncio.sleep(0)
                yield b"x"
        finally:
            state["closed"] = True

    async def download(request: web.Request) -> web.Response:
        return web.StreamingResponse(source(), headers={"Content-Length": "1000"})

    app = web.Application([web.route("/", download, ["GET"])])
    sent = call(app, scope(), [{"type": "http.disconnect"}])
    assert state["closed"] and state["read"] < 1000
    assert sent[-1] == {"type": "http.response.body", "body": b""}
    # without a disconnect every chunk is sent, the last message ends the body
    state.update(read=0, closed=False)
    sent = call(app, scope(), [])
    assert state == {"read": 1000, "closed": True}
    assert status_headers_body(sent)[2] == b"x" * 1000 and sent[-1].get("more_body") is None


def lifespan_messages(lifespan: Any) -> list[str]:
    app = web.Application([], lifespan=lifespan)
    sent = call(app, {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    return [message["type"] for message in sent]


def test_lifespan_runs_the_context_around_the_server() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        events.append("up")
        yield
        events.append("down")

    assert lifespan_messages(lifespan) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["up", "down"]

    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[None]:
        raise OSError("no base directory")
        yield

    assert lifespan_messages(broken) == ["lifespan.startup.failed"]
    assert lifespan_messages(None) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_a_routed_response_says_how_long_its_handler_took() -> None:
    inside: list[float] = []

    async def slow(request: web.Request) -> web.Response:
        started = time.perf_counter()
        await asyncio.sleep(0.03)
        inside.append((time.perf_counter() - started) * 1000)
        return web.text_response("done", 200)

    app = web.Application([web.route("/slow", slow, ["GET"])])
    _, headers, _ = status_headers_body(call(app, scope(path="/slow")))
    name, _, dur = headers[b"server-timing"].decode().partition(";dur=")
    # The header's span encloses the handler's own (compared with the handler's clock, not with
    # the sleep's nominal 30 ms: the event loop may wake a few microseconds early).
    assert name == "runtime" and inside[0] - 0.001 <= float(dur) < inside[0] + 1000
    assert float(dur) > 20
    _, headers, _ = status_headers_body(call(app, scope(path="/missing")))
    assert b"server-timing" not in headers  # the router's own answers are not the handler's
