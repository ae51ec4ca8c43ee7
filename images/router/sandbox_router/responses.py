"""Serialisation of the responses the router answers itself (errors, health, metrics)."""

from __future__ import annotations

import json
from http import HTTPStatus

_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


def reason_phrase(status: int) -> bytes:
    """Standard reason phrase for a status code (b"Unknown" when there is none)."""
    return _REASONS.get(status, b"Unknown")


def build_response(status: int, body: bytes, content_type: bytes, *, close: bool,
                   extra_headers: tuple[tuple[bytes, bytes], ...] = (), head_only: bool = False) -> bytes:
    """A complete HTTP/1.1 response with Content-Length framing."""
    lines = [b"HTTP/1.1 %d %s" % (status, reason_phrase(status)),
             b"Content-Type: " + content_type,
             b"Content-Length: %d" % len(body)]
    lines.extend(name + b": " + value for name, value in extra_headers)
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


def json_body(payload: object) -> bytes:
    """Compact JSON encoding used for every router-generated body."""
    return json.dumps(payload, separators=(",", ":")).encode()


def error_response(status: int, detail: str, *, close: bool = True,
                   extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """The `{"detail": ...}` JSON error shape shared with the upstream router."""
    return build_response(status, json_body({"detail": detail}), b"application/json",
                          close=close, extra_headers=extra_headers)


HEALTH_BODY = json_body({"status": "ok"})
NOT_READY_BODY = json_body({"status": "syncing", "detail": "The sandbox pod index is not loaded yet."})
