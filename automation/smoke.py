"""``smoke STACK``: the six end-to-end checks, driven through the official SDK
(``k8s-agent-sandbox``) over a managed tunnel to the router, each with a verdict, timing and
the evidence behind it.

  1. a Python command: exact stdout and exit codes;
  2. write then read a file, flat and nested;
  3. warm pool: the claim got a pod that existed before the claim, and the pool refills;
  4. isolation: gVisor's kernel (or Kata's VM kernel with a hypervisor CPU flag), minimal /dev;
  5. egress to the Kubernetes API, the node and the metadata address is refused;
  6. no service-account token in the sandbox; the router refuses requests without the token.

The verdict logic (``evaluate_*``) is pure so it is unit-tested without a cluster.
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from automation.kube import Cluster
from automation.report import CheckResult, SmokeReport, run_check
from automation.session import StackTarget, sdk_session
from agent_sandbox_pulumi.sandbox_iac import constants

DEV_ENTRIES_MAX = 30
EGRESS_TIMEOUT_SECONDS = 3
POOL_REFILL_TIMEOUT = 180
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

ISOLATION_PROBE = r"""
import json, os, subprocess
def dmesg():
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10)
        return (done.stdout or done.stderr)[:1500]
    except Exception as error:
        return "dmesg unavailable: %s" % error
cpuinfo = open("/proc/cpuinfo").read()
flags = [line for line in cpuinfo.splitlines() if line.startswith("flags")]
print(json.dumps({"release": os.uname().release, "version": os.uname().version,
                  "dev": sorted(os.listdir("/dev")), "dmesg": dmesg(),
                  "hypervisor_flag": any("hypervisor" in line.split() for line in flags)}))
"""

EGRESS_PROBE = r"""
import json, socket, sys
results = {}
for name, host, port in json.loads(sys.argv[1]):
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(float(sys.argv[2]))
    try:
        sock.connect((host, int(port)))
        results[name] = "connected"
    except Exception as error:
        results[name] = "blocked: %s: %s" % (type(error).__name__, error)
    finally:
        sock.close()
print(json.dumps(results))
"""

TOKEN_PROBE = r"""
import json, os, sys
base = sys.argv[1]
print(json.dumps({"dir": os.path.exists(base), "token": os.path.exists(os.path.join(base, "token")),
                  "env": sorted(k for k in os.environ if k.startswith("KUBERNETES_"))}))
"""


# ----------------------------------------------------------------------------- pure verdicts

def evaluate_isolation(runtime_class: str, node_kernel: str, probe: Mapping[str, Any],
                       pod_runtime_class: Optional[str]) -> tuple[str, str]:
    """(status, detail) of check 4 from the in-sandbox probe and the node's kernel."""
    release = str(probe.get("release", ""))
    dev_count = len(probe.get("dev") or [])
    differs = bool(release) and release != node_kernel
    facts = (f"sandbox kernel {release!r} vs node {node_kernel!r}, /dev has {dev_count} entries, "
             f"pod runtimeClassName {pod_runtime_class!r}")
    if pod_runtime_class != runtime_class:
        return "fail", f"the pod does not run under the stack's RuntimeClass {runtime_class!r}; {facts}"
    if runtime_class == "gvisor":
        gvisor_dmesg = "gvisor" in str(probe.get("dmesg", "")).lower()
        ok = (differs or gvisor_dmesg) and dev_count <= DEV_ENTRIES_MAX
        return ("pass" if ok else "fail"), f"{facts}, dmesg mentions gVisor: {gvisor_dmesg}"
    if runtime_class.startswith("kata"):
        hypervisor = bool(probe.get("hypervisor_flag"))
        ok = differs and hypervisor
        return ("pass" if ok else "fail"), f"{facts}, CPU hypervisor flag: {hypervisor}"
    return "fail", f"runtime {runtime_class!r} gives no kernel isolation; {facts}"


def evaluate_egress(results: Mapping[str, str]) -> tuple[str, str]:
    """(status, detail) of check 5: every probed destination must be unreachable."""
    if not results:
        return "fail", "no egress destination was probed"
    connected = sorted(name for name, outcome in results.items() if outcome == "connected")
    if connected:
        return "fail", (f"the sandbox reached {connected}: NETWORK POLICY IS NOT ENFORCED on this cluster "
                        "(its CNI ignores NetworkPolicy, or the stack's policy is missing); use a CNI that "
                        "enforces it (KIND: the default; minikube: --cni=calico)")
    return "pass", f"refused/timed out: {sorted(results)}"


