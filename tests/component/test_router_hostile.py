"""Hostile routing-header table: every row is refused with the right status and nothing reaches
the sandbox (the recording upstream must see no request at all).

Every row would otherwise be a valid request to the recording upstream on 127.0.0.1, so a
router that let one through would be caught. The "main" router allows loopback pod IPs (test
flag) but only inside 127.0.0.0/24 and ::1, so even a broken category check could only ever
connect to this machine; the "strict" router runs with the production default (loopback
refused) and checks the loopback variants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from sdk_harness import TEST_TOKEN, RecordingUpstream, RouterProcess, build_request, raw_request

pytestmark = pytest.mark.timeout(120)

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Env:
    """Ports of the servers a row's request is built against."""

    upstream_port: int
    router_port: int


def base(env: Env, **changes: str | None) -> Headers:
    """Valid headers for the recording upstream, with some replaced (None removes)."""
    headers = {"Authorization": f"Bearer {TEST_TOKEN}", "X-Sandbox-ID": "sbx-hostile",
               "X-Sandbox-Namespace": "default", "X-Sandbox-Port": str(env.upstream_port),
               "X-Sandbox-Pod-IP": "127.0.0.1"}
    for key, value in changes.items():
        name = {"id": "X-Sandbox-ID", "ns": "X-Sandbox-Namespace", "port": "X-Sandbox-Port",
                "ip": "X-Sandbox-Pod-IP", "timeout": "X-Sandbox-Timeout", "auth": "Authorization"}[key]
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return list(headers.items())


@dataclass(frozen=True)
class Row:
    """One hostile request and the refusal it must get."""

    name: str
    status: int
    build: Callable[[Env], bytes]
    router: str = "main"
    detail: str | None = None


def hdr(status: int, detail: str | None = None, router: str = "main", extra: Headers = (), **changes: str | None
        ) -> Callable[[str], Row]:
    """Row whose request is the base request with header changes (and extra headers appended)."""
    def make(name: str) -> Row:
        return Row(name, status, lambda env: build_request(base(env, **changes) + list(extra)), router, detail)
    return make


def dup(name_: str, value: str, status: int = 400) -> Callable[[str], Row]:
    """Row that sends a routing header twice."""
    def make(name: str) -> Row:
        def build(env: Env) -> bytes:
            headers = base(env)
            val = value.replace("{port}", str(env.upstream_port))
            return build_request(headers + [(name_, val)])
        return Row(name, status, build, "main", "Duplicate" if status == 400 else None)
    return make


def raw(status: int, fn: Callable[[Env], bytes]) -> Callable[[str], Row]:
    """Row with a hand-written request."""
    def make(name: str) -> Row:
        return Row(name, status, fn)
    return make


def auth_lines(env: Env) -> str:
    return "\r\n".join(f"{n}: {v}" for n, v in base(env))


