"""Unit tests of the watch resolver (issue 11 item 1): which pods are sandbox targets, the pod
index fed by list+watch, and how routing headers resolve against it. No sockets, no cluster."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "router"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "component"))

from sandbox_router.kube import KubeAPIError, PodWatcher, ResourceExpired, pods_path  # noqa: E402
from sandbox_router.routing import AddressPolicy, RouteResolver, RoutingError, SandboxUnavailable  # noqa: E402
from sandbox_router.sandboxes import SandboxIndex, pod_refusal, sandbox_route  # noqa: E402
from sandbox_router.settings import RouterSettings  # noqa: E402
from sdk_harness import WARM_POOL_LABEL, sandbox_pod  # noqa: E402

NS = "agent-sandbox-demo"


def headers(**values: str) -> dict[bytes, bytes]:
    return {b"x-sandbox-" + k.replace("_", "-").encode(): v.encode("latin-1") for k, v in values.items()}


def watch_resolver(index: SandboxIndex, **overrides: Any) -> RouteResolver:
    settings = RouterSettings(auth_token="t" * 20, resolver="watch", sandbox_namespaces=(NS, "team-b"),
                              sandbox_ports=(8888,), **overrides)
    return RouteResolver(settings, AddressPolicy(own_addresses=("10.244.0.9",)), index)


def index_with(*pods: dict[str, Any]) -> SandboxIndex:
    index = SandboxIndex((NS, "team-b"))
    index.replace(NS, [p for p in pods if p["metadata"]["namespace"] == NS])
    index.replace("team-b", [p for p in pods if p["metadata"]["namespace"] == "team-b"])
    return index


# -- which pods are targets --------------------------------------------------------------------------
def test_a_running_pod_controlled_by_its_sandbox_is_a_target() -> None:
    route = sandbox_route(sandbox_pod("sbx-a", NS, "10.244.1.5"))
    assert route is not None and (route.namespace, route.sandbox) == (NS, "sbx-a")
    assert route.addresses == (ipaddress.ip_address("10.244.1.5"),)


def test_warm_pool_adopted_sandbox_is_a_target_under_its_own_name() -> None:
    """What the SDK sends for a warm-pool claim: X-Sandbox-ID = status.sandbox.name, the
    pool-generated Sandbox name (the pod has the same name), not the claim name."""
    pod = sandbox_pod("python-sandbox-warmpool-x7k2p", NS, "10.244.1.6",
                      labels={"agents.x-k8s.io/claim-uid": "1234"})
    assert sandbox_route(pod) is not None


@pytest.mark.parametrize(("pod", "reason"), [
    (sandbox_pod("web", NS, owner_kind="ReplicaSet", owner_api_version="apps/v1"), "not controlled by a Sandbox"),
    (sandbox_pod("fake", NS, owner_api_version="evil.example.com/v1"), "not controlled by a Sandbox"),
    (sandbox_pod("impostor", NS, sandbox="sbx-a"), "not named after its Sandbox"),
    (sandbox_pod("sbx-p", NS, phase="Pending"), "not running"),
    (sandbox_pod("sbx-d", NS, deleting=True), "terminating"),
    (sandbox_pod("sbx-h", NS, host_network=True), "host network"),
    (sandbox_pod("pool-abcde", NS, labels={WARM_POOL_LABEL: "1a2b3c4d"}), "unclaimed warm-pool"),
    (sandbox_pod("sbx-n", NS, ip=""), "no IP address"),
])
def test_pods_that_are_not_targets(pod: dict[str, Any], reason: str) -> None:
    assert reason in (pod_refusal(pod) or "")
    assert sandbox_route(pod) is None


def test_non_controller_owner_reference_does_not_count() -> None:
    pod = sandbox_pod("sbx-a", NS)
    pod["metadata"]["ownerReferences"][0]["controller"] = False
    assert sandbox_route(pod) is None


def test_unclaimed_pool_pods_can_be_allowed_explicitly() -> None:
    pod = sandbox_pod("pool-abcde", NS, labels={WARM_POOL_LABEL: "1a2b3c4d"})
    assert sandbox_route(pod, allow_unclaimed_pool=True) is not None


def test_dual_stack_addresses_put_ipv4_first() -> None:
    pod = sandbox_pod("sbx-a", NS, "fd00:10:244::5")
    pod["status"]["podIPs"] = [{"ip": "fd00:10:244::5"}, {"ip": "10.244.1.5"}]
    assert [str(a) for a in sandbox_route(pod).addresses] == ["10.244.1.5", "fd00:10:244::5"]


# -- the index ---------------------------------------------------------------------------------------
def test_index_follows_list_and_watch_events() -> None:
    index = SandboxIndex((NS,))
    assert not index.ready
    index.replace(NS, [sandbox_pod("sbx-a", NS, "10.244.1.5"), sandbox_pod("web", NS, owner_kind="ReplicaSet")])
    assert index.ready and len(index) == 1 and index.get(NS, "web") is None
    moved = sandbox_pod("sbx-a", NS, "10.244.2.9")
    index.put(moved)
    assert str(index.get(NS, "sbx-a").addresses[0]) == "10.244.2.9"
    index.put(sandbox_pod("sbx-a", NS, "10.244.2.9", deleting=True))
    assert index.get(NS, "sbx-a") is None
    index.put(moved)
    index.remove(moved)
    assert index.get(NS, "sbx-a") is None


def test_late_delete_of_an_old_pod_keeps_its_replacement() -> None:
    index = SandboxIndex((NS,))
    old, new = sandbox_pod("sbx-a", NS, "10.244.1.5"), sandbox_pod("sbx-a", NS, "10.244.1.6")
    index.replace(NS, [old])
    index.put(new)
    index.remove(old)
    assert str(index.get(NS, "sbx-a").addresses[0]) == "10.244.1.6"


def test_relist_drops_pods_that_disappeared_and_ignores_other_namespaces() -> None:
    index = index_with(sandbox_pod("sbx-a", NS), sandbox_pod("sbx-b", NS))
    index.replace(NS, [sandbox_pod("sbx-b", NS)])
    assert index.get(NS, "sbx-a") is None and index.get(NS, "sbx-b") is not None
    index.put(sandbox_pod("sbx-x", "kube-system"))
    assert index.get("kube-system", "sbx-x") is None


def test_status_churn_keeps_the_same_route_object() -> None:
    pod = sandbox_pod("sbx-a", NS, uid="u-1")
    index = index_with(pod)
    route = index.get(NS, "sbx-a")
    pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    index.put(pod)
    assert index.get(NS, "sbx-a") is route


def test_wait_returns_a_sandbox_that_appears_and_times_out_otherwise() -> None:
    async def scenario() -> tuple[object, object]:
        index = SandboxIndex((NS,))
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, index.put, sandbox_pod("late", NS))
        found = await index.wait(NS, "late", 2.0)
        missing = await index.wait(NS, "never", 0.05)
        return found, missing
    found, missing = asyncio.run(scenario())
    assert found is not None and found.sandbox == "late"
    assert missing is None


# -- resolution --------------------------------------------------------------------------------------
def test_watch_target_is_the_pod_address_not_the_callers() -> None:
    resolver = watch_resolver(index_with(sandbox_pod("sbx-a", NS, "10.244.1.5")))
    target = resolver.resolve(headers(id="sbx-a", namespace=NS, port="8888", pod_ip="169.254.169.254"))
    assert (target.host, target.port, target.is_ip) == ("10.244.1.5", 8888, True)
    target = resolver.resolve(headers(id="sbx-a", namespace=NS, timeout="7"))
    assert target.host == "10.244.1.5" and target.timeout == 7.0 and target.requested_timeout == 7.0


def test_pod_ip_header_chooses_among_the_pods_own_addresses() -> None:
    pod = sandbox_pod("sbx-a", NS, "10.244.1.5")
    pod["status"]["podIPs"] = [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244::5"}]
    resolver = watch_resolver(index_with(pod))
    assert resolver.resolve(headers(id="sbx-a", namespace=NS, pod_ip="fd00:10:244::5")).host == "fd00:10:244::5"


def test_pool_key_separates_pods_that_reuse_an_address() -> None:
    index = index_with(sandbox_pod("sbx-a", NS, "10.244.1.5", uid="u-1"))
    resolver = watch_resolver(index)
    first = resolver.resolve(headers(id="sbx-a", namespace=NS)).pool_key
    index.put(sandbox_pod("sbx-a", NS, "10.244.1.5", uid="u-2"))
    assert resolver.resolve(headers(id="sbx-a", namespace=NS)).pool_key != first


REFUSED = [
    # the review's SSRF examples: the API server, kube-dns, another namespace, a non-sandbox port
    ({"id": "kubernetes", "namespace": "default", "port": "443"}, 502, "Could not connect to the backend sandbox"),
    ({"id": "kube-dns", "namespace": "kube-system", "port": "53"}, 502, "Could not connect to the backend sandbox"),
    ({"id": "sbx-a", "namespace": "other-team"}, 502, "Could not connect to the backend sandbox: sbx-a"),
    ({"id": "sbx-a", "namespace": NS, "port": "10250"}, 400, "Port 10250 is not a sandbox port"),
    ({"id": "web", "namespace": NS, "pod_ip": "10.244.1.8"}, 502, "Could not connect to the backend sandbox: web"),
    ({"id": "ghost", "namespace": NS, "pod_ip": "10.244.1.5"}, 502, "Could not connect to the backend sandbox: ghost"),
    ({"id": "sbx-a", "namespace": NS, "pod_ip": "not-an-ip"}, 400, "Invalid target IP address format."),
    ({"id": "Bad", "namespace": NS}, 400, "Invalid sandbox ID format."),
]


@pytest.mark.parametrize(("values", "status", "detail"), REFUSED)
def test_watch_mode_refusals(values: dict[str, str], status: int, detail: str) -> None:
    resolver = watch_resolver(index_with(sandbox_pod("sbx-a", NS, "10.244.1.5"),
                                         sandbox_pod("web", NS, "10.244.1.8", owner_kind="ReplicaSet")))
    with pytest.raises(RoutingError) as err:
        resolver.resolve(headers(**values))
    assert err.value.status == status and detail in err.value.detail


def test_unknown_sandbox_can_be_waited_for() -> None:
    index = index_with()
    resolver = watch_resolver(index)
    with pytest.raises(SandboxUnavailable) as err:
        resolver.resolve(headers(id="late", namespace=NS))

    async def scenario() -> str:
        asyncio.get_running_loop().call_later(0.05, index.put, sandbox_pod("late", NS, "10.244.3.3"))
        return (await resolver.wait_for(err.value.request, 2.0)).host
    assert asyncio.run(scenario()) == "10.244.3.3"


def test_a_pod_address_the_policy_refuses_is_not_used() -> None:
    resolver = watch_resolver(index_with(sandbox_pod("sbx-own", NS, "10.244.0.9"),
                                         sandbox_pod("sbx-meta", NS, "169.254.169.254")))
    for name in ("sbx-own", "sbx-meta"):
        with pytest.raises(RoutingError) as err:
            resolver.resolve(headers(id=name, namespace=NS))
        assert err.value.status == 502


# -- the list+watch loop -------------------------------------------------------------------------------
class ScriptedClient:
    """Stands in for KubeClient: answers lists and watches from a script, records the paths."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.paths: list[str] = []

    async def get_json(self, path: str) -> Any:
        self.paths.append(path)
        return self._next()

    async def watch(self, path: str):  # noqa: ANN201 - async generator
        self.paths.append(path)
        step = self._next()
        if isinstance(step, Exception):
            raise step
        for event in step:
            yield event

    def _next(self) -> Any:
        if not self.script:
            raise asyncio.CancelledError  # end of the script ends the loop
        step = self.script.pop(0)
        if isinstance(step, Exception) and not isinstance(step, list):
            raise step
        return step