def router_probes(sandbox_id: str, namespace: str, sandbox_port: int) -> list[tuple[str, dict[str, str]]]:
    """(name, routing headers) of targets the router must refuse: it reaches sandboxes only."""
    return [
        ("kubernetes API service", {"X-Sandbox-ID": "kubernetes", "X-Sandbox-Namespace": "default",
                                    "X-Sandbox-Port": "443"}),
        ("kube-dns service", {"X-Sandbox-ID": "kube-dns", "X-Sandbox-Namespace": "kube-system",
                              "X-Sandbox-Port": "53"}),
        ("router's own namespace", {"X-Sandbox-ID": constants.ROUTER_SERVICE_NAME,
                                    "X-Sandbox-Namespace": constants.ROUTER_NAMESPACE, "X-Sandbox-Port": "8080"}),
        ("sandbox on a non-sandbox port", {"X-Sandbox-ID": sandbox_id, "X-Sandbox-Namespace": namespace,
                                           "X-Sandbox-Port": "10250" if sandbox_port != 10250 else "22"}),
    ]


def evaluate_router_probes(statuses: Mapping[str, int]) -> tuple[str, str]:
    """(status, detail) of check 7: no non-sandbox target gets a 2xx/3xx through the router."""
    if not statuses:
        return "fail", "no router probe ran"
    reached = sorted(name for name, code in statuses.items() if code < 400)
    detail = ", ".join(f"{name} -> {code}" for name, code in sorted(statuses.items()))
    return ("fail", f"the router proxied to {reached}: {detail}") if reached else ("pass", detail)


def evaluate_router_auth(no_token: int, wrong_token: int, right_token: int) -> tuple[str, str]:
    """(status, detail) of the router half of check 6 from three HTTP status codes."""
    refused = {401, 403}
    detail = f"no token -> {no_token}, wrong token -> {wrong_token}, right token -> {right_token}"
    ok = no_token in refused and wrong_token in refused and 200 <= right_token < 300
    return ("pass" if ok else "fail"), detail


# ----------------------------------------------------------------------------- the run

def python_command(code: str, *args: str) -> str:
    """A command line running ``python -c code args`` (the runtime splits it with shlex)."""
    return " ".join(["python", "-c", shlex.quote(code), *(shlex.quote(a) for a in args)])


def _json_run(sandbox: Any, command: str, timeout: int = 60) -> dict[str, Any]:
    result = sandbox.commands.run(command, timeout=timeout)
    if result.exit_code != 0:
        raise RuntimeError(f"probe exited {result.exit_code}: {result.stderr.strip()[:500]}")
    return json.loads(result.stdout)


def _pod_created_before(pod: Any, moment: float) -> bool:
    created = pod.metadata.creation_timestamp
    return created is not None and created.timestamp() < moment


