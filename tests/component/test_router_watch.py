"""The router proxies to sandboxes only (issue 11 item 1), end to end on loopback.

A real router process in the production `ROUTER_RESOLVER=watch` mode lists and watches pods
through FakeKubeAPI (HTTPS with its own CA, a service-account token file, namespaced RBAC). The
sandbox pod's address is the recording upstream on 127.0.0.1; a "decoy" server on 127.0.0.2
stands for everything a token holder must not reach (another pod, a Service, the API server, a
node port): no request in this file may ever arrive there, whatever the caller's headers say.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sdk_harness import (
    TEST_TOKEN, WARM_POOL_LABEL, FakeKubeAPI, RecordingUpstream, RouterProcess, build_request, make_test_tls,
    raw_request, sandbox_pod,
)

pytestmark = pytest.mark.timeout(180)
NS, NS_B = "agent-sandbox-demo", "team-b"


@pytest.fixture(scope="module")
def env(router_impl: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("watch")
    try:
        make_test_tls(tmp / "probe")
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot make test certificates: {exc}")
    upstream = RecordingUpstream().start()
    decoy = RecordingUpstream(port=upstream.port, host="127.0.0.2").start()
    kube = FakeKubeAPI(tmp, namespaces=(NS, NS_B, "other-team")).start()
    for pod in (
        sandbox_pod("sbx-a", NS, "127.0.0.1"),
        sandbox_pod("python-sandbox-warmpool-x7k2p", NS, "127.0.0.1", labels={"agents.x-k8s.io/claim-uid": "c1"}),
        sandbox_pod("python-sandbox-warmpool-unclm", NS, "127.0.0.1", labels={WARM_POOL_LABEL: "1a2b3c4d"}),
        sandbox_pod("not-a-sandbox", NS, "127.0.0.2", owner_kind="ReplicaSet", owner_api_version="apps/v1"),
        sandbox_pod("impostor", NS, "127.0.0.2", sandbox="sbx-a"),
        sandbox_pod("host-net", NS, "127.0.0.2", host_network=True),
        sandbox_pod("pending", NS, "127.0.0.2", phase="Pending"),
        sandbox_pod("sbx-o", "other-team", "127.0.0.2"),
    ):
        kube.put_pod(pod)
    router = RouterProcess(log_path=tmp / "router.log", ROUTER_SANDBOX_NAMESPACES=f"{NS},{NS_B}",
                           ROUTER_SANDBOX_PORTS=str(upstream.port), ROUTER_SANDBOX_WAIT_SECONDS="2",
                           ROUTER_CONNECT_TIMEOUT_SECONDS="2", **kube.router_env())
    router.start()
    try:
        wait_ready(router)
        yield {"router": router, "kube": kube, "upstream": upstream, "decoy": decoy}
    finally:
        router.stop()
        kube.stop()
        decoy.stop()
        upstream.stop()


def wait_ready(router: RouterProcess, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while requests.get(f"{router.url}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, router.log_text()
        time.sleep(0.05)


def call(env: dict[str, object], headers: dict[str, str], path: str = "/probe") -> requests.Response:
    router = env["router"]
    base = {"Authorization": f"Bearer {TEST_TOKEN}", "X-Sandbox-Namespace": NS,
            "X-Sandbox-Port": str(env["upstream"].port)}
    return requests.get(f"{router.url}{path}", headers={**base, **headers}, timeout=15)


@pytest.fixture(autouse=True)
def nothing_reaches_the_decoy(env: dict[str, object]) -> Iterator[None]:
    env["decoy"].clear()
    env["upstream"].clear()
    yield
    assert env["decoy"].seen == [], f"the decoy was reached: {env['decoy'].seen}"


def test_sandbox_pod_is_reached_through_the_cluster_objects(env: dict[str, object]) -> None:
    response = call(env, {"X-Sandbox-ID": "sbx-a"})
    assert response.status_code == 200
    assert env["upstream"].seen[-1].header("host") == [f"127.0.0.1:{env['upstream'].port}"]


def test_warm_pool_adopted_sandbox_is_reached_by_its_sandbox_name(env: dict[str, object]) -> None:
    assert call(env, {"X-Sandbox-ID": "python-sandbox-warmpool-x7k2p"}).status_code == 200


def test_callers_pod_ip_does_not_choose_the_target(env: dict[str, object]) -> None:
    response = call(env, {"X-Sandbox-ID": "sbx-a", "X-Sandbox-Pod-IP": "127.0.0.2"})
    assert response.status_code == 200 and len(env["upstream"].seen) == 1


REFUSED = [
    ("api-server", {"X-Sandbox-ID": "kubernetes", "X-Sandbox-Namespace": "default", "X-Sandbox-Port": "443"}, 502),
    ("kube-dns", {"X-Sandbox-ID": "kube-dns", "X-Sandbox-Namespace": "kube-system", "X-Sandbox-Port": "53"}, 502),
    ("other-namespace", {"X-Sandbox-ID": "sbx-o", "X-Sandbox-Namespace": "other-team"}, 502),
    ("non-sandbox-pod", {"X-Sandbox-ID": "not-a-sandbox", "X-Sandbox-Pod-IP": "127.0.0.2"}, 502),
    ("impostor-owner", {"X-Sandbox-ID": "impostor", "X-Sandbox-Pod-IP": "127.0.0.2"}, 502),
    ("host-network-pod", {"X-Sandbox-ID": "host-net"}, 502),
    ("pending-pod", {"X-Sandbox-ID": "pending"}, 502),
    ("unclaimed-pool-pod", {"X-Sandbox-ID": "python-sandbox-warmpool-unclm"}, 502),
    ("unknown-with-pod-ip", {"X-Sandbox-ID": "ghost", "X-Sandbox-Pod-IP": "127.0.0.2"}, 502),
    ("non-sandbox-port", {"X-Sandbox-ID": "sbx-a", "X-Sandbox-Port": "10250"}, 400),
    ("router-port", {"X-Sandbox-ID": "sbx-a", "X-Sandbox-Port": "8080"}, 400),
]


@pytest.mark.parametrize(("name", "headers", "status"), REFUSED, ids=[r[0] for r in REFUSED])
def test_only_sandboxes_are_targets(env: dict[str, object], name: str, headers: dict[str, str], status: int) -> None:
    response = call(env, headers)
    assert response.status_code == status, response.text
    assert "detail" in response.json()
    if status == 502:
        assert response.json()["detail"] == f"Could not connect to the backend sandbox: {headers['X-Sandbox-ID']}"
    assert env["upstream"].seen == []


def test_new_and_deleted_pods_are_followed(env: dict[str, object]) -> None:
    kube: FakeKubeAPI = env["kube"]
    kube.put_pod(sandbox_pod("sbx-new", NS_B, "127.0.0.1"))
    assert call(env, {"X-Sandbox-ID": "sbx-new", "X-Sandbox-Namespace": NS_B}).status_code == 200
    kube.delete_pod(NS_B, "sbx-new")
    deadline = time.monotonic() + 10
    while call(env, {"X-Sandbox-ID": "sbx-new", "X-Sandbox-Namespace": NS_B}).status_code != 502:
        assert time.monotonic() < deadline, "a deleted sandbox pod stayed routable"


def test_request_waits_for_a_sandbox_that_is_being_adopted(env: dict[str, object]) -> None:
    """The claim can be Ready a moment before the adopted pod's update reaches the watch."""
    kube: FakeKubeAPI = env["kube"]
    unclaimed = sandbox_pod("python-sandbox-warmpool-adopt", NS, "127.0.0.1", labels={WARM_POOL_LABEL: "1a2b3c4d"})
    kube.put_pod(unclaimed)
    time.sleep(0.3)
    adopted = sandbox_pod("python-sandbox-warmpool-adopt", NS, "127.0.0.1", labels={"agents.x-k8s.io/claim-uid": "c2"})
    threading.Timer(0.5, kube.put_pod, args=(adopted,)).start()
    started = time.monotonic()
    assert call(env, {"X-Sandbox-ID": "python-sandbox-warmpool-adopt"}).status_code == 200
    assert 0.3 < time.monotonic() - started < 2.5
    # the wait is visible: a warm sandbox's first command that waited for the watch shows here
    import requests

    text = requests.get(f"{env['router'].url}/metrics", headers={"Authorization": f"Bearer {TEST_TOKEN}"},
                        timeout=5).text
    counts = [line for line in text.splitlines()
              if line.startswith('sandbox_router_route_wait_seconds_count{outcome="found"}')]
    assert counts and float(counts[0].split()[-1]) >= 1, text[-2000:]


