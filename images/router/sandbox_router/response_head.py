"""The response head the router sends the client, re-framed from the sandbox's status and headers,
and the body framing towards the client that goes with it.

Pure (status and headers in, bytes and framing out; no I/O, no state), so it is unit-tested
exhaustively (tests/unit/test_router_response_head.py). Hop-by-hop headers, and the ones the
sandbox's Connection header nominates, never reach the client; the body is relayed verbatim when
its length is known, else re-chunked for an HTTP/1.1 client or close-delimited for an HTTP/1.0 one.
The client connection (proxy.py) relays the body in the OUT_* mode chosen here.
"""

from __future__ import annotations

from collections.abc import Iterable

from .request_head import HOP_BY_HOP, STANDARD_CONNECTION_TOKENS
from .responses import reason_phrase

OUT_NONE = 0      # no response body (HEAD, 204, 304)
OUT_RAW = 1       # body relayed verbatim (Content-Length or close-delimited)
OUT_CHUNKED = 2   # body re-framed as chunked towards the client

# Response headers never relayed as-is: hop-by-hop, and the length the router re-frames.
RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}

_CRLF = b"\r\n"
_SWITCHED = b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


def response_head(status: int, reason: bytes, headers: Iterable[tuple[bytes, bytes]], head_request: bool,
                  version: str, keep_alive: bool, timing: bytes | None = None) -> tuple[bytes, int, bool, bool]:
    """The client's response head for the sandbox's `status`, `reason` and `headers`.

    `head_request`: the request was HEAD; `version`: the client's HTTP version ("1.1", "1.0");
    `keep_alive`: the client connection may be reused after this response. Returns (head,
    out_mode, close_delimited, keep_alive): the OUT_* framing of the body, whether the body ends
    only when the sandbox closes, and whether the client connection stays open (an HTTP/1.0
    client of a body without length loses keep-alive). For 101 the head switches the client to a
    WebSocket tunnel, and the rest does not apply. `timing`: the router's Server-Timing value
    (timing.py), added after the sandbox's own fields.
    """
    out = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))]
    content_length: bytes | None = None
    chunked = False
    nominated: set[bytes] | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in RESPONSE_DROP:
            if lower == b"content-length":
                content_length = value
            elif lower == b"transfer-encoding":
                chunked = True
            elif lower == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")} - STANDARD_CONNECTION_TOKENS
                if tokens:
                    nominated = (nominated or set()) | tokens
            continue
        out += (name, b": ", value, _CRLF)
    if nominated:
        kept = [out[0]]
        for index in range(1, len(out), 4):
            if out[index].lower() not in nominated:
                kept += out[index:index + 4]
        out = kept
    if status == 101:
        out.append(_SWITCHED)
        return b"".join(out), OUT_NONE, False, keep_alive
    close_delimited = False
    if head_request or status in (204, 304):
        out_mode = OUT_NONE
        if content_length is not None:
            out += (b"Content-Length: ", content_length, _CRLF)
    elif content_length is not None and not chunked:
        out_mode = OUT_RAW
        out += (b"Content-Length: ", content_length, _CRLF)
    elif version == "1.1":
        out_mode = OUT_CHUNKED
        close_delimited = not chunked
        out.append(b"Transfer-Encoding: chunked\r\n")
    else:
        out_mode = OUT_RAW
        close_delimited = not chunked
        keep_alive = False
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    elif version == "1.0":
        out.append(b"Connection: keep-alive\r\n")
    if timing is not None:
        out += (b"Server-Timing: ", timing, _CRLF)
    out.append(_CRLF)
    return b"".join(out), out_mode, close_delimited, keep_alive
