"""Upstream side of the proxy: one asyncio protocol per sandbox connection and a keep-alive pool.

Connections are created once and reused for many requests (HTTP/1.1 keep-alive); the parsed
response is handed to the owning client connection through plain method calls, so no task,
future or buffer copy is created per request on the hot path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import TYPE_CHECKING

import httptools

from .metrics import RouterMetrics
from .routing import AddressPolicy, RouteTarget

if TYPE_CHECKING:
    from .proxy import ClientConnection

PoolKey = tuple[str, int]
MAX_RESPONSE_HEADER_BYTES = 256 * 1024


class ForbiddenTargetError(OSError):
    """A Service DNS name resolved only to addresses the router may not connect to."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to a sandbox, owned by at most one client request."""

    __slots__ = ("pool", "key", "transport", "parser", "owner", "idle_since", "closed",
                 "reused", "received", "reading_paused", "tunnel", "_headers", "_reason",
                 "_informational", "_header_bytes")

    def __init__(self, pool: UpstreamPool, key: PoolKey) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.owner: ClientConnection | None = None
        self.idle_since = 0.0
        self.closed = False
        self.reused = False          # has already served a request (may have gone stale)
        self.received = False        # got bytes for the current request
        self.reading_paused = False  # paused because the client is slow to read
        self.tunnel = False          # switched to a raw WebSocket byte relay
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._informational = False
        self._header_bytes = 0

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport and count the connection."""
        self.transport = transport  # type: ignore[assignment]
        self.pool.metrics.upstream_connections.inc()
        self.pool.metrics.upstream_connects.inc()

    def data_received(self, data: bytes) -> None:
        """Feed response bytes to the parser (or relay them verbatim in tunnel mode)."""
        owner = self.owner
        if owner is None:
            # Bytes on an idle pooled connection mean the server is not speaking HTTP/1.1
            # keep-alive as we expect; never hand such a connection out again.
            self.close()
            return
        owner.last_activity = owner.clock()
        if self.tunnel:
            owner.transport.write(data)
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            owner.upstream_upgraded(self, data[upgrade.args[0]:])
        except httptools.HttpParserError:
            if self.owner is owner:
                owner.upstream_failed(self, 502, "The backend sandbox sent an invalid HTTP response.",
                                      "bad_response")
        if owner.head_out is not None:
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
        """Reset per-response state."""
        self._headers = []
        self._reason = b""
        self._header_bytes = 0

    def on_status(self, status: bytes) -> None:
        """Collect the reason phrase (may arrive in pieces)."""
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one response header; a sandbox sending endless headers is cut off."""
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_RESPONSE_HEADER_BYTES:
            owner = self.owner
            if owner is not None:
                owner.upstream_failed(self, 502, "The backend sandbox sent oversized response headers.",
                                      "bad_response")
            return
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Hand the response head to the owner; 1xx interim responses are swallowed."""
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self._informational = True
            return
        owner = self.owner
        if owner is not None:
            owner.upstream_head(self, status, self._reason, self._headers)

    def on_body(self, body: bytes) -> None:
        """Stream one body piece to the owner."""
        owner = self.owner
        if owner is not None:
            owner.upstream_body(body)

    def on_message_complete(self) -> None:
        """The response is complete: the owner finishes the request and releases us."""
        if self._informational:
            self._informational = False
            return
        owner = self.owner
        if owner is not None:
            owner.upstream_complete(self, self.parser.should_keep_alive())

    # -- helpers --------------------------------------------------------------------------
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
            if conn.closed:
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
