"""End-to-end checks of the single-node e2e cluster (make cluster-up / cluster-down).

They run only where `make toolchain-cluster` has filled the toolchain cache and the process is root;
otherwise every test here is skipped with a printed reason. The session fixture brings the cluster
up through the make target and tears it down at the end, asserting that nothing is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from typing import Any, Iterator

import pytest
import yaml

from tests.e2e.cluster_harness import (  # noqa: E402
    CONTROLLER_MANIFEST, VERSIONS, Cluster, skip_loudly,
)


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for this module's test objects, deleted afterwards (the cluster may be
    shared with other test modules or sessions)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    # The namespace's default ServiceAccount must exist before pods can be admitted.
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        assert time.monotonic() < deadline, f"no default ServiceAccount in {name} after 60s"
        time.sleep(1)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def busybox_pod(name: str, namespace: str, script: str, labels: dict[str, str] | None = None,
                runtime_class: str | None = None) -> dict[str, Any]:
    """A pod running `sh -c script` in the locally built busybox image (never pulled)."""
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "main",
            "image": VERSIONS["BUSYBOX_IMAGE"],
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", script],
        }],
    }
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
        "spec": spec,
    }


WEB_SCRIPT = "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"


@pytest.fixture(scope="module")
def web(cluster: Cluster, namespace: str) -> dict[str, str]:
    """An HTTP server pod behind a ClusterIP Service, and a client pod; returns their addresses."""
    cluster.apply(
        busybox_pod("web", namespace, WEB_SCRIPT, labels={"app": "web"}),
        busybox_pod("client", namespace, "exec sleep 3600", labels={"role": "client"}),
        busybox_pod("stranger", namespace, "exec sleep 3600", labels={"role": "stranger"}),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
    )
    cluster.wait_ready(namespace, "web", "client", "stranger")
    pod_ip = cluster.get_json("pod", "web", "-n", namespace)["status"]["podIP"]
    service_ip = cluster.get_json("service", "web", "-n", namespace)["spec"]["clusterIP"]
    return {"pod_ip": pod_ip, "service_ip": service_ip}


def fetch(cluster: Cluster, namespace: str, pod: str, url: str) -> subprocess.CompletedProcess[str]:
    """wget url from inside pod, cut off after 5 s; returns the finished process."""
    # `timeout`, not wget's own -T: Debian's busybox-static 1.35 wget segfaults with -T.
    return cluster.exec(namespace, pod, "timeout", "5", "wget", "-q", "-O", "-", url, check=False, timeout=30)


def eventually(check: Any, timeout: float, what: str) -> Any:
    """Poll check() until it returns a truthy value; fail naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(2)
    raise AssertionError(f"{what} not reached in {timeout}s (last: {last!r})")


def test_gvisor_pod_sees_gvisor_kernel_and_runc_pod_sees_host_kernel(cluster: Cluster, namespace: str) -> None:
    """runtimeClassName gvisor runs the pod on gVisor's kernel; the default (runc) on the host's."""
    cluster.apply(
        busybox_pod("on-runc", namespace, "exec sleep 3600"),
        busybox_pod("on-gvisor", namespace, "exec sleep 3600", runtime_class="gvisor"),
    )
    cluster.wait_ready(namespace, "on-runc", "on-gvisor")
    host_release = os.uname().release
    runc_release = cluster.exec(namespace, "on-runc", "uname", "-r").stdout.strip()
    gvisor_release = cluster.exec(namespace, "on-gvisor", "uname", "-r").stdout.strip()
    assert runc_release == host_release
    assert gvisor_release and gvisor_release != host_release
    gvisor_dmesg = cluster.exec(namespace, "on-gvisor", "dmesg").stdout
    assert "gVisor" in gvisor_dmesg, gvisor_dmesg[:500]


def test_pod_to_pod_and_pod_to_service(cluster: Cluster, namespace: str, web: dict[str, str]) -> None:
    """A client pod reaches the server pod by pod IP and through its ClusterIP Service."""
    direct = fetch(cluster, namespace, "client", f"http://{web['pod_ip']}:8080/")
    assert direct.returncode == 0 and "hello-from-web" in direct.stdout, direct.stderr
    # kube-proxy programs a new Service within a few seconds; poll rather than race it.
    via_service = eventually(
        lambda: (lambda r: r if r.returncode == 0 else None)(
            fetch(cluster, namespace, "client", f"http://{web['service_ip']}/")),
        60, "the web Service answering")
    assert "hello-from-web" in via_service.stdout, via_service.stderr


