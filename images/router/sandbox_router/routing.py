"""Validation of the X-Sandbox-* routing headers and of the upstream address they select.

Everything here is pure (no I/O) so it can be unit-tested exhaustively: a request either maps
to exactly one RouteTarget or is refused with a RoutingError carrying the HTTP status and the
JSON `detail` text.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .settings import IPNetwork, RouterSettings

HEADER_ID = b"x-sandbox-id"
HEADER_NAMESPACE = b"x-sandbox-namespace"
HEADER_PORT = b"x-sandbox-port"
HEADER_POD_IP = b"x-sandbox-pod-ip"
HEADER_TIMEOUT = b"x-sandbox-timeout"
ROUTING_HEADERS = (HEADER_ID, HEADER_NAMESPACE, HEADER_PORT, HEADER_POD_IP, HEADER_TIMEOUT)

DEFAULT_NAMESPACE = "default"
DEFAULT_PORT = 8888

# DNS-1123 label: what Kubernetes accepts for Sandbox and Namespace names.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_TIMEOUT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?|\.[0-9]{1,9}|[0-9](\.[0-9]+)?[eE]-[0-9]{1,2}")

# Cloud metadata and platform endpoints that are not link-local and so need naming explicitly.
_METADATA_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("fd00:ec2::254/128"),   # AWS IMDS over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
    ipaddress.ip_network("168.63.129.16/32"),    # Azure WireServer
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_IPV4_BROADCAST = ipaddress.ip_address("255.255.255.255")


class RoutingError(Exception):
    """A request the router refuses; `status` and `detail` become the JSON error response."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """Where one request goes: a literal pod IP or the sandbox's Service DNS name, plus port."""

    sandbox_id: str
    namespace: str
    host: str
    port: int
    is_ip: bool
    timeout: float
    authority: bytes = b""  # host:port for the upstream Host header (IPv6 bracketed)

    @classmethod
    def build(cls, sandbox_id: str, namespace: str, host: str, port: int, is_ip: bool,
              timeout: float) -> RouteTarget:
        """Create a target with its Host header value precomputed."""
        bracketed = f"[{host}]" if ":" in host else host
        return cls(sandbox_id, namespace, host, port, is_ip, timeout, f"{bracketed}:{port}".encode())

    @property
    def pool_key(self) -> tuple[str, int]:
        """Key under which idle upstream connections to this target are pooled."""
        return (self.host, self.port)


