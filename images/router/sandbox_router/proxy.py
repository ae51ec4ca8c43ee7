"""Client side of the proxy: parses requests, enforces auth/validation/limits, relays bytes.

One ClientConnection per accepted socket. Requests are parsed with httptools (llhttp, strict
mode) and processed strictly in order; pipelined requests queue behind the active one. Bodies
are never buffered beyond one socket read (or a small window while an upstream connection
is being opened): they are relayed chunk by chunk with flow control in both directions.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING

import httptools

from .responses import HEALTH_BODY, NOT_READY_BODY, build_response, error_response, reason_phrase
from .routing import HEADER_ID, ROUTING_HEADERS, RouteTarget, RoutingError, SandboxUnavailable
from .upstream import ForbiddenTargetError, UpstreamConnection

if TYPE_CHECKING:
    from .app import RouterApp

log = logging.getLogger("sandbox_router")

# Request headers never forwarded as-is: hop-by-hop (RFC 9110 7.6.1), framing the router
# recomputes, and Host (rewritten to the target). Authorization and x-sandbox-* are handled
# separately and also never forwarded.
_REQUEST_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
    b"host", b"content-length", b"expect",
})
_RESPONSE_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
    b"content-length",
})
_ROUTING = frozenset(ROUTING_HEADERS)
_CANONICAL = {b"x-sandbox-id": "X-Sandbox-ID", b"x-sandbox-namespace": "X-Sandbox-Namespace",
              b"x-sandbox-port": "X-Sandbox-Port", b"x-sandbox-pod-ip": "X-Sandbox-Pod-IP",
              b"x-sandbox-timeout": "X-Sandbox-Timeout"}
_FORWARDED_METHODS = frozenset({b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS"})
_STANDARD_CONNECTION_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade", b""})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"
_BEARER = b"bearer "
_PROBES = frozenset({b"/healthz", b"/readyz"})
_BODY_FRAMING = frozenset({b"content-length", b"transfer-encoding"})

# Why client reading is paused (bit flags; reading resumes when none is left).
PAUSE_UPSTREAM = 1   # upstream socket buffer is full
PAUSE_PIPELINE = 2   # a complete request is queued behind the active one
PAUSE_PENDING = 4    # body bytes waiting for an upstream connection exceed the window

PENDING_WINDOW = 256 * 1024

OUT_NONE = 0      # no response body (HEAD, 204, 304)
OUT_RAW = 1       # body relayed verbatim (Content-Length or close-delimited)
OUT_CHUNKED = 2   # body re-framed as chunked towards the client


class RequestState:
    """Everything the router tracks about one request on a client connection."""

    __slots__ = ("url", "headers", "header_bytes", "created", "headers_done", "method",
                 "keep_alive", "version", "upgrade", "websocket", "body_done", "pending",
                 "pending_bytes", "body_bytes", "chunked_in", "discard", "started", "target",
                 "head", "head_parts", "head_sent", "retried", "response_started", "response_done", "status",
                 "out_mode", "close_delimited", "response_bytes")

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


class ClientConnection(asyncio.Protocol):
    """One accepted client socket: HTTP/1.1 server side of the proxy."""

    def __init__(self, app: RouterApp) -> None:
        self.app = app
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.requests: deque[RequestState] = deque()
        self.parsing: RequestState | None = None
        self.upstream: UpstreamConnection | None = None
        self.client_ip = ""
        self.admitted = False
        self.pause_reasons = 0
        self.writing_paused = False
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
        self.parse_error: tuple[int, str] | None = None
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
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        refusal = self.app.admit(self)
        if refusal is not None:
            self.app.metrics.reject("connection_limit")
            self.closing = True
            self.transport.write(error_response(429, refusal))
            self.transport.close()
            return
        self.admitted = True

    def connection_lost(self, exc: Exception | None) -> None:
        """Release the upstream of an unfinished request and forget the connection."""
        self.closing = True
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
        self.closing = True
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
                status, detail = self.parse_error or (400, f"Malformed HTTP request: {exc}.")
                self.app.metrics.reject("malformed")
                self._refuse_connection(status, detail)
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
        self.writing_paused = True
        upstream = self.upstream
        if upstream is not None and not upstream.reading_paused and not upstream.closed:
            upstream.reading_paused = True
            upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        """The client caught up: read the sandbox again."""
        self.writing_paused = False
        upstream = self.upstream
        if upstream is not None and upstream.reading_paused and not upstream.closed:
            upstream.reading_paused = False
            upstream.transport.resume_reading()

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
            self._header_limit()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one request header while enforcing the size and count limits."""
        state = self.parsing
        if state is None or self.closing:
            return
        state.header_bytes += len(name) + len(value) + 4
        headers = state.headers
        headers.append((name, value))
        if state.header_bytes > self.max_header_bytes or len(headers) > self.max_header_count:
            self._header_limit()

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
            self.app.metrics.reject("request_too_large")
            self._fail(state, 413, "Request body too large.", None)
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
                self._pause(PAUSE_PENDING)

    def on_message_complete(self) -> None:
        """The request is fully read; finish it if its response is already done."""
        state = self.parsing
        self.parsing = None
        if state is None or self.closing:
            return
        state.body_done = True
        if state is not self.requests[0]:
            self._pause(PAUSE_PIPELINE)
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
        path = url.split(b"?", 1)[0]

        if path in _PROBES and state.method in (b"GET", b"HEAD"):
            self._probe(state, path)
            return
        if not url.startswith(b"/"):
            self._reject(state, 400, "Request target must be an origin-form path.", "routing")
            return

        routing: dict[bytes, bytes] = {}
        forwarded: list[tuple[bytes, bytes]] = []
        authorization: bytes | None = None
        authorization_count = 0
        connection_tokens: list[bytes] = []
        upgrade_value: bytes | None = None
        content_length: bytes | None = None
        expect: bytes | None = None
        chunked = False
        duplicate: bytes | None = None
        for name, value in state.headers:
            lower = name.lower()
            if b"_" in lower:
                # Some servers treat "_" like "-" in header names: never let X_Sandbox_ID or
                # Proxy_Authorization slip past as an innocent-looking header.
                normalised = lower.replace(b"_", b"-")
                if normalised.startswith(b"x-sandbox-") or normalised in _REQUEST_DROP \
                        or normalised == b"authorization":
                    continue
            if lower.startswith(b"x-sandbox-"):
                if lower in _ROUTING:
                    if lower in routing:
                        duplicate = duplicate or lower
                    routing[lower] = value
                continue  # unknown x-sandbox-* headers are dropped as well
            if lower in _REQUEST_DROP:
                if lower == b"connection":
                    connection_tokens.extend(t.strip().lower() for t in value.split(b","))
                elif lower == b"upgrade":
                    upgrade_value = value.strip().lower()
                elif lower == b"content-length":
                    content_length = value
                elif lower == b"transfer-encoding":
                    chunked = True
                elif lower == b"expect":
                    expect = value.strip().lower()
                continue
            if lower == b"authorization":
                authorization = value
                authorization_count += 1
                continue
            forwarded.append((name, value))

        metrics_request = path == b"/metrics" and HEADER_ID not in routing and state.method == b"GET"
        if app.token is not None and (settings.metrics_require_auth or not metrics_request):
            if authorization_count != 1 or authorization is None or \
                    authorization[:7].lower() != _BEARER or len(authorization) <= 7:
                self._reject(state, 401, "Missing or invalid Authorization header.", "auth",
                             ((b"WWW-Authenticate", b"Bearer"),))
                return
            if not hmac.compare_digest(authorization[7:].strip(), app.token):
                self._reject(state, 401, "Invalid token.", "auth", ((b"WWW-Authenticate", b"Bearer"),))
                return
        if metrics_request:
            self._respond_local(state, 200, app.metrics.render(), app.metrics.content_type.encode(),
                                has_body=chunked or (content_length is not None and content_length.strip() != b"0"))
            return
        self.trusted = True  # only requests that passed authentication (or with auth off) get here

        if duplicate is not None:
            self._reject(state, 400, f"Duplicate {_CANONICAL[duplicate]} header.", "routing")
            return
        pending: SandboxUnavailable | None = None
        try:
            target: RouteTarget | None = app.resolver.resolve(routing)
        except SandboxUnavailable as exc:
            # Not in the pod index (yet): finish validating, then wait a moment for it below.
            target, pending = None, exc
        except RoutingError as exc:
            self._reject(state, exc.status, exc.detail, "routing")
            return
        if state.method not in _FORWARDED_METHODS:
            self._reject(state, 405, "Method not allowed through the router.", "method")
            return

        if state.upgrade or upgrade_value is not None:
            if upgrade_value != b"websocket" or b"upgrade" not in connection_tokens \
                    or state.method != b"GET":
                if state.upgrade:
                    self._reject(state, 400, "Only WebSocket upgrades are supported.", "routing")
                    return
                upgrade_value = None  # a stray Upgrade header without Connection: upgrade is dropped
            else:
                state.websocket = True

        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                declared = -1
            if declared < 0:
                self._reject(state, 400, "Invalid Content-Length.", "malformed")
                return
            if declared > settings.max_request_body_bytes:
                app.metrics.reject("request_too_large")
                self._reject(state, 413, "Request body too large.", None)
                return
        state.chunked_in = chunked

        extra = set(connection_tokens) - _STANDARD_CONNECTION_TOKENS
        if extra:
            forwarded = [(n, v) for n, v in forwarded if n.lower() not in extra]

        # parts[4] is the target's authority, filled in once the target is known.
        parts = [state.method, b" ", url, b" HTTP/1.1\r\nHost: ", b"", _CRLF]
        for name, value in forwarded:
            parts += (name, b": ", value, _CRLF)
        if chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif content_length is not None:
            parts += (b"Content-Length: ", content_length.strip(), _CRLF)
        if state.websocket:
            parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
        parts.append(_CRLF)
        expect_continue = expect == b"100-continue"
        if target is not None:
            self._dispatch(state, target, parts, expect_continue)
            return
        assert pending is not None
        wait = min(settings.sandbox_wait_seconds, pending.request.timeout)
        if wait <= 0:
            self._reject(state, pending.status, pending.detail, "unknown_sandbox")
            return
        state.head_parts = parts
        app.loop.create_task(self._await_sandbox(state, pending, wait, expect_continue))

    def _dispatch(self, state: RequestState, target: RouteTarget, parts: list[bytes], expect_continue: bool) -> None:
        """Send a validated request to its target: on a pooled connection, or a new one."""
        app = self.app
        parts[4] = target.authority
        state.head = b"".join(parts)
        state.head_parts = None
        state.target = target
        if expect_continue and not state.body_done:
            self.transport.write(_CONTINUE)
        upstream = app.pool.take_idle(target.pool_key, app.now)
        if upstream is not None:
            self._attach(state, upstream)
        else:
            app.loop.create_task(self._connect(state, target))

    async def _await_sandbox(self, state: RequestState, pending: SandboxUnavailable, wait: float,
                             expect_continue: bool) -> None:
        """Wait briefly for a sandbox the pod index does not know yet (just adopted or created:
        the claim can be Ready a moment before the pod's update reaches the watch)."""
        try:
            target = await self.app.resolver.wait_for(pending.request, wait)
        except RoutingError as exc:
            if self._still_waiting(state) and state.head_parts is not None:
                self._reject(state, exc.status, exc.detail, "unknown_sandbox")
            return
        if self._still_waiting(state) and state.head_parts is not None:
            self._dispatch(state, target, state.head_parts, expect_continue)

    async def _connect(self, state: RequestState, target: RouteTarget) -> None:
        """Open a new upstream connection for `state` (the only awaited step per request)."""
        app = self.app
        timeout = min(app.settings.connect_timeout_seconds, target.timeout)
        try:
            upstream = await asyncio.wait_for(app.pool.connect(target), timeout)
        except asyncio.TimeoutError:
            if self._still_waiting(state):
                self._fail(state, 504, f"Timed out waiting for the backend sandbox: {target.sandbox_id}",
                           "connect_timeout")
            return
        except ForbiddenTargetError:
            if self._still_waiting(state):
                self._fail(state, 502, f"Could not connect to the backend sandbox: {target.sandbox_id}",
                           "forbidden_resolution")
            return
        except (OSError, ValueError) as exc:
            log.debug("connect to %r failed: %s", target.authority, exc)
            if self._still_waiting(state):
                self._fail(state, 502, f"Could not connect to the backend sandbox: {target.sandbox_id}",
                           "connect_failed")
            return
        except Exception:  # noqa: BLE001 - any other failure must still answer the client
            log.exception("unexpected error connecting to %r", target.authority)
            if self._still_waiting(state):
                self._fail(state, 502, f"Could not connect to the backend sandbox: {target.sandbox_id}",
                           "internal")
            return
        if not self._still_waiting(state):
            app.pool.release(upstream, app.now)
            return
        self._attach(state, upstream)

    def _still_waiting(self, state: RequestState) -> bool:
        return not self.closing and bool(self.requests) and self.requests[0] is state \
            and not state.response_started and self.upstream is None

    def _attach(self, state: RequestState, upstream: UpstreamConnection) -> None:
        """Bind `upstream` to the active request and send the head plus any held body."""
        self.upstream = upstream
        upstream.owner = self
        upstream.received = False
        if self.writing_paused and not upstream.reading_paused:
            upstream.reading_paused = True
            upstream.transport.pause_reading()
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
        self._resume(PAUSE_PENDING)

    # -- upstream callbacks -------------------------------------------------------------
    def upstream_head(self, upstream: UpstreamConnection, status: int, reason: bytes,
                      headers: list[tuple[bytes, bytes]]) -> None:
        """Write the response head, re-framed for the client."""
        if upstream is not self.upstream or not self.requests or self.requests[0].response_started:
            self._stray_upstream(upstream)
            return
        state = self.requests[0]
        if status == 101 and not state.websocket:
            self._fail(state, 502, "The backend sandbox switched protocols unexpectedly.", "bad_response")
            return
        out = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))]
        content_length: bytes | None = None
        chunked = False
        nominated: set[bytes] | None = None
        for name, value in headers:
            lower = name.lower()
            if lower in _RESPONSE_DROP:
                if lower == b"content-length":
                    content_length = value
                elif lower == b"transfer-encoding":
                    chunked = True
                elif lower == b"connection":
                    tokens = {t.strip().lower() for t in value.split(b",")} - _STANDARD_CONNECTION_TOKENS
                    if tokens:
                        nominated = (nominated or set()) | tokens
                continue
            out += (name, b": ", value, _CRLF)
        if nominated:
            kept = [out[0]]
            for index in range(1, len(out), 4):
                if out[index].lower() not in nominated:
                    kept += out[index:index + 4]
            out = kept
        state.status = status
        state.response_started = True
        if status == 101:
            out.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            self.transport.write(b"".join(out))
            return
        keep_alive = state.keep_alive and not state.websocket
        if state.method == b"HEAD" or status in (204, 304):
            state.out_mode = OUT_NONE
            if content_length is not None:
                out += (b"Content-Length: ", content_length, _CRLF)
        elif content_length is not None and not chunked:
            state.out_mode = OUT_RAW
            out += (b"Content-Length: ", content_length, _CRLF)
        elif state.version == "1.1":
            state.out_mode = OUT_CHUNKED
            state.close_delimited = not chunked
            out.append(b"Transfer-Encoding: chunked\r\n")
        else:
            state.out_mode = OUT_RAW
            state.close_delimited = not chunked
            keep_alive = False
        if not keep_alive:
            state.keep_alive = False
            out.append(b"Connection: close\r\n")
        elif state.version == "1.0":
            out.append(b"Connection: keep-alive\r\n")
        out.append(_CRLF)
        self.head_out = b"".join(out)  # sent together with the first body piece (or flushed)
        if state.method == b"HEAD":
            # llhttp cannot be told the request was HEAD, so it would wait for a body that never
            # comes: finish here and do not reuse the connection.
            self._complete(state, upstream, reusable=False)

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
            self.app.metrics.upstream_error("response_too_large")
            self._abort_exchange()
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
            self._abort_exchange()
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
        self._resume(PAUSE_PENDING)

    def upstream_failed(self, upstream: UpstreamConnection, status: int, detail: str, kind: str) -> None:
        """The sandbox misbehaved (invalid HTTP)."""
        if upstream is not self.upstream:
            self._stray_upstream(upstream)
            return
        if self.requests:
            self._fail(self.requests[0], status, detail, kind)

    def _stray_upstream(self, upstream: UpstreamConnection) -> None:
        """An upstream event that belongs to no response this connection is relaying: drop that
        upstream connection (it is out of step) and, if it was ours, this exchange too."""
        self.app.metrics.upstream_error("desync")
        if upstream is self.upstream:
            self._abort_exchange()
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
            self._fail(state, 502, f"Could not connect to the backend sandbox: {sandbox}", "reset")
            return
        if state.close_delimited:
            self.flush_head()
            if state.out_mode == OUT_CHUNKED:
                self.transport.write(_LAST_CHUNK)
            self._complete(state, upstream, reusable=False)
            return
        self.app.metrics.upstream_error("reset_mid_response")
        self._abort_exchange()

    def pause_for_upstream(self) -> None:
        """Upstream write buffer is full."""
        self._pause(PAUSE_UPSTREAM)

    def resume_for_upstream(self) -> None:
        """Upstream write buffer drained."""
        self._resume(PAUSE_UPSTREAM)

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
        self._resume(PAUSE_UPSTREAM)
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
        self._resume(PAUSE_PIPELINE)
        if self.requests and self.requests[0].headers_done and not self.closing:
            self._start(self.requests[0])

    def _probe(self, state: RequestState, path: bytes) -> None:
        """GET/HEAD /healthz (the process serves) and /readyz (it can route: in watch mode, the
        sandbox pods of every namespace have been listed). No token: kubelet probes have none."""
        has_body = any(name.lower() in _BODY_FRAMING and not (name.lower() == b"content-length"
                                                              and value.strip() == b"0")
                       for name, value in state.headers)
        if path == b"/readyz" and not self.app.ready:
            self._respond_local(state, 503, NOT_READY_BODY, b"application/json", has_body)
        else:
            self._respond_local(state, 200, HEALTH_BODY, b"application/json", has_body)

    def _respond_local(self, state: RequestState, status: int, body: bytes, content_type: bytes,
                       has_body: bool = False) -> None:
        """Answer a request the router serves itself (health, metrics).

        A request with a body is answered and the connection closed: the body is of no use, and
        reading it (an endless chunked body, a 2 GiB Content-Length) would let anyone, token or
        not, hold the connection and make the router read for as long as they like.
        """
        head_only = state.method == b"HEAD"
        close = not state.keep_alive or has_body
        self.transport.write(build_response(status, body, content_type, close=close, head_only=head_only))
        self.app.metrics.record(status, perf_counter() - state.started)
        state.status = status
        state.discard = True
        state.response_started = state.response_done = True
        if has_body:
            self._close()
        elif state.body_done:
            self._finish(state)

    def _reject(self, state: RequestState, status: int, detail: str, reason: str | None,
                extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Refuse a request before anything is sent upstream; the connection is closed."""
        if reason is not None:
            self.app.metrics.reject(reason)
        self.app.metrics.record(status, perf_counter() - state.started)
        state.status = status
        state.response_started = state.response_done = True
        self.transport.write(error_response(status, detail, extra_headers=extra_headers))
        self._close()

    def _fail(self, state: RequestState, status: int, detail: str, kind: str | None) -> None:
        """End the active exchange with an error (or abort it if the response already began)."""
        if kind is not None:
            self.app.metrics.upstream_error(kind)
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
        if state.response_started:
            self._abort_exchange()
            return
        self.app.metrics.record(status, perf_counter() - state.started)
        state.status = status
        state.response_started = state.response_done = True
        self.transport.write(error_response(status, detail))
        self._close()

    def _refuse_connection(self, status: int, detail: str) -> None:
        """Answer a protocol-level error (unparseable request, header limits) and close."""
        if self.requests and self.requests[0].response_started:
            self._abort_exchange()
            return
        self.app.metrics.record(status, 0.0)
        self.transport.write(error_response(status, detail))
        self._close()

    def _header_limit(self) -> None:
        self.parse_error = (431, "Request headers too large.")
        self.app.metrics.reject("headers_too_large")
        self._refuse_connection(431, "Request headers too large.")

    def _abort_exchange(self) -> None:
        """Drop both sides immediately (a response was already partly sent)."""
        self.head_out = None
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
        self.closing = True
        self.transport.abort()

    def _close(self) -> None:
        """Flush what was written and close the client connection."""
        if self.closing:
            return
        self.closing = True
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
            self._pause(PAUSE_PENDING)

    def _pause(self, reason: int) -> None:
        if not self.pause_reasons and not self.closing:
            self.transport.pause_reading()
        self.pause_reasons |= reason

    def _resume(self, reason: int) -> None:
        if self.pause_reasons & reason:
            self.pause_reasons &= ~reason
            if not self.pause_reasons and not self.closing:
                self.transport.resume_reading()

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
                self.app.metrics.reject("header_timeout")
                self._refuse_connection(408, "Timed out reading the request headers.")
            return
        if state.head_parts is not None:
            return  # waiting for the sandbox to appear in the pod index (bounded by that wait)
        if state.response_done or state.target is None:
            if idle > settings.header_timeout_seconds:
                self._close()
            return
        if idle >= state.target.timeout:
            if state.response_started:
                self.app.metrics.upstream_error("timeout_mid_response")
                self._abort_exchange()
            else:
                self._fail(state, 504, f"Timed out waiting for the backend sandbox: {state.target.sandbox_id}",
                           "timeout")
