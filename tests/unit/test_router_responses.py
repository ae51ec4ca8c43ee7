"""Unit tests for sandbox_router.responses (the router's own answers) and sandbox_router.metrics."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "router"))

from sandbox_router.metrics import RouterMetrics  # noqa: E402
from sandbox_router.responses import HEALTH_BODY, Answer, error_response  # noqa: E402


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


def test_answer_defaults_to_an_error_that_closes_and_is_frozen() -> None:
    answer = Answer(502)
    assert (answer.detail, answer.reason, answer.kind, answer.headers, answer.close, answer.body,
            answer.content_type) == ("", None, None, (), True, None, b"application/json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.status = 200  # type: ignore[misc]
    assert Answer(400, "x", reason="routing") == Answer(400, "x", reason="routing")


@pytest.mark.parametrize(("keep_alive", "head_only"), [(True, False), (False, False), (True, True)])
def test_an_error_answer_is_the_json_detail_and_always_closes(keep_alive: bool, head_only: bool) -> None:
    answer = Answer(401, "Invalid token.", reason="auth", headers=((b"WWW-Authenticate", b"Bearer"),))
    raw = answer.encode(keep_alive, head_only)
    assert raw == error_response(401, "Invalid token.", extra_headers=((b"WWW-Authenticate", b"Bearer"),))
    assert raw == (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 27\r\n"
                   b"WWW-Authenticate: Bearer\r\nConnection: close\r\n\r\n{\"detail\":\"Invalid token.\"}")
    assert Answer(400, "x").encode() == error_response(400, "x")


@pytest.mark.parametrize(("close", "keep_alive", "head_only", "connection_close", "body"), [
    (False, True, False, False, True),
    (False, False, False, True, True),
    (True, True, False, True, True),
    (False, True, True, False, False),
    (True, False, True, True, False),
])
def test_an_endpoint_answer_has_its_own_body(close: bool, keep_alive: bool, head_only: bool,
                                             connection_close: bool, body: bool) -> None:
    raw = Answer(200, body=HEALTH_BODY, close=close).encode(keep_alive, head_only)
    head, rest = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    assert f"Content-Length: {len(HEALTH_BODY)}".encode() in head  # the body's length, for HEAD too
    assert (b"Connection: close" in head) is connection_close
    assert rest == (HEALTH_BODY if body else b"")
    text = Answer(200, body=b"# metrics", content_type=b"text/plain").encode()
    assert b"Content-Type: text/plain\r\n" in text and text.endswith(b"\r\n\r\n# metrics")