def test_watch_loop_lists_pages_watches_relists_on_410_and_survives_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sandbox_router.kube.BACKOFF_MIN_SECONDS", 0.001)
    page1 = {"metadata": {"continue": "c1"}, "items": [sandbox_pod("sbx-a", NS)]}
    page2 = {"metadata": {"resourceVersion": "10"}, "items": [sandbox_pod("sbx-b", NS)]}
    added = sandbox_pod("sbx-c", NS)
    added["metadata"]["resourceVersion"] = "11"
    script: list[Any] = [
        page1, page2,
        [{"type": "ADDED", "object": added}, {"type": "DELETED", "object": sandbox_pod("sbx-a", NS)},
         {"type": "ERROR", "object": {"code": 410, "message": "too old"}}],
        KubeAPIError(403, "forbidden"),                      # the relist fails once ...
        {"metadata": {"resourceVersion": "20"}, "items": [sandbox_pod("sbx-z", NS)]},  # ... then works
    ]
    client = ScriptedClient(script)
    index = SandboxIndex((NS,))
    errors: list[str] = []
    watcher = PodWatcher(client, index, on_error=errors.append)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(watcher._run(NS))  # noqa: SLF001
    assert [key for key in ("sbx-a", "sbx-b", "sbx-c", "sbx-z") if index.get(NS, key)] == ["sbx-z"]
    assert errors == ["expired", "forbidden"]
    assert client.paths[0] == pods_path(NS, limit="500")
    assert client.paths[1] == pods_path(NS, limit="500", **{"continue": "c1"})
    assert "watch=1" in client.paths[2] and "resourceVersion=10" in client.paths[2]
    assert all(p.startswith(f"/api/v1/namespaces/{NS}/pods?labelSelector=agents.x-k8s.io%2Fsandbox-name-hash")
               for p in client.paths)
    assert isinstance(ResourceExpired(410, "x"), KubeAPIError)