def test_dns_resolves_service_names(cluster: Cluster, namespace: str, web: dict[str, str]) -> None:
    """Cluster DNS answers *.svc.cluster.local names with the Services' ClusterIPs."""
    lookup = eventually(
        lambda: (lambda r: r if web["service_ip"] in r.stdout else None)(
            cluster.exec(namespace, "client", "nslookup", f"web.{namespace}.svc.cluster.local", check=False)),
        60, f"web.{namespace}.svc.cluster.local resolving to {web['service_ip']}")
    assert web["service_ip"] in lookup.stdout
    api = cluster.exec(namespace, "client", "nslookup", "kubernetes.default.svc.cluster.local", check=False)
    assert "10.96.0.1" in api.stdout, api.stdout + api.stderr


def test_network_policy_denies_then_allows(cluster: Cluster, namespace: str, web: dict[str, str]) -> None:
    """A deny-all ingress policy blocks the server; an allow rule then admits only labelled clients."""
    url = f"http://{web['pod_ip']}:8080/"
    assert fetch(cluster, namespace, "client", url).returncode == 0, "server unreachable before any policy"
    deny = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web-deny-all", "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
    }
    cluster.apply(deny)
    eventually(lambda: fetch(cluster, namespace, "client", url).returncode != 0, 90, "deny-all enforced")
    allow = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web-allow-clients", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                         "ports": [{"port": 8080, "protocol": "TCP"}]}],
        },
    }
    cluster.apply(allow)
    eventually(lambda: fetch(cluster, namespace, "client", url).returncode == 0, 90, "allow rule enforced")
    assert fetch(cluster, namespace, "stranger", url).returncode != 0, "unlabelled pod got through"
    cluster.kubectl("delete", "networkpolicy", "-n", namespace, "web-deny-all", "web-allow-clients")


def controller_manifests() -> list[dict[str, Any]]:
    """The pinned v0.5.6 release with the controller image swapped for the locally built one."""
    if not CONTROLLER_MANIFEST.exists():
        skip_loudly(f"agent-sandbox release manifest not found at {CONTROLLER_MANIFEST}")
    documents = [doc for doc in yaml.safe_load_all(CONTROLLER_MANIFEST.read_text()) if doc]
    deployments = [doc for doc in documents if doc["kind"] == "Deployment"]
    assert len(deployments) == 1, "expected exactly one controller Deployment in the release manifest"
    container = deployments[0]["spec"]["template"]["spec"]["containers"][0]
    container["image"] = VERSIONS["CONTROLLER_IMAGE"]
    container["imagePullPolicy"] = "Never"
    assert "--extensions" in container.get("args", []), "release manifest lost --extensions"
    return documents


@pytest.fixture(scope="module")
def agent_sandbox(cluster: Cluster, namespace: str) -> Iterator[None]:
    """Deploy the agent-sandbox controller with --extensions, wait until its webhook serves, and
    remove it afterwards. A controller someone else deployed in a shared cluster is not touched."""
    existing = cluster.kubectl("get", "deployment", "-n", "agent-sandbox-system", "agent-sandbox-controller",
                               check=False)
    if existing.returncode == 0:
        skip_loudly("an agent-sandbox controller is already deployed in this (shared) cluster; "
                    "not replacing it (make cluster-down, then rerun)")
    manifests = controller_manifests()
    cluster.apply(*manifests)
    try:
        wait_for_controller(cluster)
        yield
    finally:
        # Custom resources first, while the controller can still process their finalizers.
        cluster.kubectl("delete", "sandboxwarmpools,sandboxclaims,sandboxtemplates,sandboxes", "--all",
                        "-n", namespace, "--wait=true", "--timeout=90s", check=False, timeout=120)
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                        stdin=yaml.safe_dump_all(manifests), check=False)


