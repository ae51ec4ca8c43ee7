"""Prometheus metrics of the router, rendered in the text exposition format on GET /metrics.

The per-request series (count by status code, latency histogram) are plain integers updated on
the event loop thread and turned into metric families only when scraped: that keeps the
per-request cost to a dict increment and a bisect, instead of the lock-protected updates of
prometheus_client's Counter/Histogram. Rare events (errors, refusals, connection gauges) use
the regular prometheus_client types.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# The *_created series double the output and carry no information a scraper needs.
disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)


class RequestStats(Collector):
    """Request count by status code and the latency histogram, collected at scrape time."""

    def __init__(self) -> None:
        self.by_code: dict[int, int] = {}
        self.bucket_hits = [0] * (len(LATENCY_BUCKETS) + 1)  # last slot: above the largest bucket
        self.latency_sum = 0.0

    def record(self, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        by_code = self.by_code
        by_code[status] = by_code.get(status, 0) + 1
        self.bucket_hits[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def collect(self) -> Iterator[Metric]:
        """Metric families for the current values."""
        requests = CounterMetricFamily("sandbox_router_requests", "Requests answered by the router, by HTTP "
                                       "status code.", labels=["code"])
        for code, count in sorted(self.by_code.items()):
            requests.add_metric([str(code)], count)
        yield requests
        cumulative, buckets = 0, []
        for bound, hits in zip((*LATENCY_BUCKETS, float("inf")), self.bucket_hits):
            cumulative += hits
            buckets.append((floatToGoString(bound), cumulative))
        latency = HistogramMetricFamily("sandbox_router_request_duration_seconds",
                                        "Time from the end of the request headers to the end of the response.")
        latency.add_metric([], buckets, sum_value=self.latency_sum)
        yield latency


class RouterMetrics:
    """Request counts by status code, latency histogram, upstream errors and connection gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.stats = RequestStats()
        self.registry.register(self.stats)
        self.record = self.stats.record
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
        self.sandbox_targets = Gauge("sandbox_router_sandbox_targets",
                                     "Sandbox pods the watch resolver can route to.", registry=self.registry)
        self.watch_errors = Counter("sandbox_router_watch_errors_total",
                                    "Failed or expired list/watch requests to the Kubernetes API, by kind.",
                                    ["kind"], registry=self.registry)
        # Requests that arrived before the watch knew their sandbox (a claim can be Ready a moment
        # before its pod's update reaches the router): how long they waited, and whether it came.
        self.route_waits = Histogram("sandbox_router_route_wait_seconds",
                                     "Time requests for a sandbox not yet in the pod index waited for it, by outcome.",
                                     ["outcome"], registry=self.registry,
                                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10))
        self.evictions = Counter("sandbox_router_evicted_connections_total",
                                 "Idle or still-unsent client connections closed to admit a new one at the "
                                 "global connection limit.", registry=self.registry)

    def upstream_error(self, kind: str) -> None:
        """Count one upstream failure (connect_failed, connect_timeout, timeout, reset, ...)."""
        self.upstream_errors.labels(kind=kind).inc()

    def reject(self, reason: str) -> None:
        """Count one refusal (auth, routing, limits, malformed)."""
        self.rejected.labels(reason=reason).inc()

    def render(self) -> bytes:
        """The current metrics in Prometheus text format."""
        return generate_latest(self.registry)