SPECS: dict[str, Callable[[str], Row]] = {
    # --- X-Sandbox-ID ---------------------------------------------------------------------
    "id-missing": hdr(400, "X-Sandbox-ID header is required", id=None),
    "id-empty": hdr(400, "X-Sandbox-ID header is required", id=""),
    "id-uppercase": hdr(400, "Invalid sandbox ID", id="SBX"),
    "id-underscore": hdr(400, "Invalid sandbox ID", id="sbx_1"),
    "id-leading-hyphen": hdr(400, "Invalid sandbox ID", id="-sbx"),
    "id-trailing-hyphen": hdr(400, "Invalid sandbox ID", id="sbx-"),
    "id-dns-injection": hdr(400, "Invalid sandbox ID", id="sbx.evil.com"),
    "id-too-long": hdr(400, "Invalid sandbox ID", id="a" * 64),
    "id-path-traversal": hdr(400, "Invalid sandbox ID", id="sbx/../x"),
    "id-percent-encoded": hdr(400, "Invalid sandbox ID", id="sbx%2e"),
    "id-inner-space": hdr(400, "Invalid sandbox ID", id="sb x"),
    "id-latin1-byte": hdr(400, "Invalid sandbox ID", id="sbx\xe9"),
    "id-with-port": hdr(400, "Invalid sandbox ID", id="sbx:80"),
    "id-userinfo": hdr(400, "Invalid sandbox ID", id="sbx@evil.com"),
    "id-duplicate-same": dup("X-Sandbox-ID", "sbx-hostile"),
    "id-duplicate-other": dup("x-sandbox-id", "other"),
    # --- X-Sandbox-Namespace -----------------------------------------------------------------
    "ns-uppercase": hdr(400, "Invalid namespace", ns="Default"),
    "ns-underscore": hdr(400, "Invalid namespace", ns="kube_system"),
    "ns-dns-injection": hdr(400, "Invalid namespace", ns="ns.evil.com"),
    "ns-empty": hdr(400, "Invalid namespace", ns=""),
    "ns-too-long": hdr(400, "Invalid namespace", ns="n" * 64),
    "ns-traversal": hdr(400, "Invalid namespace", ns="../ns"),
    "ns-duplicate": dup("X-Sandbox-Namespace", "other"),
    # --- X-Sandbox-Port -------------------------------------------------------------------------
    "port-zero": hdr(400, "Invalid port", port="0"),
    "port-too-big": hdr(400, "Invalid port", port="65536"),
    "port-negative": hdr(400, "Invalid port", port="-1"),
    "port-alpha": hdr(400, "Invalid port", port="88a"),
    "port-hex": hdr(400, "Invalid port", port="0x22b8"),
    "port-empty": hdr(400, "Invalid port", port=""),
    "port-leading-zero": hdr(400, "Invalid port", port="08888"),
    "port-decimal": hdr(400, "Invalid port", port="8888.0"),
    "port-exponent": hdr(400, "Invalid port", port="1e3"),
    "port-huge": hdr(400, "Invalid port", port="9" * 20),
    "port-plus": hdr(400, "Invalid port", port="+8888"),
    "port-fullwidth": hdr(400, "Invalid port", port="\xef\xbc\x98\xef\xbc\x98"),
    "port-duplicate": dup("X-Sandbox-Port", "{port}"),
    # --- X-Sandbox-Pod-IP ------------------------------------------------------------------------
    "ip-garbage": hdr(400, "Invalid target IP", ip="not-an-ip"),
    "ip-hostname": hdr(400, "Invalid target IP", ip="localhost"),
    "ip-unspecified-v4": hdr(400, "unspecified", ip="0.0.0.0"),
    "ip-unspecified-v6": hdr(400, "unspecified", ip="::"),
    "ip-this-network": hdr(400, "unspecified", ip="0.1.2.3"),
    "ip-metadata": hdr(400, "link-local", ip="169.254.169.254"),
    "ip-mapped-metadata": hdr(400, "link-local", ip="::ffff:169.254.169.254"),
    "ip-link-local-v6": hdr(400, "link-local", ip="fe80::1"),
    "ip-zone-id": hdr(400, "Invalid target IP", ip="fe80::1%eth0"),
    "ip-multicast-v4": hdr(400, "multicast", ip="224.0.0.1"),
    "ip-multicast-v6": hdr(400, "multicast", ip="ff02::1"),
    "ip-broadcast": hdr(400, "broadcast", ip="255.255.255.255"),
    "ip-reserved": hdr(400, "reserved", ip="240.0.0.1"),
    "ip-aws-imds-v6": hdr(400, "metadata", ip="fd00:ec2::254"),
    "ip-alibaba-metadata": hdr(400, "metadata", ip="100.100.100.200"),
    "ip-azure-wireserver": hdr(400, "metadata", ip="168.63.129.16"),
    "ip-outside-pod-cidr": hdr(400, "outside the configured pod CIDRs", ip="127.0.1.1"),
    "ip-public-outside-cidr": hdr(400, "outside the configured pod CIDRs", ip="8.8.8.8"),
    # issue 11 item 8: ranges the policy used to accept
    "ip-gcp-metadata-v6": hdr(400, "metadata", ip="fd20:ce::254"),
    "ip-6to4-metadata": hdr(400, "embeds an IPv4 address", ip="2002:a9fe:a9fe::"),
    "ip-nat64-metadata": hdr(400, "embeds an IPv4 address", ip="64:ff9b::a9fe:a9fe"),
    "ip-teredo": hdr(400, "embeds an IPv4 address", ip="2001:0:4136:e378:8000:63bf:3fff:fdd2"),
    "ip-cgnat": hdr(400, "shared address space", ip="100.64.0.1"),
    "ip-ietf-protocol": hdr(400, "special-purpose", ip="192.0.0.170"),
    "ip-benchmarking": hdr(400, "benchmarking", ip="198.18.0.1"),
    "ip-documentation": hdr(400, "documentation", ip="192.0.2.10"),
    "ip-class-e": hdr(400, "reserved", ip="240.0.0.1"),
    "ip-this-network-high": hdr(400, "unspecified", ip="0.255.255.254"),
    "ip-shorthand": hdr(400, "Invalid target IP", ip="127.1"),
    "ip-hex-octet": hdr(400, "Invalid target IP", ip="0x7f.0.0.1"),
    "ip-leading-zero": hdr(400, "Invalid target IP", ip="127.000.0.1"),
    "ip-with-port": hdr(400, "Invalid target IP", ip="127.0.0.1:8080"),
    "ip-bracketed": hdr(400, "Invalid target IP", ip="[::1]"),
    "ip-cidr": hdr(400, "Invalid target IP", ip="127.0.0.0/8"),
    "ip-inner-space": hdr(400, "Invalid target IP", ip="127.0.0.1 8"),
    "ip-url": hdr(400, "Invalid target IP", ip="http://127.0.0.1"),
    "ip-empty": hdr(400, "Invalid target IP", ip=""),
    "ip-duplicate": dup("X-Sandbox-Pod-IP", "127.0.0.1"),
    "ip-router-itself": lambda name: Row(name, 400, lambda env: build_request(
        base(env, port=str(env.router_port))), "main", "router itself"),
    # --- X-Sandbox-Timeout --------------------------------------------------------------------------
    "timeout-alpha": hdr(400, "Invalid timeout", timeout="abc"),
    "timeout-negative": hdr(400, "Invalid timeout", timeout="-5"),
    "timeout-zero": hdr(400, "Invalid timeout", timeout="0"),
    "timeout-nan": hdr(400, "Invalid timeout", timeout="nan"),
    "timeout-inf": hdr(400, "Invalid timeout", timeout="inf"),
    "timeout-overflow": hdr(400, "Invalid timeout", timeout="1e400"),
    "timeout-unit": hdr(400, "Invalid timeout", timeout="5s"),
    "timeout-duplicate": hdr(400, "Duplicate", extra=[("X-Sandbox-Timeout", "5"), ("x-sandbox-timeout", "6")]),
    # --- Authorization --------------------------------------------------------------------------------
    "auth-missing": hdr(401, "Missing or invalid Authorization", auth=None),
    "auth-wrong-token": hdr(401, "Invalid token", auth="Bearer wrong-token"),
    "auth-token-suffix": hdr(401, "Invalid token", auth=f"Bearer {TEST_TOKEN}x"),
    "auth-token-prefix": hdr(401, "Invalid token", auth=f"Bearer {TEST_TOKEN[:-1]}"),
    "auth-basic-scheme": hdr(401, "Missing or invalid Authorization", auth=f"Basic {TEST_TOKEN}"),
    "auth-bare-scheme": hdr(401, "Missing or invalid Authorization", auth="Bearer"),
    "auth-raw-token": hdr(401, "Missing or invalid Authorization", auth=TEST_TOKEN),
    "auth-duplicate": hdr(401, "Missing or invalid Authorization", extra=[("Authorization", "Bearer wrong")]),
    "auth-before-routing": hdr(401, None, auth=None, id="BAD_ID"),
    # --- request-level smuggling and limits --------------------------------------------------------------
    "absolute-form-target": raw(400, lambda env: build_request(
        base(env), target=f"http://127.0.0.1:{env.upstream_port}/probe")),
    "asterisk-target": raw(400, lambda env: build_request(base(env), method="OPTIONS", target="*")),
    "connect-method": raw(400, lambda env: build_request(
        base(env), method="CONNECT", target=f"127.0.0.1:{env.upstream_port}")),
    "trace-method": raw(405, lambda env: build_request(base(env), method="TRACE")),
    "cl-and-te": raw(400, lambda env: build_request(
        base(env) + [("Content-Length", "4"), ("Transfer-Encoding", "chunked")], "POST") + b"0\r\n\r\n"),
    "conflicting-cl": raw(400, lambda env: build_request(
        base(env) + [("Content-Length", "4"), ("Content-Length", "5")], "POST") + b"abcde"),
    "te-not-chunked-last": raw(400, lambda env: build_request(
        base(env) + [("Transfer-Encoding", "chunked, identity")], "POST") + b"0\r\n\r\n"),
    "space-in-header-name": raw(400, lambda env: build_request(base(env) + [("X Bad", "1")])),
    "cr-injection": raw(400, lambda env: build_request(base(env) + [("X-A", "a\rX-Sandbox-ID: evil")])),
    "obs-fold": raw(400, lambda env: (f"GET /probe HTTP/1.1\r\nHost: r\r\n{auth_lines(env)}\r\n"
                                      f"X-A: a\r\n  folded\r\n\r\n").encode()),
    "bare-lf-request-line": raw(400, lambda env: (f"GET /probe HTTP/1.1\nHost: r\r\n{auth_lines(env)}\r\n\r\n"
                                                  ).encode()),
    "headers-too-large": raw(431, lambda env: build_request(base(env) + [("X-Big", "a" * 70000)])),
    "too-many-headers": raw(431, lambda env: build_request(base(env) + [(f"X-H{i}", "1") for i in range(200)])),
    "h2c-upgrade": raw(400, lambda env: build_request(base(env) + [("Connection", "Upgrade"),
                                                                     ("Upgrade", "h2c")])),
    "declared-body-too-large": raw(413, lambda env: build_request(
        base(env) + [("Content-Length", str(2 * 1024 * 1024))], "POST")),
    "negative-content-length": raw(400, lambda env: build_request(
        base(env) + [("Content-Length", "-1")], "POST")),
    "not-http": raw(400, lambda env: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64),
    # --- production default: loopback refused ---------------------------------------------------------
    "strict-loopback-v4": lambda name: Row(name, 400, lambda env: build_request(base(env)), "strict", "loopback"),
    "strict-loopback-127-2": lambda name: Row(name, 400, lambda env: build_request(base(env, ip="127.0.0.2")),
                                              "strict", "loopback"),
    "strict-loopback-v6": lambda name: Row(name, 400, lambda env: build_request(base(env, ip="::1")),
                                           "strict", "loopback"),
    "strict-mapped-loopback": lambda name: Row(name, 400, lambda env: build_request(
        base(env, ip="::ffff:127.0.0.1")), "strict", "loopback"),
}
ROWS = [make(name) for name, make in SPECS.items()]


