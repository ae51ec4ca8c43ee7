"""Shared pieces of the e2e tests: the toolchain cache, the pinned versions, a kubectl-bound
cluster handle and `make` as this test session's cluster holder."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("CACHE_DIR", "/var/cache/agent-sandbox-iac"))
VERSIONS_FILE = REPO_ROOT / "e2e" / "toolchain" / "cluster-versions.sh"
CONTROLLER_MANIFEST = Path(
    os.environ.get(
        "AGENT_SANDBOX_MANIFEST",
        str(REPO_ROOT.parent / "shared" / "agent-sandbox" / "v0.5.6" / "sandbox-with-extensions.yaml"),
    )
)
CLUSTER_UP_TIMEOUT_SECONDS = 900
POD_READY_TIMEOUT_SECONDS = 240

pytestmark = pytest.mark.timeout(1800)


def load_versions() -> dict[str, str]:
    """The pinned versions and image names, read from the toolchain's versions file."""
    names = [
        "KUBERNETES_VERSION", "ETCD_VERSION", "COREDNS_VERSION", "GVISOR_VERSION",
        "AGENT_SANDBOX_VERSION", "KUBE_ROUTER_VERSION", "CONTROLLER_IMAGE", "BUSYBOX_IMAGE",
    ]
    script = f". {VERSIONS_FILE}; " + "; ".join(f'echo "{name}=${name}"' for name in names)
    output = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in output.splitlines())


VERSIONS = load_versions()


def missing_artefacts() -> list[str]:
    """Toolchain artefacts cluster-up needs that the cache does not hold."""
    k8s = CACHE_DIR / "kubernetes" / VERSIONS["KUBERNETES_VERSION"] / "bin"
    gvisor = CACHE_DIR / "gvisor" / VERSIONS["GVISOR_VERSION"] / "bin"
    images = CACHE_DIR / "images" / VERSIONS["AGENT_SANDBOX_VERSION"] / "bin"
    required = [k8s / name for name in (
        "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")]
    required += [
        CACHE_DIR / "etcd" / VERSIONS["ETCD_VERSION"] / "bin" / "etcd",
        gvisor / "runsc",
        gvisor / "containerd-shim-runsc-v1",
        CACHE_DIR / "coredns" / VERSIONS["COREDNS_VERSION"] / "bin" / "coredns",
        CACHE_DIR / "kube-router" / VERSIONS["KUBE_ROUTER_VERSION"] / "bin" / "kube-router",
        images / "pause.tar",
        images / "agent-sandbox-controller.tar",
        images / "busybox.tar",
    ]
    return [str(path) for path in required if not path.exists()]


def skip_loudly(reason: str) -> None:
    """Print the reason where CI logs show it, then skip."""
    print(f"\n*** SKIPPING cluster e2e checks: {reason} ***\n", flush=True)
    pytest.skip(reason)


@dataclass
class Cluster:
    """A running e2e cluster and a kubectl bound to its kubeconfig."""

    kubeconfig: str
    kubectl_path: str

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster; on failure the error names the command and its output."""
        command = [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def apply(self, *documents: dict[str, Any], attempts: int = 3) -> None:
        """Server-side apply the given objects, retrying transient API errors (e.g. a CRD that is
        not yet established, or a webhook whose endpoints are still starting)."""
        manifest = yaml.safe_dump_all(documents)
        for attempt in range(1, attempts + 1):
            result = self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest,
                                  check=attempt == attempts)
            if result.returncode == 0:
                return
            print(f"kubectl apply attempt {attempt} failed, retrying: {result.stderr.strip()[-500:]}", flush=True)
            time.sleep(5)

    def get_json(self, *args: str) -> dict[str, Any]:
        """kubectl get ... -o json, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait_ready(self, namespace: str, *pods: str, timeout: int = POD_READY_TIMEOUT_SECONDS) -> None:
        """Wait until every named pod is Ready, showing the pods' state if one is not."""
        result = self.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"--timeout={timeout}s",
                              *[f"pod/{pod}" for pod in pods], check=False, timeout=timeout + 30)
        if result.returncode != 0:
            described = self.kubectl("describe", "pods", "-n", namespace, *pods, check=False).stdout
            raise AssertionError(f"pods {pods} not Ready in {timeout}s:\n{result.stderr}\n{described[-4000:]}")

    def exec(self, namespace: str, pod: str, *command: str, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command in a pod's only container."""
        return self.kubectl("exec", "-n", namespace, pod, "--", *command, check=check, timeout=timeout)


# This session's hold on the cluster: cluster-down from here leaves the cluster up while another
# test session (another shell on this machine) still holds it.
HOLDER_ENV = {"E2E_CLUSTER_HOLDER": f"pytest-{os.getpid()}-{uuid.uuid4().hex[:6]}",
              "E2E_CLUSTER_HOLDER_PID": str(os.getpid())}


def run_make(target: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """Run a make target of this repository as this session's holder, echoing its output."""
    result = subprocess.run(["make", "--no-print-directory", target], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **HOLDER_ENV})
    print(result.stdout[-6000:], result.stderr[-6000:], sep="\n", flush=True)
    return result
