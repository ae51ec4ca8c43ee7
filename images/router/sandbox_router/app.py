"""The router process: shared state (settings, pool, metrics, limits, sandbox pod index) and the
serving loop, including the Kubernetes watch that keeps the index current in watch mode."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import random
import signal

from .kube import KubeClient, KubeConfig, PodWatcher
from .metrics import RouterMetrics
from .netinfo import local_addresses
from .proxy import ClientConnection
from .routing import AddressPolicy, RouteResolver
from .sandboxes import SandboxIndex
from .settings import RouterSettings
from .upstream import UpstreamPool

log = logging.getLogger("sandbox_router")

TICK_SECONDS = 0.25
SHUTDOWN_GRACE_SECONDS = 10.0
EVICTION_SAMPLE = 64


class RouterApp:
    """State shared by every connection of one router process."""

    def __init__(self, settings: RouterSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.now = loop.time()
        self.metrics = RouterMetrics()
        self.token = settings.auth_token.encode() if settings.auth_token is not None else None
        self.policy = AddressPolicy(settings.allowed_pod_cidrs, settings.allow_loopback_pod_ip,
                                    own_addresses=settings.own_addresses + local_addresses())
        self.sandboxes: SandboxIndex | None = None
        if settings.resolver == "watch":
            self.sandboxes = SandboxIndex(settings.sandbox_namespaces, settings.route_unclaimed_pool_pods)
        self.resolver = RouteResolver(settings, self.policy, self.sandboxes)
        self.pool = UpstreamPool(loop, self.policy, self.metrics, settings.upstream_max_idle_per_target,
                                 settings.upstream_idle_seconds)
        self.connections: set[ClientConnection] = set()
        self.per_client: dict[str, int] = {}
        self.server: asyncio.base_events.Server | None = None

    @property
    def ready(self) -> bool:
        """True when the router can route (watch mode: every sandbox namespace listed once)."""
        return self.sandboxes is None or self.sandboxes.ready

    def admit(self, conn: ClientConnection) -> str | None:
        """Register a new client connection; return a refusal message when over a limit.

        At the global limit a connection without a request in flight (idle keep-alive, or a
        request head still arriving), the longest idle of a random sample, is closed to make
        room: otherwise anyone could fill the limit with half-sent requests, no token needed,
        and starve the kubelet's /healthz probes and every real client. Connections with a
        request in flight or a WebSocket tunnel are never evicted.
        """
        count = self.per_client.get(conn.client_ip, 0)
        if count >= self.settings.max_connections_per_client:
            return "Too many connections from this client."
        if len(self.connections) >= self.settings.max_connections:
            # A random sample keeps this O(1) per accept even at thousands of connections (an
            # approximate "longest idle"), so a flood of connects cannot make admission expensive.
            connections = tuple(self.connections)
            sample = random.sample(connections, min(len(connections), EVICTION_SAMPLE))
            victim = min((c for c in sample if c.evictable()), key=lambda c: c.last_activity, default=None)
            if victim is None:
                return "The router is at its connection limit; retry later."
            self.metrics.evictions.inc()
            victim.evict()
        self.per_client[conn.client_ip] = count + 1
        self.connections.add(conn)
        self.metrics.client_connections.inc()
        return None

    def forget(self, conn: ClientConnection) -> None:
        """Unregister a closed client connection."""
        self.connections.discard(conn)
        self.metrics.client_connections.dec()
        count = self.per_client.get(conn.client_ip, 0) - 1
        if count > 0:
            self.per_client[conn.client_ip] = count
        else:
            self.per_client.pop(conn.client_ip, None)

    def _set_self_endpoints(self, sockets: list) -> None:
        endpoints: set[tuple[str, int]] = set()
        for sock in sockets:
            host, port = sock.getsockname()[:2]
            address = ipaddress.ip_address(host.split("%")[0])
            if address.is_unspecified:
                hosts = {"127.0.0.1", "::1", *self.policy_addresses()}
            else:
                hosts = {str(address)}
            endpoints.update((h, port) for h in hosts)
        self.policy.self_endpoints = frozenset((ipaddress.ip_address(h), p) for h, p in endpoints)

    def policy_addresses(self) -> set[str]:
        """The router's own addresses as strings."""
        return {str(a) for a in self.policy.own_addresses}

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.now = now = self.loop.time()
            for conn in list(self.connections):
                conn.check_timers(now)
            self.pool.sweep(now)

    async def serve(self, stop: asyncio.Event) -> None:
        """Listen until `stop` is set, then drain for a short grace period."""
        settings = self.settings
        self.server = await self.loop.create_server(
            lambda: ClientConnection(self), settings.host, settings.port,
            reuse_address=True, backlog=4096)
        sockets = list(self.server.sockets or [])
        self._set_self_endpoints(sockets)
        bound = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in sockets)
        log.info("sandbox-router listening on %s (auth %s, resolver %s, loopback pod IPs %s, pod CIDRs %s)", bound,
                 "on" if self.token is not None else "OFF", self._resolver_summary(),
                 "allowed" if settings.allow_loopback_pod_ip else "refused",
                 ",".join(map(str, settings.allowed_pod_cidrs)) or "any")
        watcher = self._start_watcher()
        # Everything allocated so far lives for the whole process: keep it out of the cyclic
        # GC's scans so collections (and their pauses) only look at per-connection objects.
        gc.collect()
        gc.freeze()
        ticker = self.loop.create_task(self._tick())
        try:
            await stop.wait()
        finally:
            self.server.close()
            deadline = self.loop.time() + SHUTDOWN_GRACE_SECONDS
            while self.connections and self.loop.time() < deadline:
                for conn in list(self.connections):
                    if not conn.requests and not conn.tunnel:  # idle keep-alive: nothing to finish
                        conn.transport.close()
                await asyncio.sleep(0.05)
            for conn in list(self.connections):
                conn.transport.abort()
            self.pool.close_all()
            ticker.cancel()
            if watcher is not None:
                watcher.stop()

    def _resolver_summary(self) -> str:
        settings = self.settings
        ports = "any port" if settings.sandbox_ports is None else "ports " + ",".join(map(str, settings.sandbox_ports))
        namespaces = ",".join(settings.sandbox_namespaces) or "any namespace"
        return f"{settings.resolver} ({namespaces}; {ports})"

    def _start_watcher(self) -> PodWatcher | None:
        if self.sandboxes is None:
            return None
        settings = self.settings
        client = KubeClient(KubeConfig.in_cluster(settings.kube_host, settings.kube_port, settings.serviceaccount_dir))
        index, metrics = self.sandboxes, self.metrics
        watcher = PodWatcher(client, index, on_change=lambda: metrics.sandbox_targets.set(len(index)),
                             on_error=lambda kind: metrics.watch_errors.labels(kind=kind).inc())
        watcher.start()
        return watcher


async def run(settings: RouterSettings) -> None:
    """Run the router until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await RouterApp(settings, loop).serve(stop)
