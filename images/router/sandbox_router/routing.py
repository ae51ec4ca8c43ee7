"""Validation of the X-Sandbox-* routing headers and of the upstream address they select.

Everything here is pure (no I/O) so it can be unit-tested exhaustively: a request either maps
to exactly one RouteTarget or is refused with a RoutingError carrying the HTTP status and the
JSON `detail` text. In watch mode the mapping also consults the sandbox pod index
(sandboxes.py), which is read-only here.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .settings import IPNetwork, RouterSettings

log = logging.getLogger("sandbox_router")

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
    ipaddress.ip_network("fd20:ce::254/128"),    # GCP metadata server over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
    ipaddress.ip_network("168.63.129.16/32"),    # Azure WireServer
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_IPV4_BROADCAST = ipaddress.ip_address("255.255.255.255")
# IPv6 prefixes whose packets end up at an IPv4 address (6to4 relays, NAT64 gateways, Teredo):
# judging the IPv6 address alone would let 2002:a9fe:a9fe:: reach 169.254.169.254. No pod has
# such an address, so they are refused outright rather than by the IPv4 they embed.
_IPV4_EMBEDDING: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("2002::/16"),        # 6to4
    ipaddress.ip_network("64:ff9b::/96"),     # NAT64 well-known prefix
    ipaddress.ip_network("64:ff9b:1::/48"),   # NAT64 local-use prefix
    ipaddress.ip_network("2001::/32"),        # Teredo
)
# Special-purpose ranges (IANA registries) that are never sandbox pods. The first two are also
# used as pod ranges by some clusters (e.g. EKS custom networking in 100.64.0.0/10), so they are
# allowed when - and only when - ROUTER_ALLOWED_POD_CIDRS names a subnet of them.
_SPECIAL_NETWORKS: tuple[tuple[IPNetwork, str, bool], ...] = (
    (ipaddress.ip_network("100.64.0.0/10"), "it is shared address space (carrier-grade NAT)", True),
    (ipaddress.ip_network("198.18.0.0/15"), "it is the benchmarking range", True),
    (ipaddress.ip_network("192.0.0.0/24"), "it is special-purpose (IETF protocol assignments)", False),
    (ipaddress.ip_network("192.0.2.0/24"), "it is a documentation range", False),
    (ipaddress.ip_network("198.51.100.0/24"), "it is a documentation range", False),
    (ipaddress.ip_network("203.0.113.0/24"), "it is a documentation range", False),
    (ipaddress.ip_network("2001:db8::/32"), "it is a documentation range", False),
    (ipaddress.ip_network("100::/64"), "it is the discard-only range", False),
    (ipaddress.ip_network("240.0.0.0/4"), "it is reserved", False),
    (ipaddress.ip_network("fec0::/10"), "it is reserved (site-local)", False),
    (ipaddress.ip_network("::/8"), "it is reserved", False),  # IPv4-compatible and other legacy forms
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RoutingError(Exception):
    """A request the router refuses; `status` and `detail` become the JSON error response."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def unknown_sandbox(sandbox_id: str) -> RoutingError:
    """The refusal for a sandbox the router cannot reach: the same 502 shape the router has always
    given for a sandbox that does not exist (DNS failure, connection refused), so that a caller
    learns nothing about which names, namespaces or pods exist."""
    return RoutingError(502, f"Could not connect to the backend sandbox: {sandbox_id}")


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
    pool_key: tuple[str, int, str] = ("", 0, "")  # idle connections are shared only within one key
    requested_timeout: float | None = None  # X-Sandbox-Timeout when the caller sent one (capped)

    @classmethod
    def build(cls, sandbox_id: str, namespace: str, host: str, port: int, is_ip: bool,
              timeout: float, *, pod_uid: str = "", requested_timeout: float | None = None) -> RouteTarget:
        """Create a target with its Host header value and pool key precomputed.

        The pod UID is part of the pool key so that a pooled connection is never handed to a
        request for another pod that happens to get the same IP address later.
        """
        bracketed = f"[{host}]" if ":" in host else host
        return cls(sandbox_id, namespace, host, port, is_ip, timeout, f"{bracketed}:{port}".encode(),
                   (host, port, pod_uid), requested_timeout)