def wait_for_controller(cluster: Cluster) -> None:
    """Wait for the controller Deployment to be available and its webhook Service to have endpoints."""
    rollout = cluster.kubectl("rollout", "status", "-n", "agent-sandbox-system",
                              "deployment/agent-sandbox-controller", "--timeout=300s", check=False, timeout=330)
    if rollout.returncode != 0:
        pods = cluster.kubectl("describe", "pods", "-n", "agent-sandbox-system", check=False).stdout
        logs = cluster.kubectl("logs", "-n", "agent-sandbox-system", "deployment/agent-sandbox-controller",
                               check=False).stdout
        raise AssertionError(f"controller not available:\n{rollout.stderr}\n{pods[-3000:]}\n{logs[-3000:]}")

    def webhook_has_endpoints() -> bool:
        slices = cluster.get_json("endpointslices", "-n", "agent-sandbox-system",
                                  "-l", "kubernetes.io/service-name=agent-sandbox-webhook-service")
        return any(endpoint.get("conditions", {}).get("ready") for item in slices["items"]
                   for endpoint in item.get("endpoints") or [])

    eventually(webhook_has_endpoints, 120, "webhook Service endpoints ready")


def trivial_template(namespace: str) -> dict[str, Any]:
    """A SandboxTemplate whose pod only sleeps, on gVisor, from the local busybox image."""
    return {
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
        "metadata": {"name": "trivial", "namespace": namespace},
        "spec": {"podTemplate": {"spec": {
            "runtimeClassName": "gvisor",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": VERSIONS["BUSYBOX_IMAGE"], "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "exec sleep 3600"]}],
        }}},
    }


def test_controller_runs_local_image_with_extensions(cluster: Cluster, agent_sandbox: None) -> None:
    """The running controller pod is v0.5.6 from the locally built image, with --extensions."""
    pods = cluster.get_json("pods", "-n", "agent-sandbox-system", "-l", "app=agent-sandbox-controller")["items"]
    running = [pod for pod in pods if pod["status"].get("phase") == "Running"]
    assert running, f"no running controller pod: {[pod['status'].get('phase') for pod in pods]}"
    container = running[0]["spec"]["containers"][0]
    assert container["image"] == VERSIONS["CONTROLLER_IMAGE"]
    assert "--extensions" in container["args"]
    statuses = running[0]["status"]["containerStatuses"]
    assert statuses[0]["ready"], statuses


def test_conversion_webhook_answers(cluster: Cluster, namespace: str, agent_sandbox: None) -> None:
    """Reading a stored v1beta1 object as v1alpha1 goes through the controller's conversion webhook."""
    cluster.apply(trivial_template(namespace))
    deadline = time.monotonic() + 120
    while True:
        converted = cluster.kubectl("get", "sandboxtemplates.v1alpha1.extensions.agents.x-k8s.io", "trivial",
                                    "-n", namespace, "-o", "json", check=False)
        if converted.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert converted.returncode == 0, f"conversion failed: {converted.stderr}"
    assert json.loads(converted.stdout)["apiVersion"] == "extensions.agents.x-k8s.io/v1alpha1"


def test_warm_pool_reaches_replica_count(cluster: Cluster, namespace: str, agent_sandbox: None) -> None:
    """A SandboxWarmPool of the trivial template reports all its replicas ready."""
    cluster.apply(trivial_template(namespace), {
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
        "metadata": {"name": "trivial-pool", "namespace": namespace},
        "spec": {"replicas": 2, "sandboxTemplateRef": {"name": "trivial"}},
    })

    def ready_replicas() -> int:
        status = cluster.get_json("sandboxwarmpool", "trivial-pool", "-n", namespace).get("status", {})
        return int(status.get("readyReplicas") or 0) >= 2

    try:
        eventually(ready_replicas, 300, "2 ready warm-pool replicas")
    except AssertionError:
        pods = cluster.kubectl("get", "pods,sandboxes", "-n", namespace, "-o", "wide", check=False).stdout
        logs = cluster.kubectl("logs", "-n", "agent-sandbox-system", "deployment/agent-sandbox-controller",
                               "--tail=60", check=False).stdout
        raise AssertionError(f"warm pool short of replicas:\n{pods}\n{logs}")
