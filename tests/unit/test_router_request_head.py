"""Unit tests for sandbox_router.request_head: header classification, hop-by-hop stripping, the
bearer check, refusals and the upstream request head (pure functions, no sockets)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "router"))

from sandbox_router.request_head import (  # noqa: E402
    AUTHORITY, BODY_TOO_LARGE, DUPLICATE, FORWARDED_METHODS, HOP_BY_HOP, INVALID_CONTENT_LENGTH, INVALID_TOKEN,
    METHOD_NOT_ALLOWED, MISSING_AUTHORIZATION, REQUEST_DROP, UPGRADE_NOT_SUPPORTED, authorize, classify,
    declares_body, refusal, upstream_head,
)

Headers = list[tuple[bytes, bytes]]
FIELDS = ("routing", "duplicate", "authorization", "content_length", "chunked", "websocket",
          "expect_continue", "forwarded")


def sort(headers: Headers, method: bytes = b"GET") -> dict[str, object]:
    """classify() with its result named."""
    result = classify(method, headers)
    assert len(result) == len(FIELDS)
    return dict(zip(FIELDS, result))


def h(*lines: str) -> Headers:
    """Headers from "Name: value" lines (value kept verbatim after the first ": ")."""
    return [tuple(part.encode("latin-1") for part in line.split(": ", 1)) for line in lines]  # type: ignore[misc]


# -- classify: routing headers ---------------------------------------------------------------------
def test_routing_headers_are_collected_by_lower_case_name_and_never_forwarded() -> None:
    result = sort(h("X-Sandbox-ID: a", "x-sandbox-NAMESPACE: ns", "X-SANDBOX-PORT: 9", "X-Sandbox-Pod-IP: 1.2.3.4",
                    "X-Sandbox-Timeout: 5", "X-Other: 1"))
    assert result["routing"] == {b"x-sandbox-id": b"a", b"x-sandbox-namespace": b"ns", b"x-sandbox-port": b"9",
                                 b"x-sandbox-pod-ip": b"1.2.3.4", b"x-sandbox-timeout": b"5"}
    assert result["duplicate"] is None
    assert result["forwarded"] == [(b"X-Other", b"1")]


@pytest.mark.parametrize(("lines", "duplicate", "routing"), [
    (("X-Sandbox-ID: a", "X-Sandbox-ID: b"), b"x-sandbox-id", {b"x-sandbox-id": b"b"}),
    (("X-Sandbox-ID: a", "x-sandbox-id: a"), b"x-sandbox-id", {b"x-sandbox-id": b"a"}),
    (("X-Sandbox-Port: 1", "X-Sandbox-ID: a", "X-Sandbox-Port: 2", "X-Sandbox-ID: b"), b"x-sandbox-port",
     {b"x-sandbox-port": b"2", b"x-sandbox-id": b"b"}),
    (("X-Sandbox-ID: a", "X-Sandbox-Timeout: 1", "X-Sandbox-Timeout: 1", "X-Sandbox-ID: b"), b"x-sandbox-timeout",
     {b"x-sandbox-id": b"b", b"x-sandbox-timeout": b"1"}),
    (("X-Sandbox-Foo: 1", "X-Sandbox-Foo: 2", "X-Sandbox-ID: a"), None, {b"x-sandbox-id": b"a"}),
])
def test_the_first_repeated_routing_header_is_the_duplicate_and_the_last_value_wins(
        lines: tuple[str, ...], duplicate: bytes | None, routing: dict[bytes, bytes]) -> None:
    result = sort(h(*lines))
    assert result["duplicate"] == duplicate
    assert result["routing"] == routing


def test_every_routing_header_has_its_duplicate_answer() -> None:
    for name, canonical in ((b"x-sandbox-id", "X-Sandbox-ID"), (b"x-sandbox-pod-ip", "X-Sandbox-Pod-IP"),
                            (b"x-sandbox-namespace", "X-Sandbox-Namespace"), (b"x-sandbox-port", "X-Sandbox-Port"),
                            (b"x-sandbox-timeout", "X-Sandbox-Timeout")):
        answer = DUPLICATE[name]
        assert (answer.status, answer.detail, answer.reason, answer.close) == (
            400, f"Duplicate {canonical} header.", "routing", True)


@pytest.mark.parametrize("name", ["X-Sandbox-Foo", "x-sandbox-", "X-SANDBOX-ID-EXTRA", "x-sandbox-namespaces"])
def test_unknown_x_sandbox_headers_are_dropped(name: str) -> None:
    result = sort([(name.encode(), b"v"), (b"X-Keep", b"1")])
    assert result["routing"] == {}
    assert result["forwarded"] == [(b"X-Keep", b"1")]


# -- classify: what is dropped, what is forwarded ----------------------------------------------------
@pytest.mark.parametrize("name", sorted(REQUEST_DROP))
@pytest.mark.parametrize("case", [bytes.lower, bytes.upper, bytes.title])
def test_hop_by_hop_and_recomputed_headers_are_never_forwarded(name: bytes, case) -> None:  # type: ignore[no-untyped-def]
    value = b"chunked" if name == b"transfer-encoding" else b"1"
    result = sort([(case(name), value), (b"X-Keep", b"1")])
    assert result["forwarded"] == [(b"X-Keep", b"1")]


def test_the_dropped_set_is_hop_by_hop_plus_host_length_and_expect() -> None:
    assert REQUEST_DROP == HOP_BY_HOP | {b"host", b"content-length", b"expect"}
    assert {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
            b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade"} == HOP_BY_HOP


@pytest.mark.parametrize(("name", "forwarded"), [
    (b"X_Sandbox_ID", False), (b"x-sandbox_id", False), (b"X_Sandbox_Anything", False),
    (b"Proxy_Authorization", False), (b"Content_Length", False), (b"Transfer_Encoding", False),
    (b"Keep_Alive", False), (b"Proxy_Connection", False), (b"proxy_authenticate", False),
    (b"X_Custom", True), (b"Content_Type", True), (b"Authorization_x", True), (b"_", True),
])
def test_underscore_names_that_read_as_dropped_headers_are_dropped(name: bytes, forwarded: bool) -> None:
    result = sort([(name, b"v")])
    assert result["forwarded"] == ([(name, b"v")] if forwarded else [])
    assert result["routing"] == {} and result["authorization"] is None
    assert result["content_length"] is None and result["chunked"] is False


def test_forwarded_headers_keep_their_order_case_and_repeats() -> None:
    lines = h("User-Agent: sdk", "x-lower: a", "X-Dup: 1", "Accept: */*", "X-Dup: 2", "Cookie: a=1; b=2")
    assert sort(lines)["forwarded"] == lines


ALL = [b"X-Keep", b"X-Drop", b"X-Other", b"x-drop"]


@pytest.mark.parametrize(("connection", "kept"), [
    (["keep-alive, X-Drop"], [b"X-Keep", b"X-Other"]),  # every header of the name, in any case
    (["close"], ALL),
    (["Upgrade"], ALL),
    ([",,  , "], ALL),
    ([" X-DROP ,x-other"], [b"X-Keep"]),
    (["x-drop", "X-Other"], [b"X-Keep"]),  # the tokens of several Connection headers add up
    (["X-Sandbox-ID, Authorization, Host"], ALL),  # never forwarded anyway
    (["X-Keep, X-Drop, X-Other"], []),
])
def test_headers_nominated_by_connection_are_dropped(connection: list[str], kept: list[bytes]) -> None:
    headers = [(b"Connection", value.encode()) for value in connection]
    headers += [(b"X-Keep", b"1"), (b"X-Drop", b"2"), (b"X-Other", b"3"), (b"x-drop", b"4")]
    assert [name for name, _ in sort(headers)["forwarded"]] == kept  # type: ignore[union-attr]


# -- classify: authorization, framing, upgrade, expect ----------------------------------------------
@pytest.mark.parametrize(("lines", "authorization"), [
    ((), None),
    (("Authorization: Bearer t",), b"Bearer t"),
    (("authorization: Bearer t",), b"Bearer t"),
    (("Authorization: Bearer t", "AUTHORIZATION: Bearer t"), None),  # two are one too many
    (("Authorization: Bearer a", "Authorization: Bearer b", "Authorization: Bearer c"), None),
    (("Proxy-Authorization: Bearer t",), None),
    (("Proxy_Authorization: Bearer t", "Authorization: Bearer t"), b"Bearer t"),
    (("Authorization: ",), b""),
])
def test_authorization_is_the_single_value_or_none(lines: tuple[str, ...], authorization: bytes | None) -> None:
    result = sort(h(*lines))
    assert result["authorization"] == authorization
    assert result["forwarded"] == []


@pytest.mark.parametrize(("lines", "content_length", "chunked"), [
    ((), None, False),
    (("Content-Length: 5",), b"5", False),
    (("content-length:  5 ",), b" 5 ", False),           # raw: refusal() and upstream_head() read it
    (("Content-Length: 5", "Content-Length: 7"), b"7", False),  # llhttp refuses this before; the last wins
    (("Transfer-Encoding: chunked",), None, True),
    (("transfer-encoding: gzip, chunked",), None, True),
    (("Transfer-Encoding: gzip",), None, True),
    (("Content-Length: 3", "Transfer-Encoding: chunked"), b"3", True),
    (("Content_Length: 3", "Transfer_Encoding: chunked"), None, False),
])
def test_body_framing(lines: tuple[str, ...], content_length: bytes | None, chunked: bool) -> None:
    result = sort(h(*lines), b"POST")
    assert (result["content_length"], result["chunked"]) == (content_length, chunked)
    assert result["forwarded"] == []


@pytest.mark.parametrize(("method", "lines", "websocket"), [
    (b"GET", ("Connection: Upgrade", "Upgrade: websocket"), True),
    (b"GET", ("connection: keep-alive, UPGRADE", "upgrade: WebSocket "), True),
    (b"GET", ("Upgrade: websocket", "Connection: upgrade"), True),
    (b"GET", ("Connection: x-a", "Connection: upgrade", "Upgrade: websocket"), True),
    (b"POST", ("Connection: Upgrade", "Upgrade: websocket"), False),
    (b"HEAD", ("Connection: Upgrade", "Upgrade: websocket"), False),
    (b"GET", ("Upgrade: websocket",), False),
    (b"GET", ("Connection: upgrade",), False),
    (b"GET", ("Connection: upgrade", "Upgrade: h2c"), False),
    (b"GET", ("Connection: upgrade", "Upgrade: websocket", "Upgrade: h2c"), False),  # the last one counts
    (b"GET", ("Connection: upgraded", "Upgrade: websocket"), False),
    (b"GET", ("Connection: Upgrade", "Upgrade: websocket, h2c"), False),
    (b"GET", ("Connection: Upgrade", "Upgrade_: websocket"), False),
])
def test_websocket_upgrade_needs_get_upgrade_websocket_and_the_connection_token(
        method: bytes, lines: tuple[str, ...], websocket: bool) -> None:
    result = sort(h(*lines), method)
    assert result["websocket"] is websocket
    assert all(name.lower() not in (b"connection", b"upgrade") for name, _ in result["forwarded"])  # type: ignore[union-attr]


# -- authorize -------------------------------------------------------------------------------------
TOKEN = b"tok-1234567890"


@pytest.mark.parametrize(("authorization", "answer"), [
    (b"Bearer tok-1234567890", None),
    (b"bearer tok-1234567890", None),
    (b"BEARER tok-1234567890", None),
    (b"BeArEr tok-1234567890", None),
    (b"Bearer  tok-1234567890  ", None),       # surrounding whitespace is ignored
    (b"Bearer tok-1234567890\t", None),
    (None, MISSING_AUTHORIZATION),
    (b"", MISSING_AUTHORIZATION),
    (b"Bearer", MISSING_AUTHORIZATION),
    (b"Bearer ", MISSING_AUTHORIZATION),        # a scheme and nothing after it
    (b"Bearer\ttok-1234567890", MISSING_AUTHORIZATION),
    (b"Basic tok-1234567890", MISSING_AUTHORIZATION),
    (b"Token tok-1234567890", MISSING_AUTHORIZATION),
    (b"tok-1234567890", MISSING_AUTHORIZATION),
    (b"Bearer  ", INVALID_TOKEN),               # blank token
    (b"Bearer x", INVALID_TOKEN),
    (b"Bearer tok-123456789", INVALID_TOKEN),   # short
    (b"Bearer tok-12345678901", INVALID_TOKEN),  # long
    (b"Bearer TOK-1234567890", INVALID_TOKEN),  # the token is case-sensitive
    (b"Bearer tok-1234567890 x", INVALID_TOKEN),
])
def test_authorize(authorization: bytes | None, answer: object) -> None:
    assert authorize(authorization, TOKEN) is answer


def test_auth_answers_are_401_with_a_bearer_challenge() -> None:
    assert (MISSING_AUTHORIZATION.status, MISSING_AUTHORIZATION.detail) == (
        401, "Missing or invalid Authorization header.")
    assert (INVALID_TOKEN.status, INVALID_TOKEN.detail) == (401, "Invalid token.")
    for answer in (MISSING_AUTHORIZATION, INVALID_TOKEN):
        assert answer.headers == ((b"WWW-Authenticate", b"Bearer"),)
        assert (answer.reason, answer.kind, answer.close) == ("auth", None, True)


# -- refusal ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "parser_upgrade", "websocket", "content_length", "answer"), [
    *[(method, False, False, None, None) for method in sorted(FORWARDED_METHODS)],
    (b"PROPFIND", False, False, None, METHOD_NOT_ALLOWED),
    (b"TRACE", False, False, None, METHOD_NOT_ALLOWED),
    (b"CONNECT", True, False, None, METHOD_NOT_ALLOWED),
    (b"get", False, False, None, METHOD_NOT_ALLOWED),
    (b"PROPFIND", True, False, b"x", METHOD_NOT_ALLOWED),  # the method is judged first
    (b"GET", True, False, None, UPGRADE_NOT_SUPPORTED),
    (b"POST", True, False, None, UPGRADE_NOT_SUPPORTED),
    (b"GET", True, False, b"99999", UPGRADE_NOT_SUPPORTED),  # before the body size
    (b"GET", True, True, None, None),
    (b"GET", False, True, None, None),
    (b"POST", False, False, b"0", None),
    (b"POST", False, False, b"1000", None),
    (b"POST", False, False, b" 12 ", None),
    (b"POST", False, False, b"1001", BODY_TOO_LARGE),
    (b"POST", False, False, b"9" * 30, BODY_TOO_LARGE),
    (b"POST", False, False, b"-1", INVALID_CONTENT_LENGTH),
    (b"POST", False, False, b"abc", INVALID_CONTENT_LENGTH),
    (b"POST", False, False, b"", INVALID_CONTENT_LENGTH),
    (b"POST", False, False, b"1.5", INVALID_CONTENT_LENGTH),
    (b"POST", False, False, b"0x10", INVALID_CONTENT_LENGTH),
    # int() accepts these (llhttp refuses such a Content-Length before it gets here).
    (b"POST", False, False, b"+5", None),
    (b"POST", False, False, b"1_000", None),
])
def test_refusal(method: bytes, parser_upgrade: bool, websocket: bool, content_length: bytes | None,
                 answer: object) -> None:
    assert refusal(method, parser_upgrade, websocket, content_length, 1000) is answer


def test_refusal_answers() -> None:
    table = [(METHOD_NOT_ALLOWED, 405, "Method not allowed through the router.", "method"),
             (UPGRADE_NOT_SUPPORTED, 400, "Only WebSocket upgrades are supported.", "routing"),
             (INVALID_CONTENT_LENGTH, 400, "Invalid Content-Length.", "malformed"),
             (BODY_TOO_LARGE, 413, "Request body too large.", "request_too_large")]
    for answer, status, detail, reason in table:
        assert (answer.status, answer.detail, answer.reason, answer.kind, answer.close) == (
            status, detail, reason, None, True)


# -- upstream_head ---------------------------------------------------------------------------------
def joined(parts: list[bytes], authority: bytes = b"10.0.0.1:8888") -> bytes:
    assert parts[AUTHORITY] == b""  # left for the target's authority
    parts[AUTHORITY] = authority
    return b"".join(parts)


@pytest.mark.parametrize(("args", "head"), [
    ((b"GET", b"/", [], None, False, False), b"GET / HTTP/1.1\r\nHost: 10.0.0.1:8888\r\n\r\n"),
    ((b"POST", b"/a%2Fb?q=1&r", [(b"X-A", b"1"), (b"x-b", b"2")], b" 5 ", False, False),
     b"POST /a%2Fb?q=1&r HTTP/1.1\r\nHost: 10.0.0.1:8888\r\nX-A: 1\r\nx-b: 2\r\nContent-Length: 5\r\n\r\n"),
    ((b"PUT", b"/u", [], b"5", True, False),  # chunked wins: the body is re-chunked
     b"PUT /u HTTP/1.1\r\nHost: 10.0.0.1:8888\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ((b"GET", b"/ws", [(b"Sec-WebSocket-Key", b"k")], None, False, True),
     b"GET /ws HTTP/1.1\r\nHost: 10.0.0.1:8888\r\nSec-WebSocket-Key: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
    ((b"DELETE", b"/d", [(b"X-Dup", b"1"), (b"X-Dup", b"2")], b"0", False, False),
     b"DELETE /d HTTP/1.1\r\nHost: 10.0.0.1:8888\r\nX-Dup: 1\r\nX-Dup: 2\r\nContent-Length: 0\r\n\r\n"),
])
def test_upstream_head(args: tuple, head: bytes) -> None:  # type: ignore[type-arg]
    assert joined(upstream_head(*args)) == head


def test_a_classified_request_becomes_the_upstream_head() -> None:
    headers = h("Host: router", "Authorization: Bearer t", "X-Sandbox-ID: sbx", "X-Sandbox-Port: 9000",
                "User-Agent: sdk", "Connection: keep-alive, X-Drop", "X-Drop: 1", "Keep-Alive: 5",
                "Content-Length: 3", "Expect: 100-continue", "Accept: */*")
    _, _, _, content_length, chunked, websocket, expect_continue, forwarded = classify(b"POST", headers)
    assert expect_continue
    parts = upstream_head(b"POST", b"/run", forwarded, content_length, chunked, websocket)
    assert joined(parts, b"[fd00::1]:9000") == (
        b"POST /run HTTP/1.1\r\nHost: [fd00::1]:9000\r\nUser-Agent: sdk\r\nAccept: */*\r\n"
        b"Content-Length: 3\r\n\r\n")


# -- yes/no facts: Expect: 100-continue (classify) and an announced body (declares_body) --------------
def expects_continue(headers: Headers) -> bool:
    return sort(headers, b"POST")["expect_continue"]  # type: ignore[return-value]


@pytest.mark.parametrize(("fact", "lines", "yes"), [
    (expects_continue, (), False),
    (expects_continue, ("Expect: 100-continue",), True),
    (expects_continue, ("expect:  100-Continue ",), True),
    (expects_continue, ("Expect: 100-continue, x",), False),
    (expects_continue, ("Expect: something",), False),
    (expects_continue, ("Expect: 100-continue", "Expect: other"), False),  # the last one counts
    (declares_body, (), False),
    (declares_body, ("Content-Length: 0",), False),
    (declares_body, ("content-length:  0 ",), False),
    (declares_body, ("Content-Length: 1",), True),
    (declares_body, ("Content-Length: 2147483648",), True),
    (declares_body, ("Content-Length: 00",), True),
    (declares_body, ("Transfer-Encoding: chunked",), True),
    (declares_body, ("transfer-encoding: identity",), True),
    (declares_body, ("Content-Length: 0", "Transfer-Encoding: chunked"), True),
    (declares_body, ("Content_Length: 5", "Transfer_Encoding: chunked", "X-Length: 5"), False),
])
def test_yes_no_facts_of_the_head(fact, lines: tuple[str, ...], yes: bool) -> None:  # type: ignore[no-untyped-def]
    assert fact(h(*lines)) is yes
