"""The ``gvisor`` stack on a two-node KIND cluster (control plane + worker; config only:
``kindWorkers=1``): sandboxes run on the worker, the router reaches them, a client on the other node
gets through the router, and NetworkPolicy holds across nodes (a sandbox takes ingress only from the
router; its egress to the API server, both nodes, the metadata address and other pods is refused).
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

from tests.e2e.kind_harness import (
    CACHE_DIR, Kube, Timings, config_args, docker, driver, kind_leftovers, probe_connect, require_caches, sdk_session,
)

STACK = "gvisor"
CLUSTER = "agent-sandbox-e2e2"
CONFIG = {"clusterName": CLUSTER, "imageVariant": "minimal", "warmPoolReplicas": "2", "kindWorkers": "1"}
PROBE_NS = "e2e-probe"
BUSYBOX = "localhost/e2e-busybox:1.35"
pytestmark = pytest.mark.timeout(2400)
REPORT = Timings("kind-2-nodes", nodes=2)
STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def deployed() -> Iterator[Kube]:
    require_caches()
    driver("down", STACK, "--forget", check=False, timeout=120)
    result = driver("up", STACK, *config_args(CONFIG), timeout=3000)
    REPORT.check("up from empty (2 nodes)", result.elapsed)
    kube = Kube(f"kind-{CLUSTER}")
    yield kube
    if not STATE.get("deleted"):
        driver("down", STACK, "--cluster", check=False, timeout=900)


def _pods_nodes(kube: Kube, namespace: str, selector: str) -> dict[str, str]:
    pods = kube.get_json("pods", "-n", namespace, "-l", selector)["items"]
    return {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in pods}


def test_sandboxes_and_router_run_on_the_worker(deployed: Kube) -> None:
    nodes = {n["metadata"]["name"]: n for n in deployed.get_json("nodes")["items"]}
    assert sorted(nodes) == [f"{CLUSTER}-control-plane", f"{CLUSTER}-worker"]
    sandboxes = deployed.get_json("pods", "-n", "agent-sandbox-demo")["items"]
    assert sandboxes and {p["spec"]["nodeName"] for p in sandboxes} == {f"{CLUSTER}-worker"}
    STATE["node_ips"] = [a["address"] for n in nodes.values() for a in n["status"]["addresses"]
                         if a["type"] == "InternalIP"]


def test_smoke_passes_across_nodes(deployed: Kube) -> None:
    result = driver("smoke", STACK, timeout=900)
    REPORT.check("smoke (2 nodes)", result.elapsed)


@pytest.fixture(scope="module")
def probe(deployed: Kube) -> Iterator[dict[str, str]]:
    """A busybox pod on the control-plane node (not a router) that serves HTTP on 8080."""
    archive = CACHE_DIR / "images" / "v0.5.6" / "bin" / "busybox.tar"
    docker_env_kind = [str(CACHE_DIR / "bin" / "kind"), "load", "image-archive", str(archive), "--name", CLUSTER]
    import subprocess
    subprocess.run(docker_env_kind, check=True, capture_output=True)
    deployed.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROBE_NS}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": PROBE_NS,
                                                         "labels": {"app": "probe"}},
         "spec": {"nodeName": f"{CLUSTER}-control-plane",
                  "tolerations": [{"operator": "Exists"}],
                  "containers": [{"name": "probe", "image": BUSYBOX, "imagePullPolicy": "Never",
                                  "command": ["sh", "-c", "mkdir -p /tmp/www && echo probe-ok > /tmp/www/index.html "
                                              "&& exec httpd -f -p 8080 -h /tmp/www"]}]}})
    deployed.wait_ready(PROBE_NS, "probe")
    pod = deployed.get_json("pod", "probe", "-n", PROBE_NS)
    yield {"ip": pod["status"]["podIP"], "node": pod["spec"]["nodeName"]}
    deployed.kubectl("delete", "namespace", PROBE_NS, "--wait=false", check=False)


def test_a_sandbox_takes_ingress_only_from_the_router_across_nodes(deployed: Kube, probe: dict[str, str]) -> None:
    started = time.monotonic()
    sandbox_pod = deployed.get_json("pods", "-n", "agent-sandbox-demo")["items"][0]
    ip = sandbox_pod["status"]["podIP"]
    # pod network across nodes works (the probe reaches the API server's service and DNS)...
    dns = deployed.exec(PROBE_NS, "probe", "nslookup", "kubernetes.default.svc.cluster.local", check=False)
    assert dns.returncode == 0, dns.stdout + dns.stderr
    # ...but a non-router pod on the other node cannot open the sandbox's port
    direct = deployed.exec(PROBE_NS, "probe", "sh", "-c", f"timeout 5 nc -z -w 3 {ip} 8888; echo exit=$?",
                           check=False, timeout=30)
    assert "exit=0" not in direct.stdout, f"the probe on the control plane reached a sandbox directly: {direct.stdout}"
    REPORT.check("ingress only from the router (cross-node)", time.monotonic() - started)


def test_router_reaches_sandboxes_and_egress_is_refused_across_nodes(deployed: Kube, probe: dict[str, str]) -> None:
    started = time.monotonic()
    with sdk_session(STACK) as (client, target):
        sandbox = client.create_sandbox(target.warm_pool, namespace=target.namespace, sandbox_ready_timeout=180)
        try:
            assert sandbox.commands.run("echo across").stdout == "across\n"
            results = {"other pod (probe, control plane)": probe_connect(sandbox, probe["ip"], 8080),
                       "API server service": probe_connect(sandbox, "10.96.0.1", 443)}
            for node_ip in STATE.get("node_ips", []):
                results[f"node {node_ip} kubelet"] = probe_connect(sandbox, node_ip, 10250)
                results[f"node {node_ip} API server"] = probe_connect(sandbox, node_ip, 6443)
            results["metadata 169.254.169.254"] = probe_connect(sandbox, "169.254.169.254", 80)
        finally:
            client.delete_sandbox(sandbox.claim_name, namespace=target.namespace)
    REPORT.check("egress refused across nodes", time.monotonic() - started, results=results)
    opened = {name: state for name, state in results.items() if state == "open"}
    assert not opened, f"a sandbox reached what its policy forbids: {opened}"


def test_down_cluster_leaves_nothing(deployed: Kube) -> None:
    result = driver("down", STACK, "--cluster", timeout=900)
    STATE["deleted"] = True
    REPORT.check("down --cluster (2 nodes)", result.elapsed)
    assert kind_leftovers(CLUSTER) == []
    assert CLUSTER not in docker("ps", "-a", "--format", "{{.Names}}").stdout
