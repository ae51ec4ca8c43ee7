"""Smoke checks without a cluster: the pure verdicts, and a full SmokeRun against fakes whose
sandbox executes the real probe commands locally (so the probes themselves are exercised).
Egress probes only ever target closed loopback ports here."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from automation import smoke
from automation.session import StackTarget
from automation.tunnel import free_local_port

TOKEN = "t" * 32


# ----------------------------------------------------------------------------- pure verdicts

GVISOR_PROBE = {"release": "4.4.0", "dev": ["fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr",
                                             "stdin", "stdout", "tty", "urandom", "zero"],
                "dmesg": "[   0.000000] Starting gVisor...\n", "hypervisor_flag": True}


@pytest.mark.parametrize("runtime,node_kernel,probe,pod_class,status,fragment", [
    ("gvisor", "6.1.0-28-amd64", GVISOR_PROBE, "gvisor", "pass", "dmesg mentions gVisor: True"),
    ("gvisor", "6.1.0-28-amd64", {**GVISOR_PROBE, "dmesg": ""}, "gvisor", "pass", "sandbox kernel '4.4.0'"),
    ("gvisor", "4.4.0", {**GVISOR_PROBE, "dmesg": "usual linux"}, "gvisor", "fail", "dmesg mentions gVisor: False"),
    ("gvisor", "6.1.0", {**GVISOR_PROBE, "dev": [f"d{i}" for i in range(150)]}, "gvisor", "fail", "/dev has 150"),
    ("gvisor", "6.1.0", GVISOR_PROBE, None, "fail", "does not run under the stack's RuntimeClass"),
    ("kata-qemu", "6.1.0", {"release": "6.12.8", "dev": [], "hypervisor_flag": True}, "kata-qemu", "pass",
     "CPU hypervisor flag: True"),
    ("kata-qemu", "6.1.0", {"release": "6.1.0", "dev": [], "hypervisor_flag": True}, "kata-qemu", "fail", "vs node"),
    ("runc", "6.1.0", {"release": "6.1.0", "dev": []}, "runc", "fail", "gives no kernel isolation"),
])
def test_isolation_verdict(runtime, node_kernel, probe, pod_class, status, fragment):
    verdict, detail = smoke.evaluate_isolation(runtime, node_kernel, probe, pod_class)
    assert verdict == status and fragment in detail


def test_egress_verdict():
    assert smoke.evaluate_egress({"metadata": "blocked: TimeoutError: timed out"})[0] == "pass"
    status, detail = smoke.evaluate_egress({"metadata": "blocked: x", "node-kubelet": "connected"})
    assert status == "fail" and "['node-kubelet']" in detail
    assert smoke.evaluate_egress({})[0] == "fail"


@pytest.mark.parametrize("codes,status", [((401, 401, 200), "pass"), ((403, 401, 200), "pass"),
                                          ((200, 401, 200), "fail"), ((401, 200, 200), "fail"),
                                          ((401, 401, 502), "fail")])
def test_router_auth_verdict(codes, status):
    assert smoke.evaluate_router_auth(*codes)[0] == status


# ----------------------------------------------------------------------------- fakes

class LocalSandbox:
    """Executes commands on this machine the way the runtime does (shlex split, no shell)."""

    def __init__(self, root: Path, claim_name: str, sandbox_id: str):
        self.root, self.claim_name, self.sandbox_id = root, claim_name, sandbox_id
        self.commands = self
        self.files = self

    def run(self, command: str, timeout: int = 60):
        argv = shlex.split(command)
        argv[0] = sys.executable if argv[0] == "python" else argv[0]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        return SimpleNamespace(stdout=done.stdout, stderr=done.stderr, exit_code=done.returncode)

    def write(self, path: str, content: bytes):
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def get_pod_name(self) -> str:
        return self.sandbox_id

    def get_pod_ip(self) -> str:
        return "10.244.0.7"


class FakeSdk:
    def __init__(self, sandbox=None, error=None):
        self.sandbox, self.error = sandbox, error

    def create_sandbox(self, warmpool, namespace, sandbox_ready_timeout):
        if self.error:
            raise self.error
        time.sleep(0.01)
        return self.sandbox


class FakeCluster:
    def __init__(self, node_kernel: str, closed_port: int):
        old = SimpleNamespace(metadata=SimpleNamespace(creation_timestamp=dt.datetime.now(dt.timezone.utc)
                                                       - dt.timedelta(minutes=5)))
        self.before = {"pool-abcde": old}
        self.node_kernel, self.closed_port = node_kernel, closed_port

    def pods(self, namespace):
        return dict(self.before)

    def pool_pods(self, namespace):
        return {"pool-fghij": object()}

    def wait_pool_refilled(self, namespace, name, replicas, claimed_pod, timeout):
        self.refill_wait = (replicas, claimed_pod)
        return 0.25

    def pod(self, namespace, name):
        return SimpleNamespace(spec=SimpleNamespace(node_name="node-1", runtime_class_name="gvisor",
                                                    automount_service_account_token=False))

    def node_facts(self, node):
        return {"name": node, "kernel": self.node_kernel, "internal_ip": "127.0.0.1"}

    def api_endpoints(self):
        return {"cluster_ip": "127.0.0.1", "port": self.closed_port, "endpoints": []}


class FakeRouter:
    def __init__(self):
        self.seen = []
        self.posted = []

    def post(self, url, json, timeout, headers):
        self.seen.append(headers)
        self.posted.append(headers)
        return SimpleNamespace(status_code=200 if headers.get("Authorization") == f"Bearer {TOKEN}" else 401)

    def get(self, url, timeout, headers):
        """A router that reaches sandboxes only: every non-sandbox target is refused."""
        self.seen.append(headers)
        return SimpleNamespace(status_code=404)


class LoopbackOnlySmoke(smoke.SmokeRun):
    def egress_targets(self):
        # Never probe real addresses from a test: the metadata target is replaced by a closed loopback port.
        return [(name, "127.0.0.1", port) if name != "metadata" else ("metadata", "127.0.0.1", self.cluster.closed_port)
                for name, _, port in super().egress_targets() if name != "node-kubelet"]


def target(replicas=2):
    return StackTarget("gvisor", "agent-sandbox-demo", "python-sandbox-warmpool", replicas, "gvisor", TOKEN)


def test_full_run_against_fakes(tmp_path):
    sandbox = LocalSandbox(tmp_path, "sandbox-claim-1", "pool-abcde")
    router = FakeRouter()
    cluster = FakeCluster(node_kernel=os.uname().release, closed_port=free_local_port())
    run = LoopbackOnlySmoke(target(), cluster, FakeSdk(sandbox), "http://127.0.0.1:1", log=lambda m: None, http=router)
    report = run.run()
    statuses = {c.id: c.status for c in report.checks}
    # This machine is not a sandbox: same kernel as the "node" and a full /dev, so isolation fails.
    assert statuses == {1: "pass", 2: "pass", 3: "pass", 4: "fail", 5: "pass", 6: "pass", 7: "pass"}, report.checks
    assert report.passed is False
    assert report.claim["claim"] == "sandbox-claim-1" and report.claim["sandbox"] == "pool-abcde"
    isolation = report.checks[3]
    assert isolation.data["probe"]["release"] == os.uname().release
    egress = report.checks[4].data["outcome"]
    assert egress and all(v.startswith("blocked") for v in egress.values())
    assert (tmp_path / "smoke" / "nested" / "dir" / "data.txt").is_file()
    assert cluster.refill_wait == (2, "pool-abcde")  # the refill excludes the claimed pod
    assert [h.get("Authorization") for h in router.posted] == [None, "Bearer not-the-token", f"Bearer {TOKEN}"]
    assert all(h["X-Sandbox-ID"] == "pool-abcde" and h["X-Sandbox-Pod-IP"] == "10.244.0.7" for h in router.posted)
    # check 7 asked the router, with the token, for four targets that are not sandboxes
    probes = [h for h in router.seen if h not in router.posted]
    assert len(probes) == 4 and all(h["Authorization"] == f"Bearer {TOKEN}" for h in probes)


def test_cold_claim_fails_the_warm_pool_check(tmp_path):
    sandbox = LocalSandbox(tmp_path, "sandbox-claim-2", "sandbox-claim-2")  # cold: sandbox named after the claim
    run = smoke.SmokeRun(target(), FakeCluster("x", free_local_port()), FakeSdk(sandbox), "http://127.0.0.1:1",
                         log=lambda m: None, http=FakeRouter())
    run._claim()
    result = smoke.run_check(3, "warm", run._needs_sandbox(run.check_warm_pool))
    assert result.status == "fail" and "existed before the claim: False" in result.detail


def test_pool_of_zero_skips_the_warm_pool_check(tmp_path):
    sandbox = LocalSandbox(tmp_path, "sandbox-claim-3", "sandbox-claim-3")
    run = smoke.SmokeRun(target(replicas=0), FakeCluster("x", free_local_port()), FakeSdk(sandbox),
                         "http://127.0.0.1:1", log=lambda m: None, http=FakeRouter())
    run._claim()
    result = smoke.run_check(3, "warm", run.check_warm_pool)
    assert result.status == "skip" and "warmPoolReplicas is 0" in result.detail


def test_a_failed_claim_fails_every_check_with_its_reason(tmp_path):
    error = RuntimeError("SandboxClaim sandbox-claim-x: WarmPoolNotFound")
    run = smoke.SmokeRun(target(), FakeCluster("x", 1), FakeSdk(error=error), "http://127.0.0.1:1",
                         log=lambda m: None, http=FakeRouter())
    report = run.run()
    assert [c.status for c in report.checks] == ["fail"] * 7
    assert all("WarmPoolNotFound" in c.detail for c in report.checks)
    assert "WarmPoolNotFound" in report.claim["error"]


def test_router_probes_cover_api_dns_other_namespace_and_port() -> None:
    probes = dict(smoke.router_probes("sb-1", "agent-sandbox-demo", 8888))
    assert probes["kubernetes API service"] == {"X-Sandbox-ID": "kubernetes", "X-Sandbox-Namespace": "default",
                                                "X-Sandbox-Port": "443"}
    assert probes["kube-dns service"]["X-Sandbox-Namespace"] == "kube-system"
    assert probes["sandbox on a non-sandbox port"] == {"X-Sandbox-ID": "sb-1", "X-Sandbox-Namespace": "agent-sandbox-demo",
                                                       "X-Sandbox-Port": "10250"}


def test_router_probe_verdicts() -> None:
    assert smoke.evaluate_router_probes({"a": 404, "b": 502})[0] == "pass"
    status, detail = smoke.evaluate_router_probes({"kubernetes API service": 200, "b": 403})
    assert status == "fail" and "proxied to ['kubernetes API service']" in detail
    assert smoke.evaluate_router_probes({})[0] == "fail"


def test_egress_failure_says_policy_is_not_enforced() -> None:
    status, detail = smoke.evaluate_egress({"metadata": "connected", "api": "refused"})
    assert status == "fail" and "NETWORK POLICY IS NOT ENFORCED" in detail