class SmokeRun:
    """One smoke session: a claim from the warm pool and the six checks against it."""

    def __init__(self, target: StackTarget, cluster: Cluster, sdk_client: Any, router_url: str,
                 log: Callable[[str], None] = print, http: Any = None,
                 sandbox_port: int = constants.SANDBOX_PORT):
        self.target = target
        self.sandbox_port = sandbox_port
        self.cluster = cluster
        self.client = sdk_client
        self.router_url = router_url
        self.log = log
        if http is None:
            import requests
            http = requests
        self.http = http
        self.sandbox: Any = None
        self.claim: dict[str, Any] = {}
        self.pods_before: dict[str, Any] = {}

    def run(self) -> SmokeReport:
        report = SmokeReport(stack=self.target.stack, runtime=self.target.runtime_class, started_at=time.time())
        try:
            self._claim()
        except Exception as error:  # noqa: BLE001 - every check fails with the claim's reason
            self.claim["error"] = f"{type(error).__name__}: {error}"
            self.log(f"claim failed: {self.claim['error']}")
        checks: Sequence[tuple[int, str, Callable[[CheckResult], None]]] = (
            (1, "python command: exact stdout and exit codes", self.check_command),
            (2, "write then read files (flat and nested)", self.check_files),
            (3, "warm pool: pre-warmed pod claimed, pool refilled", self.check_warm_pool),
            (4, "isolation: sandbox kernel differs from the node", self.check_isolation),
            (5, "egress to Kubernetes API, node and metadata refused", self.check_egress),
            (6, "no service-account token; router refuses requests without the token", self.check_tokens),
            (7, "router refuses the API server, kube-dns, another namespace and a non-sandbox port",
             self.check_router_targets),
        )
        for check_id, name, body in checks:
            result = run_check(check_id, name, self._needs_sandbox(body))
            self.log(f"  [{result.status.upper()}] {check_id}. {name} ({result.seconds:.2f}s) {result.detail}")
            report.checks.append(result)
        report.claim = dict(self.claim)
        report.finished_at = time.time()
        return report

    def _needs_sandbox(self, body: Callable[[CheckResult], None]) -> Callable[[CheckResult], None]:
        def guarded(result: CheckResult) -> None:
            if self.sandbox is None:
                result.status = "fail"
                result.detail = f"no sandbox: {self.claim.get('error', 'claim did not complete')}"
                return
            body(result)
        return guarded

    def _claim(self) -> None:
        target = self.target
        self.pods_before = self.cluster.pods(target.namespace)
        requested = time.time()
        started = time.monotonic()
        self.sandbox = self.client.create_sandbox(target.warm_pool, namespace=target.namespace,
                                                  sandbox_ready_timeout=300)
        self.claim = {
            "claim": self.sandbox.claim_name, "sandbox": self.sandbox.sandbox_id,
            "pod": self.sandbox.get_pod_name(), "requested_at": requested,
            "claim_ready_seconds": round(time.monotonic() - started, 3),
        }
        self.log(f"claimed {self.claim['claim']} -> sandbox {self.claim['sandbox']} "
                 f"in {self.claim['claim_ready_seconds']:.2f}s")

    # --- checks ------------------------------------------------------------------------------
    def check_command(self, result: CheckResult) -> None:
        ok_run = self.sandbox.commands.run(python_command("import sys; print('smoke', 6 * 7); sys.exit(0)"))
        fail_run = self.sandbox.commands.run(python_command("import sys; print('bye'); sys.exit(3)"))
        result.data = {"stdout": ok_run.stdout, "exit_code": ok_run.exit_code,
                       "failing_stdout": fail_run.stdout, "failing_exit_code": fail_run.exit_code}
        ok = (ok_run.stdout == "smoke 42\n" and ok_run.exit_code == 0
              and fail_run.stdout == "bye\n" and fail_run.exit_code == 3)
        result.status = "pass" if ok else "fail"
        result.detail = (f"stdout {ok_run.stdout!r} exit {ok_run.exit_code}; "
                         f"failing command exit {fail_run.exit_code}")

    def check_files(self, result: CheckResult) -> None:
        stamp = f"smoke {time.time():.6f}\n"
        observed = {}
        for path in ("smoke.txt", "smoke/nested/dir/data.txt"):
            self.sandbox.files.write(path, stamp.encode())
            observed[path] = self.sandbox.files.read(path)
        result.data = {path: content.decode(errors="replace") for path, content in observed.items()}
        bad = [path for path, content in observed.items() if content != stamp.encode()]
        result.status = "fail" if bad else "pass"
        result.detail = f"content differs for {bad}" if bad else f"read back {sorted(observed)}"

    def check_warm_pool(self, result: CheckResult) -> None:
        target = self.target
        if target.warm_pool_replicas == 0:
            result.status, result.detail = "skip", "warmPoolReplicas is 0: every claim is a cold start"
            return
        pod_name = self.claim["pod"]
        existed = pod_name in self.pods_before and _pod_created_before(self.pods_before[pod_name],
                                                                      self.claim["requested_at"])
        adopted = self.claim["sandbox"] != self.claim["claim"]
        waited = self.cluster.wait_pool_refilled(target.namespace, target.warm_pool, target.warm_pool_replicas,
                                                 claimed_pod=pod_name, timeout=POOL_REFILL_TIMEOUT)
        result.data = {"pod": pod_name, "pod_existed_before_claim": existed, "sandbox_adopted": adopted,
                       "pool_refill_seconds": round(waited, 3), "replicas": target.warm_pool_replicas}
        ok = existed and adopted
        result.status = "pass" if ok else "fail"
        result.detail = (f"pod {pod_name} existed before the claim: {existed}; sandbox adopted from the pool: "
                         f"{adopted}; pool back at {target.warm_pool_replicas} ready after {waited:.1f}s")

    def check_isolation(self, result: CheckResult) -> None:
        pod = self.cluster.pod(self.target.namespace, self.claim["pod"])
        node = self.cluster.node_facts(pod.spec.node_name)
        probe = _json_run(self.sandbox, python_command(ISOLATION_PROBE))
        result.status, result.detail = evaluate_isolation(self.target.runtime_class, node["kernel"], probe,
                                                          pod.spec.runtime_class_name)
        result.data = {"node": node, "probe": probe}

    def egress_targets(self) -> list[tuple[str, str, int]]:
        """(name, host, port) the sandbox must not reach."""
        api = self.cluster.api_endpoints()
        pod = self.cluster.pod(self.target.namespace, self.claim["pod"])
        node = self.cluster.node_facts(pod.spec.node_name)
        targets = [("kubernetes-api-service", api["cluster_ip"], int(api["port"]))]
        targets += [(f"kubernetes-api-endpoint-{ip}", ip, int(port)) for ip, port in api["endpoints"][:2]]
        if node.get("internal_ip"):
            targets.append(("node-kubelet", node["internal_ip"], 10250))
        targets.append(("metadata", constants.METADATA_ADDRESS, 80))
        return targets

    def check_egress(self, result: CheckResult) -> None:
        targets = self.egress_targets()
        outcome = _json_run(self.sandbox, python_command(EGRESS_PROBE, json.dumps(targets), str(EGRESS_TIMEOUT_SECONDS)),
                            timeout=EGRESS_TIMEOUT_SECONDS * len(targets) + 30)
        result.status, result.detail = evaluate_egress(outcome)
        result.data = {"targets": targets, "outcome": outcome}

    def check_tokens(self, result: CheckResult) -> None:
        probe = _json_run(self.sandbox, python_command(TOKEN_PROBE, SERVICE_ACCOUNT_DIR))
        pod = self.cluster.pod(self.target.namespace, self.claim["pod"])
        # The same routing headers the SDK sends (its pod-IP hint included), so only the
        # Authorization header differs between the three requests.
        routing = {"X-Sandbox-ID": self.claim["sandbox"], "X-Sandbox-Namespace": self.target.namespace,
                   "X-Sandbox-Port": str(self.sandbox_port)}
        pod_ip = self.sandbox.get_pod_ip()
        if pod_ip:
            routing["X-Sandbox-Pod-IP"] = pod_ip
        statuses = {}
        for label, headers in (("no_token", {}), ("wrong_token", {"Authorization": "Bearer not-the-token"}),
                               ("right_token", {"Authorization": f"Bearer {self.target.router_token}"})):
            response = self.http.post(
                f"{self.router_url}/execute", json={"command": "true"}, timeout=30,
                headers={**headers, **routing})
            statuses[label] = response.status_code
        router_status, router_detail = evaluate_router_auth(statuses["no_token"], statuses["wrong_token"],
                                                            statuses["right_token"])
        no_token = not probe["token"] and pod.spec.automount_service_account_token is False
        result.data = {"probe": probe, "automountServiceAccountToken": pod.spec.automount_service_account_token,
                       "router_status_codes": statuses}
        result.status = "pass" if no_token and router_status == "pass" else "fail"
        result.detail = f"token file present: {probe['token']}; router: {router_detail}"


    def check_router_targets(self, result: CheckResult) -> None:
        auth = {"Authorization": f"Bearer {self.target.router_token}"}
        statuses = {}
        for name, routing in router_probes(self.claim["sandbox"], self.target.namespace, self.sandbox_port):
            response = self.http.get(f"{self.router_url}/", timeout=30, headers={**auth, **routing})
            statuses[name] = response.status_code
        result.status, result.detail = evaluate_router_probes(statuses)
        result.data = {"status_codes": statuses}


def run_smoke(target: StackTarget, cluster: Cluster, kube_args: Sequence[str],
              log: Callable[[str], None] = print) -> SmokeReport:
    """Connect the official SDK to the router (tunnel, bearer token), claim once and run the
    checks; the claim and the tunnel are removed afterwards, whatever happens."""
    with sdk_session(target, cluster, kube_args, log=log) as session:
        return SmokeRun(target, cluster, session.client, session.router_url, log=log).run()