def test_expired_watch_is_relisted(env: dict[str, object]) -> None:
    kube: FakeKubeAPI = env["kube"]
    lists = kube.list_calls(NS)
    kube.expire_watches()
    deadline = time.monotonic() + 10
    while kube.list_calls(NS) == lists:
        assert time.monotonic() < deadline, "the router did not list again after 410 Gone"
        time.sleep(0.05)
    kube.put_pod(sandbox_pod("sbx-after-relist", NS, "127.0.0.1"))
    assert call(env, {"X-Sandbox-ID": "sbx-after-relist"}).status_code == 200


def test_router_uses_its_token_and_only_pod_list_watch_in_its_namespaces(env: dict[str, object]) -> None:
    kube: FakeKubeAPI = env["kube"]
    assert kube.requests
    for method, path, auth in kube.requests:
        assert method == "GET" and auth == f"Bearer {kube.token}"
        assert path.split("?")[0] in (f"/api/v1/namespaces/{NS}/pods", f"/api/v1/namespaces/{NS_B}/pods"), path
        assert "labelSelector=agents.x-k8s.io%2Fsandbox-name-hash" in path


def test_rotated_token_is_picked_up(env: dict[str, object]) -> None:
    kube: FakeKubeAPI = env["kube"]
    kube.rotate_token("rotated-service-account-token")
    kube.expire_watches()  # the next list/watch must authenticate with the new token
    kube.put_pod(sandbox_pod("sbx-rotated", NS, "127.0.0.1"))
    deadline = time.monotonic() + 15
    while call(env, {"X-Sandbox-ID": "sbx-rotated"}).status_code != 200:
        assert time.monotonic() < deadline, "the router did not re-read its rotated token"
    assert any(auth == "Bearer rotated-service-account-token" for _, _, auth in kube.requests)