@dataclass(frozen=True, slots=True, eq=False)
class RouteRequest:
    """The validated routing headers of one request, before a target is chosen (watch mode).

    Compared by identity: the resolver memoises one instance per distinct header tuple, and
    per-sandbox target memos are keyed by these instances.
    """

    sandbox_id: str
    namespace: str
    port: int
    pod_ip: IPAddress | None
    timeout: float
    requested_timeout: float | None
    key: tuple[str, str] = ("", "")  # (namespace, sandbox_id): the pod index key, built once


class SandboxUnavailable(RoutingError):
    """No routable pod is known (yet) for the requested sandbox; the caller may wait for one."""

    def __init__(self, request: RouteRequest) -> None:
        super().__init__(502, f"Could not connect to the backend sandbox: {request.sandbox_id}")
        self.request = request


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

    def refusal(self, address: IPAddress, port: int) -> str | None:
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
        if address.version == 6 and any(address in net for net in _IPV4_EMBEDDING):
            return "it embeds an IPv4 address (6to4, NAT64 or Teredo)"
        if address.is_loopback:
            if not self.allow_loopback:
                return "it is loopback"
        else:
            reason = self._special(address)
            if reason is not None:
                return reason
        if address in self.own_addresses:
            return "it is the router's own address"
        if self.allowed_cidrs and not any(address in net for net in self.allowed_cidrs
                                          if net.version == address.version):
            return "it is outside the configured pod CIDRs"
        return None

    def _special(self, address: IPAddress) -> str | None:
        for network, reason, overridable in _SPECIAL_NETWORKS:
            if network.version == address.version and address in network:
                if overridable and any(net.version == address.version and address in net and net.subnet_of(network)
                                       for net in self.allowed_cidrs):
                    return None
                return reason
        if address.is_reserved:  # anything else the standard library knows to be reserved
            return "it is reserved"
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


class SandboxRoutes(Protocol):
    """What the resolver needs from the sandbox pod index (sandboxes.SandboxIndex)."""

    routes: Mapping[tuple[str, str], Any]  # (namespace, sandbox name) -> route with .addresses etc.

    async def wait(self, namespace: str, name: str, timeout: float) -> Any: ...


MAX_TARGETS_PER_POD = 64


