"""The sandbox pod index of the watch resolver: which pods are sandboxes, and where they are.

`sandbox_route()` is a pure function from one Pod object (the JSON the Kubernetes API returns)
to a SandboxRoute, or None when the pod must not be a target. `SandboxIndex` holds the routes of
the watched namespaces, keyed by (namespace, Sandbox name), and is fed by the list+watch loop in
kube.py; the request path only reads it (one dict lookup), and requests for a sandbox that is not
there yet can wait for it.

Facts about the controller (agent-sandbox v0.5.x) this relies on: the pod of a Sandbox is named
after the Sandbox and controlled by it (a controller ownerReference of kind Sandbox in group
agents.x-k8s.io), carries the label agents.x-k8s.io/sandbox-name-hash, and, while it is an
unclaimed warm-pool member, the label agents.x-k8s.io/warm-pool-sandbox (removed on adoption).
The SDK sends the Sandbox name (the claim's status.sandbox.name) as X-Sandbox-ID, also for
warm-pool-adopted sandboxes, whose name is the pool-generated one, not the claim's.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

SANDBOX_GROUP = "agents.x-k8s.io"
SANDBOX_KIND = "Sandbox"
SANDBOX_NAME_HASH_LABEL = "agents.x-k8s.io/sandbox-name-hash"
WARM_POOL_LABEL = "agents.x-k8s.io/warm-pool-sandbox"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Key = tuple[str, str]


class SandboxRoute:
    """Where one sandbox's pod can be reached. Immutable once built: a changed pod gets a new
    route, which also drops the targets memoised on the old one (routing.RouteResolver)."""

    __slots__ = ("namespace", "sandbox", "pod", "pod_uid", "addresses", "targets")

    def __init__(self, namespace: str, sandbox: str, pod: str, pod_uid: str,
                 addresses: tuple[IPAddress, ...]) -> None:
        self.namespace = namespace
        self.sandbox = sandbox
        self.pod = pod
        self.pod_uid = pod_uid
        self.addresses = addresses
        self.targets: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"SandboxRoute({self.namespace}/{self.sandbox} -> {', '.join(map(str, self.addresses))})"


def _controlling_sandbox(metadata: Mapping[str, Any]) -> str | None:
    for ref in metadata.get("ownerReferences") or ():
        if not isinstance(ref, Mapping) or ref.get("controller") is not True:
            continue
        api_version = str(ref.get("apiVersion", ""))
        if ref.get("kind") == SANDBOX_KIND and api_version.split("/", 1)[0] == SANDBOX_GROUP:
            name = ref.get("name")
            return name if isinstance(name, str) else None
        return None  # controlled by something else
    return None


def _addresses(status: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    raw = [entry.get("ip") for entry in status.get("podIPs") or () if isinstance(entry, Mapping)]
    if not raw and status.get("podIP"):
        raw = [status.get("podIP")]
    found: list[IPAddress] = []
    for text in raw:
        try:
            address = ipaddress.ip_address(str(text))
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address not in found:
            found.append(address)
    # IPv4 first, as the SDK prefers it: the caller's X-Sandbox-Pod-IP then usually matches.
    return tuple(sorted(found, key=lambda a: a.version))


def pod_refusal(pod: Mapping[str, Any], allow_unclaimed_pool: bool = False) -> str | None:
    """Why `pod` is not a routable sandbox pod, or None when it is (pure)."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    name = metadata.get("name")
    sandbox = _controlling_sandbox(metadata)
    if sandbox is None:
        return "not controlled by a Sandbox"
    # The controller names the pod after its Sandbox. Requiring it means a pod that merely
    # claims a Sandbox as its owner (ownerReferences are not verified by the API server) can
    # never take over the name of the real sandbox pod, since pod names are unique.
    if sandbox != name:
        return "not named after its Sandbox"
    if metadata.get("deletionTimestamp"):
        return "terminating"
    if status.get("phase") != "Running":
        return "not running"
    if spec.get("hostNetwork"):
        return "uses the host network (its address is the node's)"
    if not allow_unclaimed_pool and WARM_POOL_LABEL in (metadata.get("labels") or {}):
        return "an unclaimed warm-pool pod"  # reachable only once a claim adopted it
    if not _addresses(status):
        return "has no IP address"
    return None