def test_readyz_waits_for_the_first_list(tmp_path: Path) -> None:
    kube = FakeKubeAPI(tmp_path, namespaces=(NS,)).start()
    kube.fail_status = 500
    try:
        with RouterProcess(ROUTER_SANDBOX_NAMESPACES=NS, **kube.router_env()) as router:
            time.sleep(0.5)
            assert requests.get(f"{router.url}/healthz", timeout=5).status_code == 200
            assert requests.get(f"{router.url}/readyz", timeout=5).status_code == 503
            kube.fail_status = None
            wait_ready(router)
    finally:
        kube.stop()


def test_watch_mode_without_namespaces_does_not_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    from sdk_harness import ROUTER_DIR, free_port

    kube = FakeKubeAPI(tmp_path, namespaces=(NS,))
    result = subprocess.run([sys.executable, "-m", "sandbox_router"], cwd=ROUTER_DIR, capture_output=True, text=True,
                            timeout=30, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROUTER_DIR),
                                             "ROUTER_AUTH_TOKEN": TEST_TOKEN, "ROUTER_PORT": str(free_port()),
                                             **kube.router_env()})
    assert result.returncode == 2 and "ROUTER_SANDBOX_NAMESPACES" in result.stderr


def test_unknown_sandbox_answer_is_the_usual_502(env: dict[str, object]) -> None:
    started = time.monotonic()
    response = raw_request(env["router"].port, build_request([
        ("Authorization", f"Bearer {TEST_TOKEN}"), ("X-Sandbox-ID", "ghost"), ("X-Sandbox-Namespace", NS),
        ("X-Sandbox-Port", str(env["upstream"].port))]))
    assert response.status == 502
    assert response.json() == {"detail": "Could not connect to the backend sandbox: ghost"}
    assert response.headers.get("connection") == "close"
    assert 1.5 < time.monotonic() - started < 5  # it waited ROUTER_SANDBOX_WAIT_SECONDS=2 for it first
