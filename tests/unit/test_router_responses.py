"""Unit tests for sandbox_router.responses and sandbox_router.metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "router"))

from sandbox_router.metrics import RouterMetrics  # noqa: E402
from sandbox_router.responses import error_response  # noqa: E402


def test_error_response_is_json_detail_and_closes() -> None:
    raw = error_response(502, "Could not connect to the backend sandbox: x")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Connection: close" in head and b"Content-Type: application/json" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"detail": "Could not connect to the backend sandbox: x"}


def test_metrics_render_counts_and_histogram() -> None:
    metrics = RouterMetrics()
    metrics.record(200, 0.0004)
    metrics.record(200, 0.002)
    metrics.record(504, 1.5)
    metrics.upstream_error("timeout")
    text = metrics.render().decode()
    assert 'sandbox_router_requests_total{code="200"} 2.0' in text
    assert 'sandbox_router_requests_total{code="504"} 1.0' in text
    assert 'sandbox_router_request_duration_seconds_bucket{le="0.0005"} 1.0' in text
    assert "sandbox_router_request_duration_seconds_count 3.0" in text
    assert 'sandbox_router_upstream_errors_total{kind="timeout"} 1.0' in text
