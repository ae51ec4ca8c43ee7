"""Prometheus metrics of the router, rendered in the text exposition format on GET /metrics.

Label children are created once and cached so the per-request cost is one counter increment
and one histogram observation.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# The *_created series double the output and carry no information a scraper needs.
disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)


class RouterMetrics:
    """Request counts by status code, latency histogram, upstream errors and connection gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("sandbox_router_requests_total",
                                "Requests answered by the router, by HTTP status code.",
                                ["code"], registry=self.registry)
        self.latency = Histogram("sandbox_router_request_duration_seconds",
                                 "Time from the end of the request headers to the end of the response.",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.upstream_errors = Counter("sandbox_router_upstream_errors_total",
                                       "Failures talking to sandboxes, by kind.",
                                       ["kind"], registry=self.registry)
        self.rejected = Counter("sandbox_router_rejected_total",
                                "Requests or connections refused before reaching a sandbox, by reason.",
                                ["reason"], registry=self.registry)
        self.client_connections = Gauge("sandbox_router_client_connections",
                                        "Open client connections.", registry=self.registry)
        self.upstream_connections = Gauge("sandbox_router_upstream_connections",
                                          "Open upstream connections (active and idle).", registry=self.registry)
        self.upstream_connects = Counter("sandbox_router_upstream_connections_opened_total",
                                         "Upstream connections opened (low relative to requests = pooling works).",
                                         registry=self.registry)
        self.websockets = Gauge("sandbox_router_websocket_tunnels",
                                "Open WebSocket tunnels.", registry=self.registry)
        self._by_code: dict[int, Counter] = {}
        self._observe = self.latency.observe

    def record(self, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        child = self._by_code.get(status)
        if child is None:
            child = self._by_code[status] = self.requests.labels(code=str(status))
        child.inc()
        self._observe(seconds)

    def upstream_error(self, kind: str) -> None:
        """Count one upstream failure (connect_refused, connect_timeout, timeout, reset, ...)."""
        self.upstream_errors.labels(kind=kind).inc()

    def reject(self, reason: str) -> None:
        """Count one refusal (auth, routing, limits, malformed)."""
        self.rejected.labels(reason=reason).inc()

    def render(self) -> bytes:
        """The current metrics in Prometheus text format."""
        return generate_latest(self.registry)
