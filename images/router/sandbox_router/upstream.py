"""Upstream side of the proxy: one asyncio protocol per sandbox connection and a keep-alive pool.

Connections are created once and reused for many requests (HTTP/1.1 keep-alive); the parsed
response is handed to the owning client connection through plain method calls (UpstreamOwner:
all an upstream connection knows of it), so no task, future or buffer copy is created per request
on the hot path.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Callable
from typing import Protocol

import httptools

from .metrics import RouterMetrics
from .responses import Answer
from .routing import AddressPolicy, RouteTarget

PoolKey = tuple[str, int, str]  # (address or DNS name, port, pod UID or "")
MAX_RESPONSE_HEADER_BYTES = 256 * 1024
INVALID_RESPONSE = Answer(502, "The backend sandbox sent an invalid HTTP response.", kind="bad_response")
OVERSIZED_HEADERS = Answer(502, "The backend sandbox sent oversized response headers.", kind="bad_response")


class ForbiddenTargetError(OSError):
    """A Service DNS name resolved only to addresses the router may not connect to."""


class UpstreamOwner(Protocol):
    """What an upstream connection needs from the client connection it serves (proxy.py): the
    response as it is parsed, flow-control signals, and the client's transport and activity
    clock for the WebSocket tunnel (written to directly: no call per relayed chunk)."""

    transport: asyncio.Transport  # where tunnel bytes go
    last_activity: float          # refreshed by every read that advances a final response or a tunnel
    clock: Callable[[], float]

    def upstream_head(self, upstream: UpstreamConnection, status: int, reason: bytes,
                      headers: list[tuple[bytes, bytes]]) -> bool:
        """A final (or 101) response head; True when it is held back to go out with the first
        body piece (flush_head() sends it if the read ends without one)."""

    def upstream_body(self, upstream: UpstreamConnection, body: bytes) -> None:
        """One piece of response body."""

    def upstream_complete(self, upstream: UpstreamConnection, keep_alive: bool) -> None:
        """The response ended (told once the whole read was parsed); `keep_alive`: reusable."""

    def upstream_upgraded(self, upstream: UpstreamConnection, rest: bytes) -> None:
        """The sandbox switched protocols; `rest` is what followed the 101 head in the read."""

    def upstream_failed(self, upstream: UpstreamConnection, answer: Answer) -> None:
        """The sandbox sent something that is not a valid response: end the exchange with `answer`."""

    def upstream_lost(self, upstream: UpstreamConnection) -> None:
        """The connection closed while serving this owner."""

    def flush_head(self) -> None:
        """Send a held-back response head now."""

    def pause_for_upstream(self) -> None:
        """The sandbox's write buffer is full: stop reading the client."""

    def resume_for_upstream(self) -> None:
        """The sandbox's write buffer drained: read the client again."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to a sandbox, owned by at most one client request.

    A connection is reused only when its response ended exactly at a message boundary with
    nothing after it: a sandbox that sends a second response head (or any byte) after a
    complete response, or a response nobody asked for, would otherwise leave the connection
    mid-message and the next request on it would get bytes without a head of its own.
    """

    __slots__ = ("pool", "key", "transport", "parser", "owner", "idle_since", "closed",
                 "reused", "received", "reading_paused", "tunnel", "poisoned", "in_message",
                 "_headers", "_reason", "_informational", "_header_bytes", "_done", "_progress",
                 "_head_held")

    def __init__(self, pool: UpstreamPool, key: PoolKey) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.owner: UpstreamOwner | None = None
        self.idle_since = 0.0
        self.closed = False
        self.reused = False          # has already served a request (may have gone stale)
        self.received = False        # got bytes for the current request
        self.reading_paused = False  # paused because the client is slow to read
        self.tunnel = False          # switched to a raw WebSocket byte relay
        self.poisoned = False        # out of step with the requests: never reuse
        self.in_message = False      # the parser is inside a response
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._informational = False
        self._header_bytes = 0
        self._done: bool | None = None  # keep-alive flag of a final response completed in this read
        self._progress = False          # this read carried part of a final response
        self._head_held = False         # the owner holds this response's head back for its body

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport and count the connection."""
        self.transport = transport  # type: ignore[assignment]
        self.pool.metrics.upstream_connections.inc()
        self.pool.metrics.upstream_connects.inc()

    def data_received(self, data: bytes) -> None:
        """Feed response bytes to the parser (or relay them verbatim in tunnel mode).

        The owner learns that its response is complete only after the whole read was parsed,
        so it knows whether anything followed the response before it recycles the connection.
        """
        owner = self.owner
        if owner is None or self.poisoned:
            # Bytes nobody asked for (an idle pooled connection, or after a response that ended
            # out of step): never hand such a connection out again.
            self.abort()
            return
        if self.tunnel:
            owner.last_activity = owner.clock()
            owner.transport.write(data)
            return
        self.received = True
        # Invariant between reads: _done is None and _progress is False (reset where consumed).
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._done, self._progress = None, False
            owner.last_activity = owner.clock()
            owner.upstream_upgraded(self, data[upgrade.args[0]:])
            return
        except httptools.HttpParserError:
            if self._done is None:
                self._progress = False
                if self.owner is owner:
                    owner.upstream_failed(self, INVALID_RESPONSE)
                return
            self.poisoned = True  # garbage right after a complete response
        if self._progress:
            # Only a final response counts as activity for X-Sandbox-Timeout: interim (1xx)
            # responses, however many, do not extend the wait for it.
            self._progress = False
            owner.last_activity = owner.clock()
        done = self._done
        if done is not None:
            self._done = None
            if self.owner is owner:
                owner.upstream_complete(self, done and not self.poisoned and not self.in_message)
            else:
                self.abort()
            return
        if self._head_held:
            self._head_held = False
            if self.owner is owner:
                owner.flush_head()  # a head whose body has not arrived yet must not wait for it

    def eof_received(self) -> bool:
        """Close our side too when the sandbox half-closes."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the connection from the pool and tell the owning request, if any."""
        self.closed = True
        self.pool.forget(self)
        self.pool.metrics.upstream_connections.dec()
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.upstream_lost(self)

    def pause_writing(self) -> None:
        """The sandbox reads slower than the client uploads: stop reading the client."""
        if self.owner is not None:
            self.owner.pause_for_upstream()

    def resume_writing(self) -> None:
        """The sandbox caught up: read the client again."""
        if self.owner is not None:
            self.owner.resume_for_upstream()

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        """Reset per-response state; a response after a completed one poisons the connection."""
        if self._done is not None or self.owner is None:
            self.poisoned = True
        self.in_message = True
        self._head_held = False
        self._headers = []
        self._reason = b""
        self._header_bytes = 0

    def on_status(self, status: bytes) -> None:
        """Collect the reason phrase (may arrive in pieces)."""
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one response header; a sandbox sending endless headers is cut off."""
        if self.poisoned:
            return
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_RESPONSE_HEADER_BYTES:
            owner = self.owner
            if owner is not None:
                owner.upstream_failed(self, OVERSIZED_HEADERS)
            return
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Hand the response head to the owner; 1xx interim responses are swallowed."""
        if self.poisoned:
            return
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self._informational = True
            return
        self._progress = True
        owner = self.owner
        if owner is not None:
            self._head_held = owner.upstream_head(self, status, self._reason, self._headers)

    def on_body(self, body: bytes) -> None:
        """Stream one body piece to the owner."""
        if self.poisoned:
            return
        self._progress = True
        owner = self.owner
        if owner is not None:
            owner.upstream_body(self, body)

    def on_message_complete(self) -> None:
        """The response is complete; the owner is told once the whole read was parsed."""
        self.in_message = False
        if self._informational:
            self._informational = False
            return
        if self.poisoned:
            return
        if self.owner is not None:
            self._done = self.parser.should_keep_alive()

    # -- helpers --------------------------------------------------------------------------
    def pause_reading(self) -> None:
        """Stop reading the sandbox (its client is slow to read); a no-op when paused or closed."""
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        """Read the sandbox again; a no-op when not paused or closed."""
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        """Close the connection (buffered bytes are still flushed)."""
        self.owner = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection immediately."""
        self.owner = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()


# A sandbox pod Ready a moment ago can still refuse the router: the kubelet's probe comes from the
# node, which the pod's NetworkPolicy admits at once, while the router's own egress rule names the
# sandbox pods by selector, so the NetworkPolicy agent must first add the new pod's address to it
# (seconds on a loaded node). Those refusals end on their own: connect again, backing off, within
# the connect timeout. Nothing has been sent upstream yet, so a retry is always safe.
RETRYABLE_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
CONNECT_RETRY_FIRST_DELAY = 0.005  # short: a cold claim's first command waits for the next attempt
CONNECT_RETRY_MAX_DELAY = 0.4


class UpstreamPool:
    """Idle keep-alive connections per (host, port), most recently used first."""

    def __init__(self, loop: asyncio.AbstractEventLoop, policy: AddressPolicy, metrics: RouterMetrics,
                 max_idle_per_target: int, idle_seconds: float) -> None:
        self.loop = loop
        self.policy = policy
        self.metrics = metrics
        self.max_idle_per_target = max_idle_per_target
        self.idle_seconds = idle_seconds
        self.idle: dict[PoolKey, list[UpstreamConnection]] = {}

    def take_idle(self, key: PoolKey, now: float) -> UpstreamConnection | None:
        """Return a live idle connection for `key`, or None when a new one is needed."""
        stack = self.idle.get(key)
        while stack:
            conn = stack.pop()
            if conn.closed or conn.poisoned or conn.in_message:
                conn.abort()
                continue
            if now - conn.idle_since > self.idle_seconds:
                conn.close()
                continue
            return conn
        return None

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Put a connection whose response completed cleanly back into the pool."""
        conn.owner = None
        if conn.closed:
            return
        if conn.poisoned or conn.in_message or conn.tunnel:
            conn.abort()
            return
        stack = self.idle.get(conn.key)
        if stack is None:
            stack = self.idle[conn.key] = []
        if len(stack) >= self.max_idle_per_target:
            conn.close()
            return
        conn.idle_since = now
        conn.reused = True
        stack.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """Remove a closed connection from the idle lists."""
        stack = self.idle.get(conn.key)
        if stack and conn in stack:
            stack.remove(conn)
            if not stack:
                del self.idle[conn.key]

    def sweep(self, now: float) -> None:
        """Close idle connections before the sandbox's own keep-alive timeout can race us."""
        for key in list(self.idle):
            for conn in list(self.idle.get(key, ())):
                if now - conn.idle_since > self.idle_seconds:
                    conn.close()

    async def connect_retrying(self, target: RouteTarget, deadline: float) -> UpstreamConnection:
        """:meth:`connect`, again after a refusal (see RETRYABLE_CONNECT_ERRNOS) until `deadline`
        (loop time): each retry is counted as upstream error ``connect_retried``."""
        delay = CONNECT_RETRY_FIRST_DELAY
        while True:
            try:
                return await self.connect(target)
            except OSError as exc:
                if exc.errno not in RETRYABLE_CONNECT_ERRNOS or self.loop.time() + delay >= deadline:
                    raise
            self.metrics.upstream_error("connect_retried")
            await asyncio.sleep(delay)
            delay = min(delay * 2, CONNECT_RETRY_MAX_DELAY)

    async def connect(self, target: RouteTarget) -> UpstreamConnection:
        """Open a new connection to `target`; DNS answers go through the same address policy."""
        host = target.host
        if not target.is_ip:
            infos = await self.loop.getaddrinfo(host, target.port, type=socket.SOCK_STREAM,
                                                proto=socket.IPPROTO_TCP)
            allowed = [info[4][0] for info in infos
                       if self.policy.refusal(ipaddress.ip_address(info[4][0].split("%")[0]),
                                              target.port) is None]
            if not allowed:
                raise ForbiddenTargetError(f"{host} resolves only to forbidden addresses")
            host = allowed[0]
        key = target.pool_key
        _transport, conn = await self.loop.create_connection(
            lambda: UpstreamConnection(self, key), host, target.port)
        return conn

    def close_all(self) -> None:
        """Close every idle connection (shutdown)."""
        for stack in list(self.idle.values()):
            for conn in list(stack):
                conn.close()
        self.idle.clear()