def sandbox_route(pod: Mapping[str, Any], allow_unclaimed_pool: bool = False) -> SandboxRoute | None:
    """The route to a sandbox pod, or None when the pod must not be a target (pure)."""
    if pod_refusal(pod, allow_unclaimed_pool) is not None:
        return None
    metadata = pod["metadata"]
    return SandboxRoute(str(metadata.get("namespace", "")), str(metadata["name"]), str(metadata["name"]),
                        str(metadata.get("uid", "")), _addresses(pod.get("status") or {}))


def pod_key(pod: Mapping[str, Any]) -> Key | None:
    """(namespace, name) of a Pod object, or None when it has neither."""
    metadata = pod.get("metadata") or {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if isinstance(namespace, str) and isinstance(name, str):
        return namespace, name
    return None


class SandboxIndex:
    """Routable sandbox pods of the watched namespaces, keyed by (namespace, Sandbox name)."""

    def __init__(self, namespaces: Iterable[str], allow_unclaimed_pool: bool = False) -> None:
        self.namespaces = frozenset(namespaces)
        self.allow_unclaimed_pool = allow_unclaimed_pool
        self.synced: set[str] = set()
        # Read directly by the resolver on every request (one dict lookup); written only here.
        self.routes: dict[Key, SandboxRoute] = {}
        self._waiters: dict[Key, list[asyncio.Future[SandboxRoute]]] = {}

    @property
    def ready(self) -> bool:
        """True once every watched namespace has been listed at least once."""
        return self.synced >= self.namespaces

    def __len__(self) -> int:
        return len(self.routes)

    def count(self, namespace: str) -> int:
        """Routable sandboxes in one namespace."""
        return sum(1 for key in self.routes if key[0] == namespace)

    def get(self, namespace: str, name: str) -> SandboxRoute | None:
        """The route of a sandbox, or None (the request hot path: one dict lookup)."""
        return self.routes.get((namespace, name))

    def put(self, pod: Mapping[str, Any]) -> None:
        """Apply an ADDED/MODIFIED pod: index it, or drop it when it stopped being routable."""
        key = pod_key(pod)
        if key is None or key[0] not in self.namespaces:
            return
        route = sandbox_route(pod, self.allow_unclaimed_pool)
        if route is None:
            self.routes.pop(key, None)
            return
        old = self.routes.get(key)
        if old is not None and old.pod_uid == route.pod_uid and old.addresses == route.addresses:
            return  # status churn (conditions, restarts): keep the memoised targets
        self.routes[key] = route
        self._wake(key, route)

    def remove(self, pod: Mapping[str, Any]) -> None:
        """Apply a DELETED pod. A late delete of an older pod does not remove its replacement."""
        key = pod_key(pod)
        if key is None:
            return
        current = self.routes.get(key)
        uid = (pod.get("metadata") or {}).get("uid")
        if current is not None and (not uid or current.pod_uid == uid):
            del self.routes[key]

    def replace(self, namespace: str, pods: Iterable[Mapping[str, Any]]) -> None:
        """Apply a full list of a namespace: exactly these pods are its routes from now on."""
        if namespace not in self.namespaces:
            return
        fresh: dict[Key, SandboxRoute] = {}
        for pod in pods:
            key = pod_key(pod)
            route = sandbox_route(pod, self.allow_unclaimed_pool) if key and key[0] == namespace else None
            if route is not None:
                fresh[key] = route  # type: ignore[index]
        for key in [k for k in self.routes if k[0] == namespace and k not in fresh]:
            del self.routes[key]
        for key, route in fresh.items():
            old = self.routes.get(key)
            if old is None or old.pod_uid != route.pod_uid or old.addresses != route.addresses:
                self.routes[key] = route
                self._wake(key, route)
        self.synced.add(namespace)

    async def wait(self, namespace: str, name: str, timeout: float) -> SandboxRoute | None:
        """The route of a sandbox, waiting up to `timeout` s for it to appear (a claim can be
        Ready a moment before its pod's adoption reaches this watch)."""
        key = (namespace, name)
        route = self.routes.get(key)
        if route is not None or timeout <= 0 or namespace not in self.namespaces:
            return route
        future: asyncio.Future[SandboxRoute] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(key, [])
        waiters.append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            if future in waiters:
                waiters.remove(future)
            if not waiters and self._waiters.get(key) is waiters:
                del self._waiters[key]

    def _wake(self, key: Key, route: SandboxRoute) -> None:
        for future in self._waiters.pop(key, ()):
            if not future.done():
                future.set_result(route)