def test_table_is_large_enough() -> None:
    assert len(ROWS) >= 60


@pytest.fixture(scope="module")
def servers(router_impl: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    logs = tmp_path_factory.mktemp("hostile")
    upstream = RecordingUpstream().start()
    main = RouterProcess(log_path=logs / "main.log", ROUTER_ALLOWED_POD_CIDRS="127.0.0.0/24,::1/128",
                         ROUTER_MAX_REQUEST_BODY_BYTES=str(1024 * 1024), ROUTER_CONNECT_TIMEOUT_SECONDS="2")
    strict = RouterProcess(allow_loopback=False, log_path=logs / "strict.log",
                           ROUTER_ALLOWED_POD_CIDRS="10.0.0.0/8", ROUTER_CONNECT_TIMEOUT_SECONDS="2")
    main.start()
    strict.start()
    try:
        yield {"upstream": upstream, "main": main, "strict": strict}
    finally:
        main.stop()
        strict.stop()
        upstream.stop()


def test_control_request_is_proxied(servers: dict[str, object]) -> None:
    """The base request of the table is valid: the main router proxies it."""
    upstream, main = servers["upstream"], servers["main"]
    upstream.clear()
    env = Env(upstream.port, main.port)
    response = raw_request(main.port, build_request(base(env)))
    assert response.status == 200
    assert len(upstream.seen) == 1 and upstream.seen[0].raw_path == "/probe"


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_hostile_request_is_refused_and_not_proxied(servers: dict[str, object], row: Row) -> None:
    upstream = servers["upstream"]
    router = servers[row.router]
    upstream.clear()
    response = raw_request(router.port, row.build(Env(upstream.port, router.port)))
    assert response.status == row.status, response.body
    assert "detail" in response.json()
    if row.detail is not None:
        assert row.detail in response.json()["detail"]
    assert upstream.seen == [], f"{row.name} reached the upstream: {upstream.seen}"


def test_random_mutations_are_refused_or_forwarded_clean(servers: dict[str, object]) -> None:
    """Seeded fuzzing of a valid request: whatever the mutation, the router either refuses it or
    forwards it without credentials or routing headers, and keeps serving afterwards.

    The request line and the port/pod-IP header lines come first and are never mutated, so a
    request that does get through can only reach the recording upstream on loopback.
    """
    import random
    import socket

    upstream, main = servers["upstream"], servers["main"]
    upstream.clear()
    fixed = (f"POST /fuzz HTTP/1.1\r\nX-Sandbox-Port: {upstream.port}\r\n"
             f"X-Sandbox-Pod-IP: 127.0.0.1\r\n").encode()
    mutable = (f"Host: router\r\nAuthorization: Bearer {TEST_TOKEN}\r\nX-Sandbox-ID: sbx-fuzz\r\n"
               f"X-Sandbox-Namespace: default\r\nContent-Length: 5\r\n\r\nhello").encode()
    rng = random.Random(1234)
    for _ in range(300):
        data = bytearray(mutable)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(data))
            action = rng.random()
            if action < 0.4:
                data[position] = rng.randrange(256)
            elif action < 0.7:
                data.insert(position, rng.choice(b"\r\n:, \t\x00%/_-"))
            else:
                del data[position]
        with socket.create_connection(("127.0.0.1", main.port), timeout=5) as sock:
            sock.sendall(fixed + bytes(data))
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(65536):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
    assert upstream.seen, "no mutation was valid: the fuzz seed no longer exercises forwarding"
    for seen in upstream.seen:
        names = {name.lower().replace("_", "-") for name, _ in seen.headers}
        assert not any(n.startswith("x-sandbox-") or n in ("authorization", "connection") for n in names), seen
    assert raw_request(main.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").status == 200