class AddressPolicy:
    """Decides whether the router may open a connection to an IP address.

    Refused always: unspecified, 0.0.0.0/8, multicast, broadcast, link-local (this includes
    169.254.169.254 metadata), reserved, site-local, known cloud metadata addresses and the
    router's own addresses. Loopback is refused unless explicitly allowed for local tests.
    When pod CIDRs are configured, every address (loopback included) must be inside one of them.
    """

    def __init__(self, allowed_cidrs: Iterable[IPNetwork] = (), allow_loopback: bool = False,
                 own_addresses: Iterable[str] = (), self_endpoints: Iterable[tuple[str, int]] = ()) -> None:
        self.allowed_cidrs = tuple(allowed_cidrs)
        self.allow_loopback = allow_loopback
        self.own_addresses = frozenset(ipaddress.ip_address(a) for a in own_addresses)
        self.self_endpoints = frozenset((ipaddress.ip_address(h), p) for h, p in self_endpoints)

    def refusal(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str | None:
        """Return why `address:port` is refused, or None when it may be used."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if (address, port) in self.self_endpoints:
            return "it is the router itself"
        if address.is_unspecified or address in _THIS_NETWORK:
            return "it is unspecified"
        if address.is_multicast:
            return "it is multicast"
        if address == _IPV4_BROADCAST:
            return "it is broadcast"
        if address.is_link_local:
            return "it is link-local (metadata endpoints live there)"
        if any(address in net for net in _METADATA_NETWORKS):
            return "it is a cloud metadata endpoint"
        if address.is_loopback and not self.allow_loopback:
            return "it is loopback"
        if address in self.own_addresses:
            return "it is the router's own address"
        if (address.is_reserved and not address.is_loopback) or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
            return "it is reserved"
        if self.allowed_cidrs and not any(address in net for net in self.allowed_cidrs
                                          if net.version == address.version):
            return "it is outside the configured pod CIDRs"
        return None


def parse_pod_ip(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse X-Sandbox-Pod-IP strictly: a bare IPv4/IPv6 literal, no zone, brackets or port."""
    if not raw or len(raw) > 45 or "%" in raw or any(c.isspace() for c in raw):
        raise RoutingError(400, "Invalid target IP address format.")
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        raise RoutingError(400, "Invalid target IP address format.") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_timeout(raw: str, maximum: float) -> float:
    """Parse X-Sandbox-Timeout (positive seconds), capped at the router's own proxy timeout."""
    if not _TIMEOUT.fullmatch(raw):
        raise RoutingError(400, "Invalid timeout format.")
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise RoutingError(400, "Invalid timeout format.")
    return min(value, maximum)


class RouteResolver:
    """Turns the routing headers of one request into a RouteTarget (or a RoutingError)."""

    CACHE_SIZE = 4096

    def __init__(self, settings: RouterSettings, policy: AddressPolicy) -> None:
        self.settings = settings
        self.policy = policy
        self._dns_suffix = f".svc.{settings.cluster_domain}"
        # Validation is pure, and a client sends the same header values on every request:
        # memoising it removes the IP parsing and policy checks from the hot path.
        self._cached = functools.lru_cache(maxsize=self.CACHE_SIZE)(self._resolve_or_error)

    def resolve(self, values: Mapping[bytes, bytes]) -> RouteTarget:
        """Validate the collected routing header values (lower-case names -> raw values)."""
        result = self._cached(values.get(HEADER_ID), values.get(HEADER_NAMESPACE), values.get(HEADER_PORT),
                              values.get(HEADER_POD_IP), values.get(HEADER_TIMEOUT))
        if isinstance(result, RoutingError):
            raise RoutingError(result.status, result.detail)
        return result

    def _resolve_or_error(self, raw_id: bytes | None, raw_namespace: bytes | None, raw_port: bytes | None,
                          raw_ip: bytes | None, raw_timeout: bytes | None) -> RouteTarget | RoutingError:
        try:
            return self._resolve(raw_id, raw_namespace, raw_port, raw_ip, raw_timeout)
        except RoutingError as exc:
            return exc

    def _resolve(self, raw_id: bytes | None, raw_namespace: bytes | None, raw_port: bytes | None,
                 raw_ip: bytes | None, raw_timeout: bytes | None) -> RouteTarget:
        if raw_id is None or not raw_id:
            raise RoutingError(400, "X-Sandbox-ID header is required.")
        sandbox_id = raw_id.decode("latin-1")
        if not _DNS1123_LABEL.fullmatch(sandbox_id):
            raise RoutingError(400, "Invalid sandbox ID format.")

        namespace = DEFAULT_NAMESPACE if raw_namespace is None else raw_namespace.decode("latin-1")
        if not _DNS1123_LABEL.fullmatch(namespace):
            raise RoutingError(400, "Invalid namespace format.")

        port = DEFAULT_PORT
        if raw_port is not None:
            text = raw_port.decode("latin-1")
            if not _PORT.fullmatch(text) or int(text) > 65535:
                raise RoutingError(400, "Invalid port format.")
            port = int(text)

        timeout = self.settings.proxy_timeout_seconds
        if raw_timeout is not None:
            timeout = parse_timeout(raw_timeout.decode("latin-1"), timeout)

        if raw_ip is not None:
            address = parse_pod_ip(raw_ip.decode("latin-1"))
            reason = self.policy.refusal(address, port)
            if reason is not None:
                raise RoutingError(400, f"Invalid target IP address: {reason}.")
            return RouteTarget.build(sandbox_id, namespace, str(address), port, True, timeout)
        host = f"{sandbox_id}.{namespace}{self._dns_suffix}"
        return RouteTarget.build(sandbox_id, namespace, host, port, False, timeout)
