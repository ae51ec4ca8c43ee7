"""The request head: which client headers route, authenticate, frame or are forwarded, whether the
request may go upstream at all, and the head the router sends the sandbox instead.

Everything here is pure (header lists in, values out; no I/O, no state), so it is unit-tested
exhaustively (tests/unit/test_router_request_head.py). The client connection (proxy.py) uses it
once per request: classify() the headers, authorize() the bearer token, resolve the target
(routing.py), refusal() for what cannot be forwarded, then upstream_head().
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from .responses import Answer
from .routing import ROUTING_HEADERS

# Hop-by-hop headers (RFC 9110 7.6.1): never forwarded in either direction.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})
# Request headers never forwarded as-is: hop-by-hop, framing the router recomputes, and Host
# (rewritten to the target). Authorization and x-sandbox-* are handled separately and also never
# forwarded.
REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
# Connection tokens that name no end-to-end header to drop with them.
STANDARD_CONNECTION_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade", b""})
ROUTING = frozenset(ROUTING_HEADERS)
CANONICAL = {b"x-sandbox-id": "X-Sandbox-ID", b"x-sandbox-namespace": "X-Sandbox-Namespace",
             b"x-sandbox-port": "X-Sandbox-Port", b"x-sandbox-pod-ip": "X-Sandbox-Pod-IP",
             b"x-sandbox-timeout": "X-Sandbox-Timeout"}
FORWARDED_METHODS = frozenset({b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS"})
AUTHORITY = 4  # index of the Host value in upstream_head()'s parts, filled in once the target is known

_CRLF = b"\r\n"
_BEARER = b"bearer "
_BEARER_CHALLENGE = ((b"WWW-Authenticate", b"Bearer"),)

NOT_ORIGIN_FORM = Answer(400, "Request target must be an origin-form path.", reason="routing")
MISSING_AUTHORIZATION = Answer(401, "Missing or invalid Authorization header.", reason="auth",
                               headers=_BEARER_CHALLENGE)
INVALID_TOKEN = Answer(401, "Invalid token.", reason="auth", headers=_BEARER_CHALLENGE)
DUPLICATE = {name: Answer(400, f"Duplicate {canonical} header.", reason="routing")
             for name, canonical in CANONICAL.items()}
METHOD_NOT_ALLOWED = Answer(405, "Method not allowed through the router.", reason="method")
UPGRADE_NOT_SUPPORTED = Answer(400, "Only WebSocket upgrades are supported.", reason="routing")
INVALID_CONTENT_LENGTH = Answer(400, "Invalid Content-Length.", reason="malformed")
BODY_TOO_LARGE = Answer(413, "Request body too large.", reason="request_too_large")

Headers = list[tuple[bytes, bytes]]


def classify(method: bytes, headers: Iterable[tuple[bytes, bytes]]) -> tuple[
        dict[bytes, bytes], bytes | None, bytes | None, bytes | None, bool, bool, bool, Headers]:
    """Sort request headers (names in any case) into what the router acts on and what it forwards.

    Returns (routing, duplicate, authorization, content_length, chunked, websocket,
    expect_continue, forwarded):
    - routing: the X-Sandbox-* routing headers by lower-case name (the last one of a name wins);
      duplicate: the first routing header name that came more than once, or None;
    - authorization: the Authorization value when exactly one was sent, else None;
    - content_length: the raw Content-Length value (the last one); chunked: any
      Transfer-Encoding was sent (the upstream request is then re-chunked);
    - websocket: a GET asking for a WebSocket upgrade (Upgrade: websocket with an "upgrade"
      Connection token); expect_continue: Expect: 100-continue;
    - forwarded: every other header in order, without the ones the Connection header nominates.
    Names with "_" that would read as a dropped header or an X-Sandbox-* one once "_" is read as
    "-" (some servers do) are dropped, and so are unknown X-Sandbox-* headers.
    """
    routing: dict[bytes, bytes] = {}
    forwarded: Headers = []
    authorization: bytes | None = None
    authorization_count = 0
    connection_tokens: list[bytes] = []
    upgrade_value: bytes | None = None
    content_length: bytes | None = None
    expect: bytes | None = None
    chunked = False
    duplicate: bytes | None = None
    for name, value in headers:
        lower = name.lower()
        if b"_" in lower:
            # Some servers treat "_" like "-" in header names: never let X_Sandbox_ID or
            # Proxy_Authorization slip past as an innocent-looking header.
            normalised = lower.replace(b"_", b"-")
            if normalised.startswith(b"x-sandbox-") or normalised in REQUEST_DROP \
                    or normalised == b"authorization":
                continue
        if lower.startswith(b"x-sandbox-"):
            if lower in ROUTING:
                if lower in routing:
                    duplicate = duplicate or lower
                routing[lower] = value
            continue  # unknown x-sandbox-* headers are dropped as well
        if lower in REQUEST_DROP:
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
    websocket = False
    if connection_tokens:
        websocket = upgrade_value == b"websocket" and b"upgrade" in connection_tokens and method == b"GET"
        nominated = set(connection_tokens) - STANDARD_CONNECTION_TOKENS
        if nominated:
            forwarded = [(n, v) for n, v in forwarded if n.lower() not in nominated]
    return (routing, duplicate, authorization if authorization_count == 1 else None, content_length,
            chunked, websocket, expect == b"100-continue", forwarded)


def authorize(authorization: bytes | None, token: bytes) -> Answer | None:
    """None when `authorization` is "Bearer <token>" (scheme in any case, token compared in
    constant time, surrounding whitespace ignored), else the 401 answer."""
    if authorization is None or authorization[:7].lower() != _BEARER or len(authorization) <= 7:
        return MISSING_AUTHORIZATION
    if not hmac.compare_digest(authorization[7:].strip(), token):
        return INVALID_TOKEN
    return None


def refusal(method: bytes, parser_upgrade: bool, websocket: bool, content_length: bytes | None,
            max_body: int) -> Answer | None:
    """Why a routed request cannot be forwarded (method, upgrade, declared body size), or None.

    `parser_upgrade` is llhttp's verdict that the request switches protocols; only the
    WebSocket upgrade classify() recognised may. A stray Upgrade header without it is not
    refused (it is dropped). A Content-Length that is not a non-negative integer is malformed.
    """
    if method not in FORWARDED_METHODS:
        return METHOD_NOT_ALLOWED
    if parser_upgrade and not websocket:
        return UPGRADE_NOT_SUPPORTED
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = -1
        if declared < 0:
            return INVALID_CONTENT_LENGTH
        if declared > max_body:
            return BODY_TOO_LARGE
    return None


def upstream_head(method: bytes, url: bytes, forwarded: Headers, content_length: bytes | None,
                  chunked: bool, websocket: bool) -> list[bytes]:
    """The pieces of the HTTP/1.1 request head sent upstream; parts[AUTHORITY] (the Host value)
    is left empty until the target is known. The body is framed as the client framed it:
    re-chunked when it was chunked, else with its Content-Length."""
    parts = [method, b" ", url, b" HTTP/1.1\r\nHost: ", b"", _CRLF]
    for name, value in forwarded:
        parts += (name, b": ", value, _CRLF)
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None:
        parts += (b"Content-Length: ", content_length.strip(), _CRLF)
    if websocket:
        parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    parts.append(_CRLF)
    return parts


def declares_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True when the headers announce a request body: any Transfer-Encoding, or a Content-Length
    other than 0 (for the router's own endpoints, which never read one)."""
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding" or (lower == b"content-length" and value.strip() != b"0"):
            return True
    return False
