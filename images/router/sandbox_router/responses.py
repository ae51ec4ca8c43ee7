"""The responses the router answers itself (errors, health, metrics): the Answer value that
describes one, and its serialisation."""

from __future__ import annotations

import json
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Answer:
    """How the router ends an exchange itself instead of relaying the sandbox's response.

    In the spirit of routing.RoutingError: the HTTP status and the `detail` of the JSON error
    body, plus what the exchange costs: the metric it is counted under (`reason` for a refusal,
    `kind` for an upstream failure) and whether the client connection ends with it. An answer
    with a `body` of its own is one of the router's endpoints (health, metrics) instead of an
    error. Status 0 means it is too late to answer (part of a response already went out): both
    sides are dropped.
    """

    status: int
    detail: str = ""
    reason: str | None = None   # counted as sandbox_router_rejected_total{reason}
    kind: str | None = None     # counted as sandbox_router_upstream_errors_total{kind}
    headers: tuple[tuple[bytes, bytes], ...] = ()
    close: bool = True          # the connection ends after it even when the client wants it kept
    body: bytes | None = None   # an endpoint's own body instead of the JSON error
    content_type: bytes = b"application/json"

    def encode(self, keep_alive: bool = True, head_only: bool = False) -> bytes:
        """The response bytes for a request that asked for `keep_alive` (and was HEAD: `head_only`).

        An error always carries its JSON body, for HEAD too: its connection closes after it.
        """
        close = self.close or not keep_alive
        if self.body is None:
            return error_response(self.status, self.detail, close=close, extra_headers=self.headers)
        return build_response(self.status, self.body, self.content_type, close=close,
                              extra_headers=self.headers, head_only=head_only)
