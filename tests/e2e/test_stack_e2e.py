"""The whole product on the real engine and the real single-node gVisor cluster.

Through the project's own driver (``python -m automation``) on the ``local`` stack profile
(Pulumi.local.yaml): preview with the policy pack (and an insecure config blocked), ``up`` from
empty, ``smoke``, the official SDK on a warm sandbox and 20 concurrent claims, ``bench``, a second
``up`` with no changes, a warm-pool resize that converges, failure paths, and ``down`` leaving
nothing of ours behind. Timings go to out/e2e/e2e.json and docs/results.md.

Runs only where the toolchain cache is complete; otherwise skips with a loud printed reason.
"""

from __future__ import annotations

import ast
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e.cluster_harness import CACHE_DIR, Cluster, skip_loudly

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK = "local"
OUT_DIR = REPO_ROOT / "out"
E2E_REPORT = OUT_DIR / "e2e" / "e2e.json"
PULUMI_BIN = CACHE_DIR / "pulumi" / "3.259.0" / "bin" / "pulumi"
KUBERNETES_PLUGIN = CACHE_DIR / "pulumi" / "home" / "plugins" / "resource-kubernetes-v4.25.0"

pytestmark = pytest.mark.timeout(3600)
CRDS = ("sandboxes.agents.x-k8s.io", "sandboxtemplates.extensions.agents.x-k8s.io",
        "sandboxclaims.extensions.agents.x-k8s.io", "sandboxwarmpools.extensions.agents.x-k8s.io")

TIMINGS: dict[str, Any] = {}


