"""Kubernetes access of the driver to the stack's cluster (its kubeconfig and context): the
``kubectl`` flags, the API client (kubernetes Python client), pool status, pod and node facts,
and what is left after ``down``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from automation.errors import CapacityError, MissingPrerequisite
from agent_sandbox_pulumi.sandbox_iac import constants, versions
from agent_sandbox_pulumi.sandbox_iac.autoscaling import WARM_POOL_LABEL
from agent_sandbox_pulumi.sandbox_iac.config import StackConfig

POOL_PLURAL = "sandboxwarmpools"
POOL_GROUP, POOL_VERSION = versions.EXTENSIONS_API_VERSION.split("/")


UNSCHEDULABLE_GRACE_SECONDS = 20
SETTLE_PAD_SECONDS = 1.0
"""After a settled namespace, this long more: the just-Ready sandbox's status writes finish."""


def unschedulable(pods: dict[str, Any]) -> list[str]:
    """``"<pod>: <scheduler message>"`` for pods the scheduler reports as Unschedulable."""
    stuck = []
    for name, pod in pods.items():
        for condition in (pod.status.conditions if pod.status else None) or []:
            if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
                stuck.append(f"{name}: {condition.message}")
    return stuck


def pod_is_ready(pod: Any) -> bool:
    """Whether a pod (kubernetes client model) has condition Ready=True."""
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _kubeconfig(config: StackConfig) -> Optional[str]:
    return str(Path(config.kubeconfig).expanduser()) if config.kubeconfig else None


def api_client(config: StackConfig) -> Any:
    """An ApiClient for the stack's cluster (its kubeconfig/context, else the defaults)."""
    from kubernetes import config as kube_config

    return kube_config.new_client_from_config(config_file=_kubeconfig(config), context=config.kube_context or None)


def kube_args(config: StackConfig) -> list[str]:
    """``kubectl`` flags selecting the stack's cluster (``--kubeconfig``/``--context``)."""
    kubeconfig = _kubeconfig(config)
    return [*(["--kubeconfig", kubeconfig] if kubeconfig else []),
            *(["--context", config.kube_context] if config.kube_context else [])]


KEDA_CRD = "scaledobjects.keda.sh"


def require_autoscaler(config: StackConfig, has_crd: Any) -> None:
    """``warmPoolAutoscaling: keda`` without ``installKeda`` needs KEDA in the cluster already:
    say so before the engine starts, rather than as a failed ScaledObject deep in ``up``."""
    if config.autoscaling is None or config.install_keda or has_crd(KEDA_CRD):
        return
    raise MissingPrerequisite(
        f"warmPoolAutoscaling 'keda' needs KEDA in the cluster, and CRD {KEDA_CRD} is not there "
        f"(fix: pulumi config set {constants.PROJECT_NAME}:installKeda true -- the stack installs KEDA "
        f"{versions.KEDA_VERSION} -- or install KEDA yourself, or set warmPoolAutoscaling off)")


