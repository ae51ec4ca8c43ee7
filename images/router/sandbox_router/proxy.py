"""Client side of the proxy: the asyncio protocol of one accepted socket and the cycle of each
request on it, from its first byte to the end of its response.

One ClientConnection per accepted socket. Requests are parsed with httptools (llhttp, strict
mode) and processed strictly in order; pipelined requests queue behind the active one. This
module owns that cycle: header limits and timeouts, dispatch to an upstream connection, the
relay of bodies in both directions, and the one way the router ends an exchange itself
(ClientConnection._end with a responses.Answer). Bodies are never buffered beyond one socket
read (or a small window while an upstream connection is being opened): they are relayed chunk
by chunk. What the request head means and what goes upstream is request_head.py; the response
head the client gets is response_head.py; pause bookkeeping is flow_control.py; the sandbox side
is upstream.py; what a connection needs from the router process is the Router protocol below.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import perf_counter
from typing import Protocol

import httptools

from .flow_control import PAUSE_PENDING, PAUSE_PIPELINE, PAUSE_UPSTREAM, PENDING_WINDOW, FlowControl
from .metrics import RouterMetrics
from .request_head import (
    AUTHORITY, BODY_TOO_LARGE, DUPLICATE, NOT_ORIGIN_FORM, authorize, classify, declares_body, refusal,
    upstream_head,
)
from .response_head import OUT_CHUNKED, OUT_RAW, response_head
from .responses import HEALTH_BODY, NOT_READY_BODY, Answer, error_response
from .routing import HEADER_ID, RouteResolver, RouteTarget, RoutingError, SandboxUnavailable
from .settings import RouterSettings
from .timing import server_timing
from .upstream import ForbiddenTargetError, UpstreamConnection, UpstreamPool

log = logging.getLogger("sandbox_router")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"
_PROBES = frozenset({b"/healthz", b"/readyz"})

# The probe answers, by whether the request announced a body (the connection then closes).
_HEALTHY = {has_body: Answer(200, body=HEALTH_BODY, close=has_body) for has_body in (False, True)}
_NOT_READY = {has_body: Answer(503, body=NOT_READY_BODY, close=has_body) for has_body in (False, True)}
_HEADERS_TOO_LARGE = Answer(431, "Request headers too large.", reason="headers_too_large")
_HEADER_TIMEOUT = Answer(408, "Timed out reading the request headers.", reason="header_timeout")
_UNEXPECTED_SWITCH = Answer(502, "The backend sandbox switched protocols unexpectedly.", kind="bad_response")
# Too late to answer (part of the response went out): both sides are dropped.
_DROP = Answer(0)
_DROP_TOO_LARGE = Answer(0, kind="response_too_large")
_DROP_RESET = Answer(0, kind="reset_mid_response")
_DROP_TIMEOUT = Answer(0, kind="timeout_mid_response")


def _unreachable(sandbox_id: str, kind: str) -> Answer:
    return Answer(502, f"Could not connect to the backend sandbox: {sandbox_id}", kind=kind)


def _timed_out(sandbox_id: str, kind: str) -> Answer:
    return Answer(504, f"Timed out waiting for the backend sandbox: {sandbox_id}", kind=kind)


class Router(Protocol):
    """What a client connection needs from the router process (app.py): settings, the shared
    metrics, resolver and upstream pool, the loop and its clock tick, readiness and admission."""

    settings: RouterSettings
    loop: asyncio.AbstractEventLoop
    now: float  # loop time of the last timer tick
    token: bytes | None
    metrics: RouterMetrics
    resolver: RouteResolver
    pool: UpstreamPool

    @property
    def ready(self) -> bool:
        """The router can route (watch mode: every sandbox namespace listed once)."""

    def admit(self, conn: ClientConnection) -> str | None:
        """Count a new connection; a refusal message when over a limit."""

    def forget(self, conn: ClientConnection) -> None:
        """Stop counting a closed connection."""


class RequestState:
    """Everything the router tracks about one request on a client connection."""

    __slots__ = ("url", "headers", "header_bytes", "created", "headers_done", "method",
                 "keep_alive", "version", "upgrade", "websocket", "body_done", "pending",
                 "pending_bytes", "body_bytes", "chunked_in", "discard", "started", "target",
                 "head", "head_parts", "head_sent", "retried", "response_started", "response_done", "status",
                 "out_mode", "close_delimited", "response_bytes", "connect_seconds", "pooled", "sent_at")

    def __init__(self, now: float) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.created = now
        self.headers_done = False
        self.method = b""
        self.keep_alive = True
        self.version = "1.1"
        self.upgrade = False
        self.websocket = False
        self.body_done = False
        self.pending: list[bytes] | None = []
        self.pending_bytes = 0
        self.body_bytes = 0
        self.chunked_in = False
        self.discard = False
        self.started = 0.0
        self.target: RouteTarget | None = None
        self.head = b""
        self.head_parts: list[bytes] | None = None  # set while the target is still being looked up
        self.head_sent = False
        self.retried = False
        self.response_started = False
        self.response_done = False
        self.status = 0
        self.out_mode = OUT_RAW
        self.close_delimited = False
        self.response_bytes = 0
        # Server-Timing (timing.py): getting the sandbox connection, and when the head went out.
        self.connect_seconds = 0.0
        self.pooled = False
        self.sent_at = 0.0


class ClientConnection(asyncio.Protocol):
    """One accepted client socket: HTTP/1.1 server side of the proxy."""

    def __init__(self, app: Router) -> None:
        self.app = app
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.flow: FlowControl = None  # type: ignore[assignment]  # set with the transport
        self.parser = httptools.HttpRequestParser(self)
        self.requests: deque[RequestState] = deque()
        self.parsing: RequestState | None = None
        self.upstream: UpstreamConnection | None = None
        self.client_ip = ""
        self.admitted = False
        self.closing = False
        self.upgrading = False
        self.tunnel = False
        self.tunnel_started = 0.0
        self.tunnel_idle_limit = app.settings.websocket_idle_timeout_seconds
        # Set once a request passed authentication: only then does an idle connection get the
        # keep-alive timeout; before, it gets the (shorter) header timeout.
        self.trusted = False
        self.tunnel_backlog: list[bytes] = []
        self.clock = app.loop.time
        self.last_activity = self.clock()
        self.max_header_bytes = app.settings.max_header_bytes  # read per header: keep it one lookup away
        self.max_header_count = app.settings.max_header_count
        self.client_eof = False
        # Write coalescing: bytes produced while one socket read is being parsed are sent with a
        # single writev at the end of that read instead of one send() per piece.
        self.feeding = False
        self.upstream_out: list[bytes] | None = None
        self.upstream_out_target: UpstreamConnection | None = None
        self.head_out: bytes | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection or refuse it when a connection limit is reached."""
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(self.transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        refused = self.app.admit(self)
        if refused is not None:
            self.app.metrics.reject("connection_limit")
            self.closing = self.flow.closed = True
            self.transport.write(error_response(429, refused))
            self.transport.close()
            return
        self.admitted = True

    def connection_lost(self, exc: Exception | None) -> None:
        """Release the upstream of an unfinished request and forget the connection."""
        self.closing = self.flow.closed = True
        if self.admitted:
            self.admitted = False
            self.app.forget(self)
        if self.tunnel:
            self.app.metrics.websockets.dec()
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.abort()
        if self.requests and not self.requests[0].response_done and self.requests[0].headers_done:
            self.app.metrics.reject("client_disconnected")

    def evictable(self) -> bool:
        """May be closed to admit another connection: nothing in flight (idle keep-alive, or
        the head of the next request is still arriving)."""
        if self.closing or self.tunnel or self.upgrading:
            return False
        return not self.requests or not self.requests[0].headers_done

    def evict(self) -> None:
        """Close this connection at once and stop counting it (the router is full)."""
        self.closing = self.flow.closed = True
        if self.admitted:
            self.admitted = False
            self.app.forget(self)
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        """Parse request bytes; in tunnel mode relay them verbatim."""
        self.last_activity = self.clock()  # exact: timeouts are measured from here
        if self.tunnel:
            upstream = self.upstream
            if upstream is not None:
                upstream.transport.write(data)
            return
        if self.upgrading:
            self._buffer_tunnel_bytes(data)
            return
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgrading = True
            rest = data[upgrade.args[0]:]
            if rest:
                self._buffer_tunnel_bytes(rest)
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._end(None, Answer(400, f"Malformed HTTP request: {exc}.", reason="malformed"))
        finally:
            self.feeding = False
            out = self.upstream_out
            if out is not None:
                self.upstream_out = None
                target = self.upstream_out_target
                self.upstream_out_target = None
                if target is self.upstream and target is not None and not target.closed:
                    target.transport.writelines(out)

    def eof_received(self) -> bool:
        """Keep the socket half-open so an in-flight response can still be delivered."""
        if not self.requests or self.tunnel:
            return False
        self.client_eof = True
        return True

    def pause_writing(self) -> None:
        """The client reads slower than the sandbox answers: stop reading the sandbox."""
        self.flow.pause_writing(self.upstream)

    def resume_writing(self) -> None:
        """The client caught up: read the sandbox again."""
        self.flow.resume_writing(self.upstream)

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        """Start a new request; it queues behind any request still in flight."""
        state = RequestState(self.last_activity)
        self.parsing = state
        self.requests.append(state)

    def on_url(self, url: bytes) -> None:
        """Collect the request target (raw, never decoded)."""
        state = self.parsing
        if state is None or self.closing:
            return
        state.url += url
        state.header_bytes += len(url)
        if state.header_bytes > self.max_header_bytes:
            self._end(None, _HEADERS_TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one request header while enforcing the size and count limits."""
        state = self.parsing
        if state is None or self.closing:
            return
        state.header_bytes += len(name) + len(value) + 4
        headers = state.headers
        headers.append((name, value))
        if state.header_bytes > self.max_header_bytes or len(headers) > self.max_header_count:
            self._end(None, _HEADERS_TOO_LARGE)

    def on_headers_complete(self) -> None:
        """Capture the request line facts; start processing if this request is first in line."""
        state = self.parsing
        if state is None or self.closing:
            return
        parser = self.parser
        state.method = parser.get_method()
        state.keep_alive = parser.should_keep_alive()
        state.version = parser.get_http_version()
        state.upgrade = parser.should_upgrade()
        state.headers_done = True
        if state is self.requests[0]:
            self._start(state)

    def on_body(self, body: bytes) -> None:
        """Relay one piece of request body (or hold it until the upstream is connected)."""
        state = self.parsing
        if state is None or self.closing or state.discard:
            return
        state.body_bytes += len(body)
        if state.body_bytes > self.app.settings.max_request_body_bytes:
            self._end(state, BODY_TOO_LARGE)
            return
        upstream = self.upstream
        if state.head_sent and upstream is not None and state is self.requests[0]:
            out = self.upstream_out
            if out is not None:
                if state.chunked_in:
                    out += (b"%x\r\n" % len(body), body, _CRLF)
                else:
                    out.append(body)
            elif state.chunked_in:
                upstream.transport.writelines((b"%x\r\n" % len(body), body, _CRLF))
            else:
                upstream.transport.write(body)
            return
        if state.pending is not None:
            state.pending.append(body)
            state.pending_bytes += len(body)
            if state.pending_bytes > PENDING_WINDOW:
                self.flow.pause_reading(PAUSE_PENDING)

    def on_message_complete(self) -> None:
        """The request is fully read; finish it if its response is already done."""
        state = self.parsing
        self.parsing = None
        if state is None or self.closing:
            return
        state.body_done = True
        if state is not self.requests[0]:
            self.flow.pause_reading(PAUSE_PIPELINE)
            return
        upstream = self.upstream
        if state.head_sent and upstream is not None and state.chunked_in and not state.discard:
            if self.upstream_out is not None:
                self.upstream_out.append(_LAST_CHUNK)
            else:
                upstream.transport.write(_LAST_CHUNK)
        if state.response_done:
            self._finish(state)

    # -- request processing -------------------------------------------------------------
    def _start(self, state: RequestState) -> None:
        """Decide what to do with a request whose headers are complete."""
        app = self.app
        settings = app.settings
        state.started = perf_counter()
        url = state.url
        method = state.method
        path = url.split(b"?", 1)[0]

        if path in _PROBES and method in (b"GET", b"HEAD"):
            self._probe(state, path)
            return
        if not url.startswith(b"/"):
            self._end(state, NOT_ORIGIN_FORM)
            return

        routing, duplicate, authorization, content_length, chunked, websocket, expect_continue, forwarded = \
            classify(method, state.headers)
        metrics_request = path == b"/metrics" and HEADER_ID not in routing and method == b"GET"
        token = app.token
        if token is not None and (settings.metrics_require_auth or not metrics_request):
            refused = authorize(authorization, token)
            if refused is not None:
                self._end(state, refused)
                return
        if metrics_request:
            metrics = app.metrics
            self._end(state, Answer(200, body=metrics.render(), content_type=metrics.content_type.encode(),
                                    close=declares_body(state.headers)))
            return
        self.trusted = True  # only requests that passed authentication (or with auth off) get here

        if duplicate is not None:
            self._end(state, DUPLICATE[duplicate])
            return
        pending: SandboxUnavailable | None = None
        try:
            target: RouteTarget | None = app.resolver.resolve(routing)
        except SandboxUnavailable as exc:
            # Not in the pod index (yet): finish validating, then wait a moment for it below.
            target, pending = None, exc
        except RoutingError as exc:
            self._end(state, Answer(exc.status, exc.detail, reason="routing"))
            return
        refused = refusal(method, state.upgrade, websocket, content_length, settings.max_request_body_bytes)
        if refused is not None:
            self._end(state, refused)
            return
        state.websocket = websocket
        state.chunked_in = chunked
        parts = upstream_head(method, url, forwarded, content_length, chunked, websocket)
        if target is not None:
            self._dispatch(state, target, parts, expect_continue)
            return
        assert pending is not None
        wait = min(settings.sandbox_wait_seconds, pending.request.timeout)
        if wait <= 0:
            self._end(state, Answer(pending.status, pending.detail, reason="unknown_sandbox"))
            return
        state.head_parts = parts
        app.loop.create_task(self._await_sandbox(state, pending, wait, expect_continue))

    def _dispatch(self, state: RequestState, target: RouteTarget, parts: list[bytes], expect_continue: bool) -> None:
        """Send a validated request to its target: on a pooled connection, or a new one."""
        app = self.app
        parts[AUTHORITY] = target.authority
        state.head = b"".join(parts)
        state.head_parts = None
        state.target = target
        if expect_continue and not state.body_done:
            self.transport.write(_CONTINUE)
        upstream = app.pool.take_idle(target.pool_key, app.now)
        if upstream is not None:
            state.pooled = True
            self._attach(state, upstream)
        else:
            app.loop.create_task(self._connect(state, target))

    async def _await_sandbox(self, state: RequestState, pending: SandboxUnavailable, wait: float,
                             expect_continue: bool) -> None:
        """Wait briefly for a sandbox the pod index does not know yet (just adopted or created:
        the claim can be Ready a moment before the pod's update reaches the watch)."""
        started = perf_counter()
        try:
            target = await self.app.resolver.wait_for(pending.request, wait)
        except RoutingError as exc:
            self.app.metrics.route_waits.labels(outcome="not_found").observe(perf_counter() - started)
            if self._still_waiting(state) and state.head_parts is not None:
                self._end(state, Answer(exc.status, exc.detail, reason="unknown_sandbox"))
            return
        self.app.metrics.route_waits.labels(outcome="found").observe(perf_counter() - started)
        if self._still_waiting(state) and state.head_parts is not None:
            self._dispatch(state, target, state.head_parts, expect_continue)

    async def _connect(self, state: RequestState, target: RouteTarget) -> None:
        """Open a new upstream connection for `state` (the only awaited step per request)."""
        app = self.app
        timeout = min(app.settings.connect_timeout_seconds, target.timeout)
        connect_started = perf_counter()
        try:
            upstream = await asyncio.wait_for(app.pool.connect_retrying(target, app.loop.time() + timeout), timeout)
        except asyncio.TimeoutError:
            failure = _timed_out(target.sandbox_id, "connect_timeout")
        except ForbiddenTargetError:
            failure = _unreachable(target.sandbox_id, "forbidden_resolution")
        except (OSError, ValueError) as exc:
            log.debug("connect to %r failed: %s", target.authority, exc)
            failure = _unreachable(target.sandbox_id, "connect_failed")
        except Exception:  # noqa: BLE001 - any other failure must still answer the client
            log.exception("unexpected error connecting to %r", target.authority)
            failure = _unreachable(target.sandbox_id, "internal")
        else:
            if not self._still_waiting(state):
                app.pool.release(upstream, app.now)
                return
            state.connect_seconds += perf_counter() - connect_started
            state.pooled = False
            self._attach(state, upstream)
            return
        if self._still_waiting(state):
            self._end(state, failure)

    def _still_waiting(self, state: RequestState) -> bool:
        return not self.closing and bool(self.requests) and self.requests[0] is state \
            and not state.response_started and self.upstream is None

    def _attach(self, state: RequestState, upstream: UpstreamConnection) -> None:
        """Bind `upstream` to the active request and send the head plus any held body."""
        self.upstream = upstream
        upstream.owner = self
        upstream.received = False
        if self.flow.writing_paused:
            upstream.pause_reading()
        pending = state.pending or ()
        state.pending = None
        state.pending_bytes = 0
        if not pending and not (state.body_done and state.chunked_in):
            if self.feeding and not state.body_done:
                # The body most likely follows in this same read: send head and body together.
                self.upstream_out = [state.head]
                self.upstream_out_target = upstream
            else:
                upstream.transport.write(state.head)
        else:
            out = [state.head]
            for piece in pending:
                if state.chunked_in:
                    out += (b"%x\r\n" % len(piece), piece, _CRLF)
                else:
                    out.append(piece)
            if state.body_done and state.chunked_in:
                out.append(_LAST_CHUNK)
            upstream.transport.writelines(out)
        state.head_sent = True
        state.sent_at = perf_counter()
        self.flow.resume_reading(PAUSE_PENDING)

    # -- upstream callbacks -------------------------------------------------------------
    def upstream_head(self, upstream: UpstreamConnection, status: int, reason: bytes,
                      headers: list[tuple[bytes, bytes]]) -> bool:
        """Write the response head, re-framed for the client; True when it is held back to go
        out with the first body piece."""
        if upstream is not self.upstream or not self.requests or self.requests[0].response_started:
            self._stray_upstream(upstream)
            return False
        state = self.requests[0]
        if status == 101 and not state.websocket:
            self._end(state, _UNEXPECTED_SWITCH)
            return False
        timing = None
        if self.app.settings.server_timing and status != 101:
            timing = server_timing(state.started, state.connect_seconds, state.pooled, state.sent_at, perf_counter())
        head, out_mode, close_delimited, keep_alive = response_head(
            status, reason, headers, state.method == b"HEAD", state.version, state.keep_alive and not state.websocket,
            timing)
        state.status = status
        state.response_started = True
        if status == 101:
            self.transport.write(head)
            return False
        state.out_mode = out_mode
        state.close_delimited = close_delimited
        state.keep_alive = keep_alive
        self.head_out = head  # sent together with the first body piece (or flushed)
        if state.method == b"HEAD":
            # llhttp cannot be told the request was HEAD, so it would wait for a body that never
            # comes: finish here and do not reuse the connection.
            self._complete(state, upstream, reusable=False)
            return False
        return True

    def upstream_body(self, upstream: UpstreamConnection, body: bytes) -> None:
        """Relay one piece of response body."""
        if upstream is not self.upstream or not self.requests or not self.requests[0].response_started:
            # A body byte for a request whose response head this router did not produce: the
            # client must never see it (response desync).
            self._stray_upstream(upstream)
            return
        state = self.requests[0]
        state.response_bytes += len(body)
        if state.response_bytes > self.app.settings.max_response_body_bytes:
            self._end(None, _DROP_TOO_LARGE)
            return
        head = self.head_out
        if head is not None:
            self.head_out = None
            if state.out_mode == OUT_CHUNKED:
                self.transport.writelines((head, b"%x\r\n" % len(body), body, _CRLF))
            elif state.out_mode == OUT_RAW:
                self.transport.writelines((head, body))
            else:
                self.transport.write(head)
        elif state.out_mode == OUT_CHUNKED:
            self.transport.writelines((b"%x\r\n" % len(body), body, _CRLF))
        elif state.out_mode == OUT_RAW:
            self.transport.write(body)

    def upstream_complete(self, upstream: UpstreamConnection, keep_alive: bool) -> None:
        """The response is complete: close its framing, account it, recycle the connection."""
        if upstream is not self.upstream or not self.requests or not self.requests[0].response_started:
            self._stray_upstream(upstream)
            return
        state = self.requests[0]
        if state.status == 101:
            return  # llhttp completes the 101 message right before the protocol switch
        if state.out_mode == OUT_CHUNKED:
            head = self.head_out
            self.head_out = None
            self.transport.write(_LAST_CHUNK if head is None else head + _LAST_CHUNK)
        self._complete(state, upstream, reusable=keep_alive and state.body_done and not state.websocket)

    def upstream_upgraded(self, upstream: UpstreamConnection, rest: bytes) -> None:
        """The sandbox accepted the WebSocket upgrade: become a raw byte relay both ways."""
        if upstream is not self.upstream or not self.requests:
            self._stray_upstream(upstream)
            return
        state = self.requests[0]
        if not state.websocket or state.status != 101 or self.closing:
            self._end(None, _DROP)
            return
        requested = state.target.requested_timeout if state.target is not None else None
        if requested is not None:
            # X-Sandbox-Timeout is an inactivity timeout for tunnels too (never longer than the
            # WebSocket idle limit).
            self.tunnel_idle_limit = min(self.tunnel_idle_limit, requested)
        self.app.metrics.record(101, perf_counter() - state.started)
        self.app.metrics.websockets.inc()
        self.tunnel = True
        self.tunnel_started = self.app.now
        upstream.tunnel = True
        if rest:
            self.transport.write(rest)
        if self.tunnel_backlog:
            upstream.transport.writelines(self.tunnel_backlog)
            self.tunnel_backlog = []
        self.flow.resume_reading(PAUSE_PENDING)

    def upstream_failed(self, upstream: UpstreamConnection, answer: Answer) -> None:
        """The sandbox misbehaved (invalid HTTP): end the exchange with `answer`."""
        if upstream is not self.upstream:
            self._stray_upstream(upstream)
            return
        if self.requests:
            self._end(self.requests[0], answer)

    def _stray_upstream(self, upstream: UpstreamConnection) -> None:
        """An upstream event that belongs to no response this connection is relaying: drop that
        upstream connection (it is out of step) and, if it was ours, this exchange too."""
        self.app.metrics.upstream_error("desync")
        if upstream is self.upstream:
            self._end(None, _DROP)
        else:
            upstream.abort()

    def upstream_lost(self, upstream: UpstreamConnection) -> None:
        """The upstream connection closed while serving the active request."""
        self.upstream = None
        if self.closing or not self.requests:
            return
        state = self.requests[0]
        if self.tunnel:
            self._close()
            return
        if state.response_done:
            return
        if not state.response_started:
            replayable = (upstream.reused and not upstream.received and not state.retried
                          and not state.chunked_in and state.body_bytes == 0 and not state.websocket)
            if replayable and state.target is not None:
                # A pooled keep-alive connection the sandbox closed just as we reused it:
                # safe to replay once because no body byte was consumed.
                state.retried = True
                state.head_sent = False
                state.pending = []
                self.app.loop.create_task(self._connect(state, state.target))
                return
            sandbox = state.target.sandbox_id if state.target else "?"
            self._end(state, _unreachable(sandbox, "reset"))
            return
        if state.close_delimited:
            self.flush_head()
            if state.out_mode == OUT_CHUNKED:
                self.transport.write(_LAST_CHUNK)
            self._complete(state, upstream, reusable=False)
            return
        self._end(None, _DROP_RESET)

    def pause_for_upstream(self) -> None:
        """Upstream write buffer is full."""
        self.flow.pause_reading(PAUSE_UPSTREAM)

    def resume_for_upstream(self) -> None:
        """Upstream write buffer drained."""
        self.flow.resume_reading(PAUSE_UPSTREAM)

    # -- completion -----------------------------------------------------------------------
    def flush_head(self) -> None:
        """Send a response head that is still waiting for body bytes."""
        head = self.head_out
        if head is not None:
            self.head_out = None
            if not self.closing:
                self.transport.write(head)

    def _complete(self, state: RequestState, upstream: UpstreamConnection, reusable: bool) -> None:
        self.flush_head()
        app = self.app
        app.metrics.record(state.status, perf_counter() - state.started)
        state.response_done = True
        if self.upstream is upstream:
            self.upstream = None
        if reusable and not upstream.reading_paused:
            app.pool.release(upstream, app.now)
        else:
            upstream.close()
        self.flow.resume_reading(PAUSE_UPSTREAM)
        if not state.body_done:
            # The sandbox answered before the whole request body arrived; the rest of the body
            # cannot be skipped safely, so this client connection ends here.
            self._close()
            return
        self._finish(state)

    def _finish(self, state: RequestState) -> None:
        """Drop the finished request and start the next queued one."""
        if self.requests and self.requests[0] is state:
            self.requests.popleft()
        if not state.keep_alive or (self.client_eof and not self.requests):
            self._close()
            return
        self.flow.resume_reading(PAUSE_PIPELINE)
        if self.requests and self.requests[0].headers_done and not self.closing:
            self._start(self.requests[0])

    def _probe(self, state: RequestState, path: bytes) -> None:
        """GET/HEAD /healthz (the process serves) and /readyz (it can route: in watch mode, the
        sandbox pods of every namespace have been listed). No token: kubelet probes have none."""
        answers = _NOT_READY if path == b"/readyz" and not self.app.ready else _HEALTHY
        self._end(state, answers[declares_body(state.headers)])

    def _end(self, state: RequestState | None, answer: Answer) -> None:
        """The one way the router ends an exchange itself instead of relaying a response.

        `state` is the request answered; None for a refusal of the connection itself (an
        unparseable request, header limits, header timeout), which times and marks no request.
        Counts the answer's metric and drops the upstream connection; then, when part of a
        response already went out (or the answer has status 0), drops the client connection at
        once; else writes the answer and closes - or, for an endpoint's answer with close=False,
        goes on with the next request. An endpoint's answer to a request with a body closes: the
        body is of no use, and reading it (an endless chunked body, a 2 GiB Content-Length)
        would let anyone, token or not, hold the connection for as long as they like.
        """
        metrics = self.app.metrics
        if answer.reason is not None:
            metrics.reject(answer.reason)
        if answer.kind is not None:
            metrics.upstream_error(answer.kind)
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.abort()
        status = answer.status
        # the exchange under way is the oldest one (a pipelined request's own refusal must not be
        # written into the middle of the response to the request before it)
        current = self.requests[0] if self.requests else state
        if not status or (current is not None and current.response_started):
            self.head_out = None
            self.closing = self.flow.closed = True
            self.transport.abort()
            return
        if state is None:
            metrics.record(status, 0.0)
            self.transport.write(answer.encode())
            self._close()
            return
        metrics.record(status, perf_counter() - state.started)
        state.status = status
        state.response_started = state.response_done = True
        if answer.body is not None:
            state.discard = True
        self.transport.write(answer.encode(state.keep_alive, state.method == b"HEAD"))
        if answer.close:
            self._close()
        elif state.body_done:
            self._finish(state)

    def _close(self) -> None:
        """Flush what was written and close the client connection."""
        if self.closing:
            return
        self.closing = self.flow.closed = True
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            if self.tunnel:
                upstream.close()
            else:
                upstream.abort()
        self.transport.close()

    def _buffer_tunnel_bytes(self, data: bytes) -> None:
        self.tunnel_backlog.append(data)
        if sum(len(piece) for piece in self.tunnel_backlog) > PENDING_WINDOW:
            self.flow.pause_reading(PAUSE_PENDING)

    # -- timers -----------------------------------------------------------------------------
    def check_timers(self, now: float) -> None:
        """Called a few times per second: enforce header, idle, request and tunnel timeouts."""
        if self.closing:
            return
        settings = self.app.settings
        idle = now - self.last_activity
        if self.tunnel:
            if idle > self.tunnel_idle_limit or now - self.tunnel_started > settings.websocket_max_lifetime_seconds:
                self._close()
            return
        if not self.requests:
            # Keep-alive idling is for clients that authenticated; a connection that has sent
            # nothing (or only probes) gets no longer than a slow request head would.
            limit = settings.keepalive_timeout_seconds if self.trusted else settings.header_timeout_seconds
            if idle > limit:
                self._close()
            return
        state = self.requests[0]
        if not state.headers_done:
            if now - state.created > settings.header_timeout_seconds:
                self._end(None, _HEADER_TIMEOUT)
            return
        if state.head_parts is not None:
            return  # waiting for the sandbox to appear in the pod index (bounded by that wait)
        if state.response_done or state.target is None:
            if idle > settings.header_timeout_seconds:
                self._close()
            return
        if idle >= state.target.timeout:
            self._end(state, _DROP_TIMEOUT if state.response_started
                      else _timed_out(state.target.sandbox_id, "timeout"))