def driver(*args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the project's driver with the offline toolchain on PATH; echo its output."""
    command = ". e2e/toolchain/env.sh >/dev/null && exec \"$PY\" -m automation " + " ".join(
        f"'{a}'" for a in args)
    env = {**os.environ, "PY": sys.executable, "TOOLCHAIN_ENV_QUIET": "1"}
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    elapsed = time.monotonic() - started
    print(f"$ python -m automation {' '.join(args)}  ({elapsed:.1f}s, exit {result.returncode})\n"
          f"{result.stdout[-5000:]}\n{result.stderr[-5000:]}", flush=True)
    if check and result.returncode != 0:
        raise AssertionError(f"driver {' '.join(args)} failed with exit {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    result.elapsed = elapsed  # type: ignore[attr-defined]
    return result


def change_summary(up_output: str) -> dict[str, int]:
    """The ``changes {...}`` summary the driver prints after ``up``."""
    match = re.search(r"changes (\{.*\})", up_output)
    assert match, f"no change summary in driver output:\n{up_output[-2000:]}"
    return ast.literal_eval(match.group(1))


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """Build the minimal images offline (the stack's image loader imports them into the node)."""
    result = subprocess.run(["make", "--no-print-directory", "images", "IMAGES_VARIANT=minimal"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=2400)
    print(result.stdout[-3000:], result.stderr[-3000:], flush=True)
    assert result.returncode == 0, f"make images failed:\n{result.stderr[-3000:]}"
    values = dict(line.split("=", 1) for line in result.stdout.splitlines()[-2:])
    return {"runtime": values["runtime"], "router": values["router"]}


@pytest.fixture(scope="module")
def stack_overrides(cluster: Cluster, images: dict[str, str]) -> list[str]:
    """``--config`` overrides that bind the local profile to this cluster and these images."""
    if not PULUMI_BIN.exists() or not KUBERNETES_PLUGIN.exists():
        skip_loudly(f"Pulumi toolchain incomplete ({PULUMI_BIN} / {KUBERNETES_PLUGIN}); run `make toolchain-pulumi`")
    pairs = {
        "kubeconfig": cluster.kubeconfig,
        "sandboxImage": images["runtime"],
        "routerImage": images["router"],
        "runtime": "gvisor",
        "allowInsecureRunc": "false",
        "warmPoolReplicas": "2",
    }
    return [item for key, value in pairs.items() for item in ("--config", f"{key}={value}")]


@pytest.fixture(scope="module")
def deployed(cluster: Cluster, stack_overrides: list[str]) -> Iterator[Cluster]:
    """The stack brought up from empty; destroyed (and checked) by test_down_leaves_nothing."""
    # The cluster checks' own controller is removed asynchronously: wait for an empty start.
    deadline = time.monotonic() + 180
    while cluster.kubectl("get", "namespace", "agent-sandbox-system", check=False).returncode == 0:
        assert time.monotonic() < deadline, "agent-sandbox-system still exists: not an empty start"
        time.sleep(2)
    # The cluster is empty, so any record of the stack is from an earlier, aborted session.
    driver("down", STACK, "--forget", check=False, timeout=120)
    result = driver("up", STACK, *stack_overrides, timeout=1200)
    TIMINGS["up_from_empty_seconds"] = round(result.elapsed, 1)
    yield cluster
    if "down_seconds" not in TIMINGS:  # test_down_leaves_nothing did not get to destroy it
        driver("down", STACK, timeout=900, check=False)


def test_preview_with_the_policy_pack_passes(stack_overrides: list[str]) -> None:
    result = driver("preview", STACK, *stack_overrides)
    assert "policy pack passed" in result.stdout


def test_insecure_config_is_blocked_by_the_policy_pack(stack_overrides: list[str]) -> None:
    result = driver("preview", STACK, *stack_overrides, "--config", "runtime=runc",
                    "--config", "allowInsecureRunc=true", check=False)
    assert result.returncode != 0
    assert "runc" in (result.stdout + result.stderr)
    # Put the secure profile back for everything that follows (overrides are remembered).
    driver("preview", STACK, *stack_overrides)


def test_up_from_empty_deploys_everything(deployed: Cluster) -> None:
    pool = deployed.get_json("sandboxwarmpools.extensions.agents.x-k8s.io", "-n", "agent-sandbox-demo")
    assert [item["status"].get("readyReplicas") for item in pool["items"]] == [2]
    router = deployed.get_json("deployment", "sandbox-router-deployment", "-n", "agent-sandbox-system")
    assert router["status"].get("readyReplicas") == 2
    template = deployed.get_json("sandboxtemplates.extensions.agents.x-k8s.io", "-n", "agent-sandbox-demo")
    assert template["items"][0]["spec"]["podTemplate"]["spec"]["runtimeClassName"] == "gvisor"
    assert deployed.get_json("runtimeclass", "gvisor")["handler"] == "runsc"


def test_smoke_checks_all_pass(deployed: Cluster) -> None:
    result = driver("smoke", STACK, timeout=900, check=False)
    report = json.loads((OUT_DIR / STACK / "smoke.json").read_text())
    TIMINGS["smoke"] = {check["name"]: check["status"] for check in report.get("checks", [])}
    assert result.returncode == 0, f"smoke failed: {json.dumps(report, indent=1)[-4000:]}"
    assert len(report["checks"]) == 6 and all(check["status"] == "pass" for check in report["checks"])


@pytest.fixture(scope="module")
def sdk(deployed: Cluster) -> Iterator[tuple[Any, Any]]:
    """The official SDK connected to our router through the driver's managed tunnel."""
    from k8s_agent_sandbox import SandboxClient
    from k8s_agent_sandbox.models import SandboxDirectConnectionConfig

    from automation.kube import Cluster as KubeCluster, api_client
    from automation.project import default_paths, kube_args, load_overrides, stack_config
    from automation.smoke import StackTarget
    from automation.tunnel import PortForwardTunnel
    from automation.workspace import open_stack, plain_outputs

    paths = default_paths(str(OUT_DIR))
    overrides = load_overrides(paths, STACK)
    config = stack_config(paths, STACK, overrides)
    target = StackTarget.from_outputs(STACK, plain_outputs(open_stack(paths, STACK, overrides, create=False)))
    kube = KubeCluster(api_client(config))
    with PortForwardTunnel(kube_args(config)) as tunnel:
        connection = SandboxDirectConnectionConfig(
            api_url=tunnel.url, extra_headers={"Authorization": f"Bearer {target.router_token}"})
        with SandboxClient(connection_config=connection, api_client=kube.client) as client:
            yield client, target


def test_sdk_operations_on_a_warm_sandbox(sdk: tuple[Any, Any]) -> None:
    client, target = sdk
    sandbox = client.create_sandbox(target.warm_pool, namespace=target.namespace, sandbox_ready_timeout=120)
    try:
        result = sandbox.commands.run("python3 -c \"print('hello-e2e')\"")
        assert (result.stdout, result.exit_code) == ("hello-e2e\n", 0)
        sandbox.files.write("deep/er/deep.txt", b"nested-data")
        assert sandbox.files.read("deep/er/deep.txt") == b"nested-data"
        assert "deep.txt" in [entry.name for entry in sandbox.files.list("deep/er")]
        assert sandbox.files.exists("deep/er/deep.txt") and not sandbox.files.exists("deep/nothing")
    finally:
        client.delete_sandbox(sandbox.claim_name, namespace=target.namespace)


def test_twenty_concurrent_claims(sdk: tuple[Any, Any]) -> None:
    client, target = sdk

    def claim_and_run(index: int) -> float:
        started = time.monotonic()
        sandbox = client.create_sandbox(target.warm_pool, namespace=target.namespace, sandbox_ready_timeout=300)
        try:
            assert sandbox.commands.run(f"echo claim-{index}").stdout == f"claim-{index}\n"
            return time.monotonic() - started
        finally:
            client.delete_sandbox(sandbox.claim_name, namespace=target.namespace)

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(claim_and_run, i) for i in range(20)]
        errors = [repr(f.exception()) for f in futures if f.exception() is not None]
        latencies = sorted(f.result() for f in futures if f.exception() is None)
    TIMINGS["concurrent_claims"] = {"claims": 20, "failed": len(errors),
                                    "max_seconds": round(latencies[-1], 2) if latencies else None}
    assert not errors, errors


def test_killing_a_sandbox_pod_mid_request_is_a_clear_error_and_the_pool_refills(
        sdk: tuple[Any, Any], deployed: Cluster) -> None:
    from k8s_agent_sandbox.exceptions import SandboxError

    client, target = sdk
    sandbox = client.create_sandbox(target.warm_pool, namespace=target.namespace, sandbox_ready_timeout=120)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            running = pool.submit(sandbox.commands.run, "sleep 60", 90)
            time.sleep(2)
            deployed.kubectl("delete", "pod", "-n", target.namespace, sandbox.get_pod_name(), "--wait=false",
                             "--grace-period=0", "--force")
            started = time.monotonic()
            with pytest.raises(SandboxError) as caught:
                running.result(timeout=120)
            TIMINGS["killed_pod_error_seconds"] = round(time.monotonic() - started, 2)
            TIMINGS["killed_pod_error"] = str(caught.value)[:300]
    finally:
        client.delete_sandbox(sandbox.claim_name, namespace=target.namespace)

    deadline = time.monotonic() + 180
    while True:
        pool_status = deployed.get_json("sandboxwarmpools.extensions.agents.x-k8s.io", target.warm_pool,
                                        "-n", target.namespace)["status"]
        if pool_status.get("readyReplicas") == target.warm_pool_replicas:
            break
        assert time.monotonic() < deadline, f"pool did not refill after the pod was killed: {pool_status}"
        time.sleep(2)


def test_bench_records_warm_and_cold_latency(deployed: Cluster) -> None:
    driver("bench", STACK, "-n", "5", timeout=1800)
    bench = json.loads((OUT_DIR / STACK / "bench.json").read_text())
    assert (OUT_DIR / STACK / "bench.png").stat().st_size > 1000
    TIMINGS["bench"] = bench


def test_second_up_changes_nothing(deployed: Cluster, stack_overrides: list[str]) -> None:
    result = driver("up", STACK, *stack_overrides, timeout=600)
    TIMINGS["noop_up_seconds"] = round(result.elapsed, 1)
    changes = change_summary(result.stdout)
    assert set(changes) == {"same"}, f"a no-op up changed something: {changes}"


def test_warm_pool_resize_converges(deployed: Cluster, stack_overrides: list[str]) -> None:
    overrides = [*stack_overrides[:-2], "--config", "warmPoolReplicas=3"]
    result = driver("up", STACK, *overrides, timeout=900)
    assert change_summary(result.stdout).get("update", 0) >= 1
    pool = deployed.get_json("sandboxwarmpools.extensions.agents.x-k8s.io", "-n", "agent-sandbox-demo")
    assert pool["items"][0]["status"].get("readyReplicas") == 3
    driver("up", STACK, *stack_overrides, timeout=900)


def test_an_interrupted_up_is_finished_by_the_next_up(deployed: Cluster, stack_overrides: list[str]) -> None:
    overrides = [*stack_overrides[:-2], "--config", "warmPoolReplicas=1"]
    command = ". e2e/toolchain/env.sh >/dev/null && exec \"$PY\" -m automation up local " + " ".join(
        f"'{a}'" for a in overrides)
    env = {**os.environ, "PY": sys.executable, "TOOLCHAIN_ENV_QUIET": "1"}
    # Its own process group, interrupted like a user's Ctrl-C: SIGINT to the driver and the engine.
    interrupted = subprocess.Popen(["bash", "-c", command], cwd=REPO_ROOT, env=env, start_new_session=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(8)  # inside the engine's update, before it finishes
    os.killpg(interrupted.pid, signal.SIGINT)
    output, _ = interrupted.communicate(timeout=300)
    print(output[-3000:], flush=True)
    TIMINGS["interrupted_up_exit"] = interrupted.returncode
    finished = driver("up", STACK, *stack_overrides, timeout=900)
    assert "succeeded" in finished.stdout
    pool = deployed.get_json("sandboxwarmpools.extensions.agents.x-k8s.io", "-n", "agent-sandbox-demo")
    assert pool["items"][0]["spec"]["replicas"] == 2 and pool["items"][0]["status"].get("readyReplicas") == 2
    assert set(change_summary(driver("up", STACK, *stack_overrides, timeout=600).stdout)) == {"same"}


def test_router_keeps_answering_when_a_pod_is_deleted(deployed: Cluster) -> None:
    pods = deployed.get_json("pods", "-n", "agent-sandbox-system", "-l", "app=sandbox-router")["items"]
    assert len(pods) == 2
    deployed.kubectl("delete", "pod", "-n", "agent-sandbox-system", pods[0]["metadata"]["name"], "--wait=false")
    endpoints = deployed.get_json("endpointslices", "-n", "agent-sandbox-system",
                                  "-l", "kubernetes.io/service-name=sandbox-router-svc")
    ready = [e for s in endpoints["items"] for e in s.get("endpoints") or [] if e["conditions"].get("ready")]
    assert ready, "no ready router endpoint right after deleting one of two pods"


def test_down_leaves_nothing(deployed: Cluster) -> None:
    result = driver("down", STACK, timeout=900)
    TIMINGS["down_seconds"] = round(result.elapsed, 1)
    for args in (("namespace", "agent-sandbox-demo"), ("namespace", "agent-sandbox-system"),
                 *(("crd", name) for name in CRDS)):
        gone = deployed.kubectl("get", *args, check=False)
        assert gone.returncode != 0, f"{' '.join(args)} is still there after down"
    ours = deployed.kubectl("get", "runtimeclass,clusterrole,clusterrolebinding", "-o", "name",
                            "-l", "app.kubernetes.io/managed-by=agent-sandbox-iac").stdout.strip()
    assert not ours, f"objects of ours left after down: {ours}"
    assert deployed.get_json("runtimeclass", "gvisor")["handler"] == "runsc", "the node's RuntimeClass must stay"
    loaded = deployed.kubectl("get", "nodes", "-o", "jsonpath={.items[*].status.images[*].names}").stdout
    TIMINGS["images_left_on_node"] = sorted(set(re.findall(r"agent-sandbox/(?:runtime|router):\w+", loaded)))
    E2E_REPORT.parent.mkdir(parents=True, exist_ok=True)
    E2E_REPORT.write_text(json.dumps(TIMINGS, indent=2))
    subprocess.run([sys.executable, str(REPO_ROOT / "e2e" / "results_page.py"), "--stack", STACK,
                    "--out", str(OUT_DIR), "--docs", str(REPO_ROOT / "docs")], check=True)
