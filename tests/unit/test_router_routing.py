"""Unit tests for sandbox_router.routing: routing header validation and the address policy."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "router"))

from sandbox_router.routing import (  # noqa: E402
    AddressPolicy, RouteResolver, RoutingError, parse_pod_ip, parse_timeout,
)
from sandbox_router.settings import RouterSettings  # noqa: E402


def resolver(**overrides: object) -> RouteResolver:
    """A legacy (dns mode) resolver; watch mode is tested in test_router_sandboxes.py."""
    overrides = {"resolver": "dns", "sandbox_ports": None, **overrides}
    settings = RouterSettings(auth_token="t" * 20, **overrides)  # type: ignore[arg-type]
    policy = AddressPolicy(settings.allowed_pod_cidrs, settings.allow_loopback_pod_ip,
                           own_addresses=("10.9.9.9",), self_endpoints=(("127.0.0.1", 8080),))
    return RouteResolver(settings, policy)


def headers(**values: str) -> dict[bytes, bytes]:
    return {b"x-sandbox-" + k.replace("_", "-").encode(): v.encode("latin-1") for k, v in values.items()}


def test_dns_target_uses_defaults_and_cluster_domain() -> None:
    target = resolver(cluster_domain="corp.example").resolve(headers(id="sbx-1"))
    assert target.host == "sbx-1.default.svc.corp.example"
    assert target.port == 8888 and not target.is_ip
    assert target.authority == b"sbx-1.default.svc.corp.example:8888"
    assert target.timeout == 180.0


def test_pod_ip_target_with_namespace_port_and_timeout() -> None:
    target = resolver().resolve(headers(id="a", namespace="team-1", port="9000", pod_ip="10.244.1.7",
                                        timeout="2.5"))
    assert (target.host, target.port, target.is_ip, target.timeout) == ("10.244.1.7", 9000, True, 2.5)
    assert target.namespace == "team-1" and target.authority == b"10.244.1.7:9000"


def test_ipv6_pod_ip_is_bracketed_and_mapped_ipv4_unwrapped() -> None:
    assert resolver().resolve(headers(id="a", pod_ip="fd00:10:244::5")).authority == b"[fd00:10:244::5]:8888"
    assert resolver().resolve(headers(id="a", pod_ip="::ffff:10.1.2.3")).host == "10.1.2.3"


def test_timeout_is_capped_at_proxy_timeout() -> None:
    assert resolver(proxy_timeout_seconds=30.0).resolve(headers(id="a", timeout="600")).timeout == 30.0


BAD = [
    ({}, "X-Sandbox-ID header is required."),
    ({"id": ""}, "X-Sandbox-ID header is required."),
    ({"id": "Upper"}, "Invalid sandbox ID format."),
    ({"id": "a.b"}, "Invalid sandbox ID format."),
    ({"id": "a" * 64}, "Invalid sandbox ID format."),
    ({"id": "a\n"}, "Invalid sandbox ID format."),
    ({"id": "-a"}, "Invalid sandbox ID format."),
    ({"id": "a", "namespace": "kube_system"}, "Invalid namespace format."),
    ({"id": "a", "namespace": "a.b"}, "Invalid namespace format."),
    ({"id": "a", "port": "0"}, "Invalid port format."),
    ({"id": "a", "port": "65536"}, "Invalid port format."),
    ({"id": "a", "port": "08888"}, "Invalid port format."),
    ({"id": "a", "port": "+1"}, "Invalid port format."),
    ({"id": "a", "timeout": "nan"}, "Invalid timeout format."),
    ({"id": "a", "timeout": "0"}, "Invalid timeout format."),
    ({"id": "a", "timeout": "-1"}, "Invalid timeout format."),
    ({"id": "a", "timeout": "1e309"}, "Invalid timeout format."),
    ({"id": "a", "pod_ip": "10.0.0.1%eth0"}, "Invalid target IP address format."),
    ({"id": "a", "pod_ip": "127.1"}, "Invalid target IP address format."),
    ({"id": "a", "pod_ip": "010.0.0.1"}, "Invalid target IP address format."),
]


@pytest.mark.parametrize(("values", "detail"), BAD)
def test_invalid_headers_are_refused_with_their_detail(values: dict[str, str], detail: str) -> None:
    with pytest.raises(RoutingError) as err:
        resolver().resolve(headers(**values))
    assert err.value.status == 400
    assert err.value.detail == detail


def test_refusals_are_not_poisoned_by_the_cache() -> None:
    r = resolver()
    for _ in range(3):
        with pytest.raises(RoutingError):
            r.resolve(headers(id="BAD"))
    assert r.resolve(headers(id="good")).sandbox_id == "good"


REFUSED = [
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("0.1.2.3", "unspecified"),
    ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("::ffff:169.254.169.254", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"), ("fec0::1", "reserved"),
    ("fd00:ec2::254", "metadata"), ("100.100.100.200", "metadata"), ("168.63.129.16", "metadata"),
    ("10.9.9.9", "own address"),
    # Issue 11 item 8: metadata and special-purpose ranges that used to be accepted.
    ("fd20:ce::254", "metadata"),                      # GCP metadata over IPv6
    ("2002:a9fe:a9fe::", "IPv4"), ("2002:a9fe:a9fe::1", "IPv4"),  # 6to4 of 169.254.169.254
    ("2002:a00:1::1", "IPv4"),                         # any 6to4: reaches IPv4 through a relay
    ("64:ff9b::a9fe:a9fe", "IPv4"),                    # NAT64 of 169.254.169.254
    ("64:ff9b:1::a9fe:a9fe", "IPv4"),                  # local-use NAT64 prefix
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "IPv4"),  # Teredo
    ("::a9fe:a9fe", "reserved"),                       # IPv4-compatible (deprecated) form
    ("100.64.0.1", "shared address space"), ("100.127.255.254", "shared address space"),
    ("192.0.0.1", "special-purpose"), ("192.0.0.170", "special-purpose"),
    ("198.18.0.1", "benchmarking"), ("198.19.255.254", "benchmarking"),
    ("0.255.255.255", "unspecified"), ("240.0.0.0", "reserved"), ("255.255.255.254", "reserved"),
    ("192.0.2.1", "documentation"), ("198.51.100.7", "documentation"), ("203.0.113.9", "documentation"),
    ("2001:db8::1", "documentation"), ("100::1", "discard"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_address_policy_refuses_dangerous_addresses(address: str, reason: str) -> None:
    policy = AddressPolicy(own_addresses=("10.9.9.9",))
    refusal = policy.refusal(ipaddress.ip_address(address), 8888)
    assert refusal is not None and reason in refusal


def test_loopback_flag_allows_loopback_but_not_the_router_itself() -> None:
    policy = AddressPolicy(allow_loopback=True, self_endpoints=(("127.0.0.1", 8080),))
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), 8888) is None
    assert "router itself" in policy.refusal(ipaddress.ip_address("127.0.0.1"), 8080)


def test_pod_cidrs_restrict_every_address() -> None:
    policy = AddressPolicy([ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("fd00:10::/64")],
                           allow_loopback=True)
    assert policy.refusal(ipaddress.ip_address("10.244.3.4"), 1) is None
    assert policy.refusal(ipaddress.ip_address("fd00:10::7"), 1) is None
    assert "outside" in policy.refusal(ipaddress.ip_address("10.245.0.1"), 1)
    assert "outside" in policy.refusal(ipaddress.ip_address("8.8.8.8"), 1)
    assert "outside" in policy.refusal(ipaddress.ip_address("127.0.0.1"), 1)


def test_shared_and_benchmark_ranges_are_allowed_only_inside_configured_pod_cidrs() -> None:
    """Some clusters (e.g. EKS custom networking) put pods in 100.64.0.0/10: naming the range in
    ROUTER_ALLOWED_POD_CIDRS is the explicit opt-in; metadata and link-local stay refused."""
    policy = AddressPolicy([ipaddress.ip_network("100.64.0.0/16"), ipaddress.ip_network("198.18.0.0/24")])
    assert policy.refusal(ipaddress.ip_address("100.64.3.4"), 8888) is None
    assert policy.refusal(ipaddress.ip_address("198.18.0.9"), 8888) is None
    assert "shared address space" in policy.refusal(ipaddress.ip_address("100.65.0.1"), 8888)
    wide = AddressPolicy([ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")])
    for address in ("169.254.169.254", "100.100.100.200", "fd20:ce::254", "2002:a9fe:a9fe::", "192.0.0.1"):
        assert wide.refusal(ipaddress.ip_address(address), 8888) is not None, address


def test_public_address_allowed_without_cidrs() -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address("10.1.2.3"), 8888) is None


def test_parse_helpers() -> None:
    assert parse_timeout("1e-05", 10) == 1e-05
    assert parse_timeout(".5", 10) == 0.5
    assert str(parse_pod_ip("::ffff:10.0.0.1")) == "10.0.0.1"
    with pytest.raises(RoutingError):
        parse_pod_ip("[::1]")
