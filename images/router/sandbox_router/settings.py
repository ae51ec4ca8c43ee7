"""Router configuration read once from the environment at startup.

Every value has a safe default; a bad value stops the router with a message that
names the variable, the offending value and what would be accepted.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
RESOLVERS = ("watch", "dns")
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_SANDBOX_PORTS = (8888,)
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """Raised when an environment variable holds a value the router cannot use."""


@dataclass(frozen=True)
class RouterSettings:
    """All tunables of the router; see images/router/README.md for the meaning of each."""

    host: str = "0.0.0.0"
    port: int = 8080
    auth_token: str | None = None
    allow_unauthenticated: bool = False
    cluster_domain: str = "cluster.local"
    proxy_timeout_seconds: float = 180.0
    connect_timeout_seconds: float = 5.0
    allowed_pod_cidrs: tuple[IPNetwork, ...] = ()
    allow_loopback_pod_ip: bool = False
    own_addresses: tuple[str, ...] = ()
    max_request_body_bytes: int = 1 << 30
    max_response_body_bytes: int = 4 << 30
    max_header_bytes: int = 64 * 1024
    max_header_count: int = 128
    max_connections: int = 4096
    max_connections_per_client: int = 512
    header_timeout_seconds: float = 15.0
    keepalive_timeout_seconds: float = 75.0
    upstream_max_idle_per_target: int = 64
    upstream_idle_seconds: float = 4.0
    websocket_idle_timeout_seconds: float = 3600.0
    websocket_max_lifetime_seconds: float = 86400.0
    metrics_require_auth: bool = True
    server_timing: bool = True
    """A Server-Timing header on every relayed response (timing.py); ROUTER_SERVER_TIMING."""
    log_level: str = "INFO"
    resolver: str = "watch"
    sandbox_namespaces: tuple[str, ...] = ()
    sandbox_ports: tuple[int, ...] | None = DEFAULT_SANDBOX_PORTS  # None: any port (dns mode only)
    sandbox_wait_seconds: float = 3.0
    route_unclaimed_pool_pods: bool = False
    kube_host: str = ""
    kube_port: int = 443
    serviceaccount_dir: str = SERVICEACCOUNT_DIR

    @property
    def auth_enabled(self) -> bool:
        """True when requests must carry the bearer token."""
        return self.auth_token is not None


def _text(env: Mapping[str, str], key: str, default: str) -> str:
    return env.get(key, default).strip()


def _flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(f"{key}={raw!r} is not a boolean; use true or false")


def _int(env: Mapping[str, str], key: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not an integer; use a whole number "
                            f"between {minimum} and {maximum}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{key}={value} is out of range; use a value between "
                            f"{minimum} and {maximum}")
    return value


def _seconds(env: Mapping[str, str], key: str, default: float, maximum: float = 7 * 86400) -> float:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a number of seconds; use e.g. 30 or 2.5") from None
    if not math.isfinite(value) or value <= 0 or value > maximum:
        raise SettingsError(f"{key}={raw!r} must be a positive number of seconds up to {maximum:g}")
    return value


def _cidrs(env: Mapping[str, str], key: str) -> tuple[IPNetwork, ...]:
    raw = env.get(key, "")
    networks: list[IPNetwork] = []
    for item in raw.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"{key} contains {item!r}, which is not a CIDR; "
                                f"use a comma-separated list like 10.244.0.0/16,fd00:10:244::/56") from None
    return tuple(networks)


def _addresses(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    found: list[str] = []
    for item in env.get(key, "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            found.append(str(ipaddress.ip_address(item)))
        except ValueError:
            raise SettingsError(f"{key} contains {item!r}, which is not an IP address; "
                                f"use a comma-separated list of addresses") from None
    return tuple(found)


def _namespaces(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    found: list[str] = []
    for item in env.get(key, "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        if not _DNS1123_LABEL.fullmatch(item):
            raise SettingsError(f"{key} contains {item!r}, which is not a namespace name; "
                                f"use a comma-separated list like agent-sandbox-demo,team-a")
        if item not in found:
            found.append(item)
    return tuple(found)


def _ports(env: Mapping[str, str], key: str) -> tuple[int, ...] | None:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return None
    found: list[int] = []
    for item in raw.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not 1 <= int(item) <= 65535 or item.startswith("0"):
            raise SettingsError(f"{key} contains {item!r}, which is not a port; "
                                f"use a comma-separated list of ports 1-65535 like 8888")
        if int(item) not in found:
            found.append(int(item))
    if not found:
        raise SettingsError(f"{key}={raw!r} names no port; use e.g. 8888")
    return tuple(found)


def _watch_settings(env: Mapping[str, str]) -> dict[str, object]:
    """What watch mode needs: sandbox namespaces and the in-cluster API (checked up front so a
    misconfigured router exits with a clear message instead of refusing every request)."""
    namespaces = _namespaces(env, "ROUTER_SANDBOX_NAMESPACES")
    if not namespaces:
        raise SettingsError("ROUTER_SANDBOX_NAMESPACES is not set: in ROUTER_RESOLVER=watch mode (the default) the "
                            "router proxies only to sandbox pods of the namespaces named there; set it to e.g. "
                            "agent-sandbox-demo (or ROUTER_RESOLVER=dns for local tests only)")
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    raw_port = env.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not host or not raw_port:
        raise SettingsError("KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set: ROUTER_RESOLVER=watch reads "
                            "sandbox pods from the Kubernetes API and must run in a pod (or set ROUTER_RESOLVER=dns "
                            "for local tests only)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(_DNS1123_LABEL.fullmatch(part) for part in host.lower().split(".")):
            raise SettingsError(f"KUBERNETES_SERVICE_HOST={host!r} is neither an IP address nor a host name") from None
    port = _int(env, "KUBERNETES_SERVICE_PORT", 443, 1, 65535)
    sa_dir = env.get("ROUTER_SERVICEACCOUNT_DIR", "").strip() or SERVICEACCOUNT_DIR
    for name in ("token", "ca.crt"):
        if not os.path.isfile(os.path.join(sa_dir, name)):
            raise SettingsError(f"{os.path.join(sa_dir, name)} does not exist: ROUTER_RESOLVER=watch authenticates "
                                f"to the Kubernetes API with the pod's service-account token; mount it "
                                f"(automountServiceAccountToken: true) or set ROUTER_SERVICEACCOUNT_DIR")
    return {"sandbox_namespaces": namespaces, "kube_host": host, "kube_port": port, "serviceaccount_dir": sa_dir}


def _token(env: Mapping[str, str]) -> str | None:
    token = env.get("ROUTER_AUTH_TOKEN")
    token_file = env.get("ROUTER_AUTH_TOKEN_FILE", "").strip()
    if token is not None and token.strip():
        return token.strip()
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as handle:
                content = handle.read().strip()
        except OSError as exc:
            raise SettingsError(f"ROUTER_AUTH_TOKEN_FILE={token_file!r} cannot be read ({exc}); "
                                f"mount the token Secret there or set ROUTER_AUTH_TOKEN") from None
        if not content:
            raise SettingsError(f"ROUTER_AUTH_TOKEN_FILE={token_file!r} is empty; put the token in it")
        return content
    return None


def load_settings(env: Mapping[str, str] | None = None) -> RouterSettings:
    """Build RouterSettings from the environment (os.environ by default).

    Raises SettingsError for unusable values, including a missing token without the explicit
    ALLOW_UNAUTHENTICATED_ROUTER=true opt-out.
    """
    env = os.environ if env is None else env
    token = _token(env)
    allow_unauthenticated = _flag(env, "ALLOW_UNAUTHENTICATED_ROUTER", False)
    if token is None and not allow_unauthenticated:
        raise SettingsError(
            "ROUTER_AUTH_TOKEN is not set: the router refuses to run without authentication. "
            "Set ROUTER_AUTH_TOKEN (or ROUTER_AUTH_TOKEN_FILE) to a secret bearer token, or set "
            "ALLOW_UNAUTHENTICATED_ROUTER=true for local development only.")
    if token is not None and any(ch.isspace() or ord(ch) < 0x21 or ord(ch) > 0x7E for ch in token):
        raise SettingsError("ROUTER_AUTH_TOKEN contains whitespace or non-printable characters; "
                            "use a printable ASCII token (e.g. `openssl rand -hex 32`)")
    domain = _text(env, "CLUSTER_DOMAIN", "cluster.local").strip(".").lower()
    if not domain or any(not part or len(part) > 63 for part in domain.split(".")):
        raise SettingsError(f"CLUSTER_DOMAIN={env.get('CLUSTER_DOMAIN')!r} is not a DNS domain; "
                            f"use e.g. cluster.local")
    level = _text(env, "ROUTER_LOG_LEVEL", "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise SettingsError(f"ROUTER_LOG_LEVEL={level!r} is not a log level; use DEBUG, INFO, WARNING or ERROR")
    proxy_timeout = _seconds(env, "PROXY_TIMEOUT_SECONDS", 180.0)
    common = dict(
        host=_text(env, "ROUTER_HOST", "0.0.0.0"),
        port=_int(env, "ROUTER_PORT", 8080, 0, 65535),
        auth_token=token,
        allow_unauthenticated=allow_unauthenticated and token is None,
        cluster_domain=domain,
        proxy_timeout_seconds=proxy_timeout,
        connect_timeout_seconds=min(_seconds(env, "ROUTER_CONNECT_TIMEOUT_SECONDS", 5.0), proxy_timeout),
        allowed_pod_cidrs=_cidrs(env, "ROUTER_ALLOWED_POD_CIDRS"),
        allow_loopback_pod_ip=_flag(env, "ROUTER_ALLOW_LOOPBACK_POD_IP", False),
        own_addresses=_addresses(env, "ROUTER_POD_IP"),
        max_request_body_bytes=_int(env, "ROUTER_MAX_REQUEST_BODY_BYTES", 1 << 30, 0, 1 << 40),
        max_response_body_bytes=_int(env, "ROUTER_MAX_RESPONSE_BODY_BYTES", 4 << 30, 0, 1 << 44),
        max_header_bytes=_int(env, "ROUTER_MAX_HEADER_BYTES", 64 * 1024, 1024, 1 << 20),
        max_header_count=_int(env, "ROUTER_MAX_HEADER_COUNT", 128, 8, 4096),
        max_connections=_int(env, "ROUTER_MAX_CONNECTIONS", 4096, 1, 1 << 20),
        max_connections_per_client=_int(env, "ROUTER_MAX_CONNECTIONS_PER_CLIENT", 512, 1, 1 << 20),
        header_timeout_seconds=_seconds(env, "ROUTER_HEADER_TIMEOUT_SECONDS", 15.0),
        keepalive_timeout_seconds=_seconds(env, "ROUTER_KEEPALIVE_TIMEOUT_SECONDS", 75.0),
        upstream_max_idle_per_target=_int(env, "MAX_KEEPALIVE_CONNECTIONS", 64, 0, 100000),
        upstream_idle_seconds=_seconds(env, "ROUTER_UPSTREAM_IDLE_SECONDS", 4.0),
        websocket_idle_timeout_seconds=_seconds(env, "WEBSOCKET_IDLE_TIMEOUT_SECONDS", 3600.0),
        websocket_max_lifetime_seconds=_seconds(env, "WEBSOCKET_MAX_LIFETIME_SECONDS", 86400.0, 30 * 86400),
        metrics_require_auth=_flag(env, "ROUTER_METRICS_REQUIRE_AUTH", True),
        server_timing=_flag(env, "ROUTER_SERVER_TIMING", True),
        log_level=level,
    )
    # Resolution last: a bad value above is reported first, even when watch mode is incomplete.
    resolver = _text(env, "ROUTER_RESOLVER", "watch").lower() or "watch"
    if resolver not in RESOLVERS:
        raise SettingsError(f"ROUTER_RESOLVER={env.get('ROUTER_RESOLVER')!r} is not a resolver; use watch "
                            f"(sandbox pods from the Kubernetes API, the default) or dns (local tests only)")
    ports = _ports(env, "ROUTER_SANDBOX_PORTS")
    if resolver == "watch":
        resolution: dict[str, object] = _watch_settings(env)
        ports = ports or DEFAULT_SANDBOX_PORTS
    else:
        resolution = {"sandbox_namespaces": _namespaces(env, "ROUTER_SANDBOX_NAMESPACES")}
    raw_wait = env.get("ROUTER_SANDBOX_WAIT_SECONDS", "").strip()
    wait = 0.0 if raw_wait in ("0", "0.0") else _seconds(env, "ROUTER_SANDBOX_WAIT_SECONDS", 10.0, maximum=60.0)
    return RouterSettings(
        resolver=resolver,
        sandbox_ports=ports,
        sandbox_wait_seconds=wait,
        route_unclaimed_pool_pods=_flag(env, "ROUTER_ROUTE_UNCLAIMED_POOL_PODS", False),
        **resolution,  # type: ignore[arg-type]
        **common,  # type: ignore[arg-type]
    )