@dataclass
class Cluster:
    """Typed access to the few objects the driver reads or patches."""

    client: Any

    @property
    def core(self) -> Any:
        from kubernetes import client
        return client.CoreV1Api(self.client)

    @property
    def custom(self) -> Any:
        from kubernetes import client
        return client.CustomObjectsApi(self.client)

    def has_crd(self, name: str) -> bool:
        from kubernetes import client
        from kubernetes.client.rest import ApiException
        try:
            client.ApiextensionsV1Api(self.client).read_custom_resource_definition(name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    # --- warm pool -------------------------------------------------------------------------
    def warm_pool(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(POOL_GROUP, POOL_VERSION, namespace, POOL_PLURAL, name)

    def set_pool_replicas(self, namespace: str, name: str, replicas: int) -> None:
        self.custom.patch_namespaced_custom_object(POOL_GROUP, POOL_VERSION, namespace, POOL_PLURAL, name,
                                                   {"spec": {"replicas": replicas}})

    def wait_pool_ready(self, namespace: str, name: str, replicas: int, timeout: float = 600) -> float:
        """Wait until the pool reports ``replicas`` ready members (and, for 0, no warm pods
        left); returns the seconds waited, raises TimeoutError with the last status."""
        started = time.monotonic()
        status: dict[str, Any] = {}
        unschedulable_since: Optional[float] = None
        while time.monotonic() - started < timeout:
            status = self.warm_pool(namespace, name).get("status") or {}
            ready = int(status.get("readyReplicas") or 0)
            if replicas == 0:
                if not self.pool_pods(namespace) and ready == 0:
                    return time.monotonic() - started
            elif ready >= replicas:
                return time.monotonic() - started
            else:
                stuck = unschedulable(self.pool_pods(namespace))
                unschedulable_since = (unschedulable_since or time.monotonic()) if stuck else None
                if stuck and time.monotonic() - unschedulable_since >= UNSCHEDULABLE_GRACE_SECONDS:
                    raise CapacityError(
                        f"SandboxWarmPool {namespace}/{name} cannot reach {replicas} ready replicas: "
                        f"{len(stuck)} pod(s) unschedulable ({stuck[0]}). Ask for fewer sandboxes "
                        "(bench -n, warmPoolReplicas) or give the cluster more capacity.")
            time.sleep(1)
        raise TimeoutError(f"SandboxWarmPool {namespace}/{name} did not reach {replicas} ready replicas within "
                           f"{timeout:.0f}s (last status {status})")

    def wait_settled(self, namespace: str, name: str, replicas: int, timeout: float = 300,
                     pad: float = SETTLE_PAD_SECONDS) -> float:
        """Wait until the namespace is quiet: the pool reports ``replicas`` ready and holds exactly
        ``replicas`` pods, and no pod of the namespace is starting or terminating (sandboxes in use,
        Ready, are left alone); then ``pad`` seconds more for the last status writes. Returns the
        seconds waited. A claim measured after this meets a node that is not booting or tearing
        down a sandbox (on a small node that work, not the claim's own path, is what a claim
        waits for)."""
        started = time.monotonic()
        busy: list[str] = []
        while time.monotonic() - started < timeout:
            pods = self.pods(namespace)  # one list: the pool's members are those with its label
            pool = [pod for pod in pods.values() if WARM_POOL_LABEL in (pod.metadata.labels or {})]
            ready = int((self.warm_pool(namespace, name).get("status") or {}).get("readyReplicas") or 0)
            busy = sorted(pod_name for pod_name, pod in pods.items()
                          if not pod_is_ready(pod) or pod.metadata.deletion_timestamp is not None)
            if len(pool) == replicas and ready >= replicas and not busy:
                time.sleep(pad)
                return time.monotonic() - started
            time.sleep(0.25)
        raise TimeoutError(f"namespace {namespace} did not settle to {replicas} ready pool sandbox(es) within "
                           f"{timeout:.0f}s (starting or terminating: {busy})")

    def wait_pool_refilled(self, namespace: str, name: str, replicas: int, claimed_pod: str,
                           timeout: float = 180) -> float:
        """Wait until, besides ``claimed_pod``, ``replicas`` Ready pods carry the pool's label and
        the pool reports them ready (a refill really happened); returns the seconds waited."""
        started = time.monotonic()
        ready_others: list[str] = []
        while time.monotonic() - started < timeout:
            ready_others = [pod_name for pod_name, pod in self.pool_pods(namespace).items()
                            if pod_name != claimed_pod and pod_is_ready(pod)]
            reported = int((self.warm_pool(namespace, name).get("status") or {}).get("readyReplicas") or 0)
            if len(ready_others) >= replicas and reported >= replicas:
                return time.monotonic() - started
            time.sleep(1)
        raise TimeoutError(f"SandboxWarmPool {namespace}/{name} was not refilled to {replicas} ready pods within "
                           f"{timeout:.0f}s (ready besides the claimed pod: {ready_others})")

    # --- pods and nodes --------------------------------------------------------------------
    def pods(self, namespace: str, selector: Optional[str] = None) -> dict[str, Any]:
        """{pod name: pod} of a namespace."""
        items = self.core.list_namespaced_pod(namespace, label_selector=selector or None).items
        return {pod.metadata.name: pod for pod in items}

    def pool_pods(self, namespace: str) -> dict[str, Any]:
        """Pods still owned by a warm pool (not yet claimed)."""
        return self.pods(namespace, WARM_POOL_LABEL)

    def pod(self, namespace: str, name: str) -> Any:
        return self.core.read_namespaced_pod(name, namespace)

    def node_facts(self, node_name: str) -> dict[str, Any]:
        """Kernel release and addresses of a node."""
        node = self.core.read_node(node_name)
        addresses = {a.type: a.address for a in (node.status.addresses or [])}
        return {"name": node_name, "kernel": node.status.node_info.kernel_version,
                "internal_ip": addresses.get("InternalIP"), "addresses": addresses}

    def api_endpoints(self) -> dict[str, Any]:
        """The ``kubernetes`` Service ClusterIP and the API server endpoint addresses."""
        service = self.core.read_namespaced_service("kubernetes", "default")
        endpoints: list[tuple[str, int]] = []
        try:
            subsets = self.core.read_namespaced_endpoints("kubernetes", "default").subsets or []
            for subset in subsets:
                port = next((p.port for p in subset.ports or []), 443)
                endpoints += [(a.ip, port) for a in subset.addresses or []]
        except Exception:  # noqa: BLE001 - endpoints are extra evidence only
            pass
        return {"cluster_ip": service.spec.cluster_ip, "port": service.spec.ports[0].port, "endpoints": endpoints}

    # --- leftovers after down --------------------------------------------------------------
    def leftovers(self, config: StackConfig) -> list[str]:
        """Objects of ours still present: namespaces, agent-sandbox CRDs, the RuntimeClass."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        found = []
        for namespace in (config.sandbox_namespace, constants.CONTROLLER_NAMESPACE):
            try:
                phase = self.core.read_namespace(namespace).status.phase
                found.append(f"namespace {namespace} ({phase})")
            except ApiException as error:
                if error.status != 404:
                    raise
        crds = client.ApiextensionsV1Api(self.client).list_custom_resource_definition().items
        found += [f"CRD {c.metadata.name}" for c in crds if c.metadata.name.endswith(versions.SANDBOX_API_GROUP)]
        if config.manage_runtime_class or config.runtime.startswith("kata"):
            try:
                client.NodeV1Api(self.client).read_runtime_class(config.runtime)
                found.append(f"RuntimeClass {config.runtime}")
            except ApiException as error:
                if error.status != 404:
                    raise
        return found

    def wait_gone(self, config: StackConfig, timeout: float = 180) -> list[str]:
        """Poll ``leftovers`` until empty or ``timeout``; returns what is still there."""
        deadline = time.monotonic() + timeout
        remaining = self.leftovers(config)
        while remaining and time.monotonic() < deadline:
            time.sleep(3)
            remaining = self.leftovers(config)
        return remaining