class RouteResolver:
    """Turns the routing headers of one request into a RouteTarget (or a RoutingError).

    `watch` mode (production): the target is the pod of the named Sandbox as the cluster's own
    objects describe it (SandboxRoutes), in an allowed namespace, on an allowed port; a caller's
    X-Sandbox-Pod-IP only chooses among that pod's own addresses. `dns` mode (legacy, local
    tests): the caller's X-Sandbox-Pod-IP or the sandbox's Service name, as before. Both apply
    the address policy to the address finally used.
    """

    CACHE_SIZE = 4096

    def __init__(self, settings: RouterSettings, policy: AddressPolicy,
                 sandboxes: SandboxRoutes | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self.sandboxes = sandboxes
        self.watch = settings.resolver == "watch"
        if self.watch and sandboxes is None:
            raise ValueError("watch mode needs the sandbox pod index")
        self._dns_suffix = f".svc.{settings.cluster_domain}"
        self._namespaces = frozenset(settings.sandbox_namespaces)
        self._ports = None if settings.sandbox_ports is None else frozenset(settings.sandbox_ports)
        self._route_of = sandboxes.routes.get if sandboxes is not None else None
        # Validation is pure, and a client sends the same header values on every request:
        # memoising it removes the IP parsing and policy checks from the hot path.
        self._cached = functools.lru_cache(maxsize=self.CACHE_SIZE)(self._validate_or_error)

    def resolve(self, values: Mapping[bytes, bytes]) -> RouteTarget:
        """Validate the collected routing header values (lower-case names -> raw values).

        Raises RoutingError, or SandboxUnavailable (a RoutingError) when the sandbox is not known.
        """
        result = self._cached(values.get(HEADER_ID), values.get(HEADER_NAMESPACE), values.get(HEADER_PORT),
                              values.get(HEADER_POD_IP), values.get(HEADER_TIMEOUT))
        if type(result) is RouteTarget:
            return result
        if type(result) is RouteRequest:
            route = self._route_of(result.key)  # type: ignore[misc]
            if route is None:
                raise SandboxUnavailable(result)
            target = route.targets.get(result)
            if type(target) is RouteTarget:
                return target  # the hot path: two dict lookups after the memoised validation
            return self._pod_target(route, result)
        raise RoutingError(result.status, result.detail)  # a fresh exception: the cached one is shared

    async def wait_for(self, request: RouteRequest, timeout: float) -> RouteTarget:
        """Wait up to `timeout` seconds for the sandbox of `request` to become routable."""
        route = await self.sandboxes.wait(request.namespace, request.sandbox_id, timeout)  # type: ignore[union-attr]
        if route is None:
            raise SandboxUnavailable(request)
        return self._pod_target(route, request)

    def _pod_target(self, route: Any, request: RouteRequest) -> RouteTarget:
        """The target for `request` on the sandbox pod `route`, memoised on the (immutable) route."""
        targets = route.targets
        target = targets.get(request)
        if target is None:
            if len(targets) >= MAX_TARGETS_PER_POD:
                targets.clear()  # a caller cycling timeout values must not grow this without bound
            target = targets[request] = self._choose_address(route, request)
        if type(target) is RouteTarget:
            return target
        raise RoutingError(target.status, target.detail)

    def _choose_address(self, route: Any, request: RouteRequest) -> RouteTarget | RoutingError:
        # The caller's pod IP may pick one of the pod's own addresses (dual stack); anything
        # else it names is ignored: the cluster, not the caller, says where the sandbox is.
        address = request.pod_ip if request.pod_ip in route.addresses else route.addresses[0]
        reason = self.policy.refusal(address, request.port)
        if reason is not None:
            log.warning("sandbox pod %s/%s has address %s, which the address policy refuses (%s)",
                        route.namespace, route.pod, address, reason)
            return unknown_sandbox(request.sandbox_id)
        return RouteTarget.build(request.sandbox_id, request.namespace, str(address), request.port, True,
                                 request.timeout, pod_uid=route.pod_uid,
                                 requested_timeout=request.requested_timeout)

    def _validate_or_error(self, raw_id: bytes | None, raw_namespace: bytes | None, raw_port: bytes | None,
                           raw_ip: bytes | None, raw_timeout: bytes | None
                           ) -> RouteTarget | RouteRequest | RoutingError:
        try:
            return self._validate(raw_id, raw_namespace, raw_port, raw_ip, raw_timeout)
        except RoutingError as exc:
            return exc

    def _validate(self, raw_id: bytes | None, raw_namespace: bytes | None, raw_port: bytes | None,
                  raw_ip: bytes | None, raw_timeout: bytes | None) -> RouteTarget | RouteRequest:
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
        requested: float | None = None
        if raw_timeout is not None:
            timeout = requested = parse_timeout(raw_timeout.decode("latin-1"), timeout)

        address = None if raw_ip is None else parse_pod_ip(raw_ip.decode("latin-1"))
        if self._namespaces and namespace not in self._namespaces:
            raise unknown_sandbox(sandbox_id)  # same answer as a sandbox that does not exist
        if self._ports is not None and port not in self._ports:
            raise RoutingError(400, f"Port {port} is not a sandbox port this router proxies to.")

        if self.watch:
            return RouteRequest(sandbox_id, namespace, port, address, timeout, requested, (namespace, sandbox_id))
        if address is not None:
            reason = self.policy.refusal(address, port)
            if reason is not None:
                raise RoutingError(400, f"Invalid target IP address: {reason}.")
            return RouteTarget.build(sandbox_id, namespace, str(address), port, True, timeout,
                                     requested_timeout=requested)
        host = f"{sandbox_id}.{namespace}{self._dns_suffix}"
        return RouteTarget.build(sandbox_id, namespace, host, port, False, timeout, requested_timeout=requested)
