"""The ``gvisor`` stack, as users run it, on a real one-node KIND cluster made by ``up`` itself.

Through the project's driver (what ``make up/smoke/bench/down STACK=gvisor`` run), offline: ``up``
from nothing (node image, cluster, images, deploy), preview with the policy pack (and an insecure
config blocked), smoke, README's "Use it" snippet as written, the official SDK on a warm sandbox
and 20 concurrent claims, a sandbox pod killed mid-request, bench (JSON + PNG), a second ``up``
with no changes, a warm-pool resize, the pool following demand with KEDA (installed, then removed),
an interrupted ``up`` finished by the next, a router pod
deleted, ``down`` leaving nothing of ours and ``down --cluster`` leaving no kind container, volume
or host iptables rule. Timings go to out/e2e/e2e.json and docs/results.md.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from tests.e2e.kind_harness import (
    CRDS, OFFLINE_ENV, OUT_DIR, REPO_ROOT, Kube, Timings, change_summary, config_args, docker, driver,
    host_iptables_rules, kind_leftovers, readme_use_it_snippet, require_caches, sdk_session,
)

STACK = "gvisor"
CLUSTER = "agent-sandbox-e2e"
CONFIG = {"clusterName": CLUSTER, "imageVariant": "minimal", "warmPoolReplicas": "2"}
pytestmark = pytest.mark.timeout(3600)
TIMINGS: dict[str, Any] = {"stack": STACK, "nodes": 1}
REPORT = Timings("kind-1-node", nodes=1)


@pytest.fixture(scope="module")
def deployed() -> Iterator[Kube]:
    """The stack brought up from nothing by ``up``; torn down by the last tests (or here, on failure)."""
    require_caches()
    # Leftovers of an aborted earlier run: its stack record and its cluster.
    driver("down", STACK, "--forget", check=False, timeout=120)
    subprocess.run([sys.executable, "-m", "automation", "tools", STACK], cwd=REPO_ROOT,
                   env={**os.environ, **OFFLINE_ENV}, capture_output=True)
    if CLUSTER in docker("ps", "-a", "--format", "{{.Label \"io.x-k8s.kind.cluster\"}}").stdout.split():
        subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], capture_output=True,
                       env={**os.environ, "PATH": f"{OFFLINE_ENV['CACHE_DIR']}/bin:{os.environ['PATH']}"})
    TIMINGS["host_rules_before"] = sorted(host_iptables_rules())
    result = driver("up", STACK, *config_args(CONFIG), timeout=3000)
    TIMINGS["up_from_empty_seconds"] = round(result.elapsed, 1)
    setup = re.findall(r"setup: (\w+) done in (\d+)s", result.stdout)
    TIMINGS["up_phases_seconds"] = {name: int(seconds) for name, seconds in setup}
    REPORT.check("up from empty", result.elapsed, phases=TIMINGS["up_phases_seconds"])
    assert "imageBuild=prebuilt" in result.stdout, "the CLI-built images must be said loudly"
    yield Kube(f"kind-{CLUSTER}")
    if "cluster_deleted" not in TIMINGS:
        driver("down", STACK, "--cluster", check=False, timeout=900)


def test_up_from_empty_deploys_everything(deployed: Kube) -> None:
    pool = deployed.get_json("sandboxwarmpools.extensions.agents.x-k8s.io", "-n", "agent-sandbox-demo")
    assert [item["status"].get("readyReplicas") for item in pool["items"]] == [2]
    router = deployed.get_json("deployment", "sandbox-router-deployment", "-n", "agent-sandbox-system")
    assert router["status"].get("readyReplicas") == 2
    template = deployed.get_json("sandboxtemplates.extensions.agents.x-k8s.io", "-n", "agent-sandbox-demo")
    assert template["items"][0]["spec"]["podTemplate"]["spec"]["runtimeClassName"] == "gvisor"
    assert deployed.get_json("runtimeclass", "gvisor")["handler"] == "runsc"
    nodes = deployed.get_json("nodes")["items"]
    assert [n["metadata"]["name"] for n in nodes] == [f"{CLUSTER}-control-plane"]


def test_preview_with_the_policy_pack_passes(deployed: Kube) -> None:
    started = time.monotonic()
    result = driver("preview", STACK)
    assert "policy pack passed" in result.stdout
    REPORT.check("preview with policy pack", time.monotonic() - started)


def test_insecure_config_is_blocked_by_the_policy_pack(deployed: Kube) -> None:
    started = time.monotonic()
    result = driver("preview", STACK, "--config", "runtime=runc", "--config", "allowInsecureRunc=true", check=False)
    assert result.returncode != 0 and "runc" in result.output
    # Put the secure profile back for everything that follows (overrides are remembered).
    driver("preview", STACK, "--config", "runtime=gvisor", "--config", "allowInsecureRunc=false")
    REPORT.check("insecure config blocked", time.monotonic() - started)


def test_smoke_checks_all_pass(deployed: Kube) -> None:
    result = driver("smoke", STACK, timeout=900, check=False)
    report = json.loads((OUT_DIR / STACK / "smoke.json").read_text())
    TIMINGS["smoke"] = {check["name"]: check["status"] for check in report.get("checks", [])}
    REPORT.check("smoke", result.elapsed, checks=TIMINGS["smoke"])
    assert result.returncode == 0, f"smoke failed: {json.dumps(report, indent=1)[-4000:]}"
    assert report["checks"] and all(check["status"] == "pass" for check in report["checks"])


def test_readme_use_it_snippet_runs_as_written(deployed: Kube) -> None:
    """README's "Use it" snippet, as written, from the project folder, on this stack (the README names it)."""
    from automation.engine_env import pulumi_env
    from automation.paths import default_paths

    snippet = readme_use_it_snippet()
    assert 'connect("gvisor")' in snippet
    code = snippet.replace('connect("gvisor")', f"connect({STACK!r})")
    # the environment `make connect` gives it: the toolchain on PATH, the project's state and passphrase
    env = {**os.environ, **OFFLINE_ENV, **pulumi_env(default_paths(str(OUT_DIR)))}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    REPORT.check("README 'Use it' snippet", time.monotonic() - started)
    print(done.stdout[-3000:], done.stderr[-3000:], flush=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "42"


@pytest.fixture(scope="module")
def sdk(deployed: Kube) -> Iterator[tuple[Any, Any]]:
    """The official SDK connected to our router through the driver's managed tunnel."""
    with sdk_session(STACK) as session:
        yield session


def test_sdk_operations_on_a_warm_sandbox(sdk: tuple[Any, Any]) -> None:
    client, target = sdk
    started = time.monotonic()
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
    REPORT.check("SDK operations on a warm sandbox", time.monotonic() - started)


def test_twenty_concurrent_claims(sdk: tuple[Any, Any]) -> None:
    client, target = sdk
    started_all = time.monotonic()

    from k8s_agent_sandbox.exceptions import SandboxRequestError

    retried: list[str] = []

    def claim_and_run(index: int) -> float:
        started = time.monotonic()
        sandbox = client.create_sandbox(target.warm_pool, namespace=target.namespace, sandbox_ready_timeout=300)
        try:
            try:
                result = sandbox.commands.run(f"echo claim-{index}")
            except SandboxRequestError as error:
                # One retry, counted in the report (out/e2e/e2e.json): with 20 claims on 2 full
                # cores the router answered 502 to 3 first commands of just-Ready cold sandboxes
                # (its pod watch trailing the claim, not yet explained: issue 14); the retry passed.
                retried.append(f"claim {index}: status {error.status_code}: {error}")
                time.sleep(2)
                result = sandbox.commands.run(f"echo claim-{index}")
            assert result.stdout == f"claim-{index}\n"
            return time.monotonic() - started
        finally:
            client.delete_sandbox(sandbox.claim_name, namespace=target.namespace)

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(claim_and_run, i) for i in range(20)]
        errors = [f"{f.exception()!r} status={getattr(f.exception(), 'status_code', None)}"
                  for f in futures if f.exception() is not None]
        latencies = sorted(f.result() for f in futures if f.exception() is None)
    TIMINGS["concurrent_claims"] = {"claims": 20, "failed": len(errors), "retried": retried,
                                    "max_seconds": round(latencies[-1], 2) if latencies else None}
    REPORT.check("20 concurrent claims", time.monotonic() - started_all, **TIMINGS["concurrent_claims"])
    assert not errors, errors


def test_killing_a_sandbox_pod_mid_request_is_a_clear_error_and_the_pool_refills(
        sdk: tuple[Any, Any], deployed: Kube) -> None:
    from k8s_agent_sandbox.exceptions import SandboxError

    client, target = sdk
    started_all = time.monotonic()
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
    REPORT.check("sandbox pod killed mid-request", time.monotonic() - started_all,
                 error_seconds=TIMINGS["killed_pod_error_seconds"])


def test_bench_records_warm_and_cold_latency(deployed: Kube) -> None:
    result = driver("bench", STACK, "-n", "5", timeout=1800)
    bench = json.loads((OUT_DIR / STACK / "bench.json").read_text())
    assert (OUT_DIR / STACK / "bench.png").stat().st_size > 1000
    TIMINGS["bench"] = bench
    REPORT.check("bench", result.elapsed)


def test_second_up_changes_nothing(deployed: Kube) -> None:
    result = driver("up", STACK, timeout=900)
    TIMINGS["noop_up_seconds"] = round(result.elapsed, 1)
    REPORT.check("no-op up", result.elapsed)
    changes = change_summary(result.stdout)
    assert set(changes) == {"same"}, f"a no-op up changed something: {changes}"


def test_warm_pool_resize_converges(deployed: Kube) -> None:
    result = driver("up", STACK, "--config", "warmPoolReplicas=3", timeout=900)
    assert change_summary(result.stdout).get("update", 0) >= 1
    pool = deployed.get_json("sandboxwarmpools.extensions.agents.x-k8s.io", "-n", "agent-sandbox-demo")
    assert pool["items"][0]["status"].get("readyReplicas") == 3
    back = driver("up", STACK, "--config", "warmPoolReplicas=2", timeout=900)
    REPORT.check("warm-pool resize 2->3->2", result.elapsed + back.elapsed)


KEDA_ON = {"warmPoolAutoscaling": "keda", "warmPoolReplicas": "", "installKeda": "true", "warmPoolMinReplicas": "1",
           "warmPoolMaxReplicas": "3", "warmPoolScaleDownSeconds": "30"}
# back to the fixed pool: "key=" unsets a key for the run (and for the remembered overrides)
KEDA_OFF = {"warmPoolAutoscaling": "off", "installKeda": "false", "warmPoolReplicas": "2", "warmPoolMinReplicas": "",
            "warmPoolMaxReplicas": "", "warmPoolScaleDownSeconds": ""}


def _pool(deployed: Kube) -> dict[str, Any]:
    return deployed.get_json("sandboxwarmpools.extensions.agents.x-k8s.io", "python-sandbox-warmpool",
                             "-n", "agent-sandbox-demo")


def test_the_pool_follows_demand_with_keda_and_leaves_nothing_behind(deployed: Kube) -> None:
    """``warmPoolAutoscaling: keda`` + ``installKeda``: KEDA's images are built offline (once, cached)
    and loaded, its ScaledObject sizes the pool by the sandboxes in use; back to a fixed pool,
    no KEDA object is left."""
    started = time.monotonic()
    result = driver("up", STACK, *config_args(KEDA_ON), timeout=2700)
    assert '"warmPoolAutoscaling": "keda"' in result.stdout
    scaled = deployed.get_json("scaledobjects.keda.sh", "python-sandbox-warmpool", "-n", "agent-sandbox-demo")
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "SandboxWarmPool"
    claims = [{"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
               "metadata": {"name": f"demand-{i}", "namespace": "agent-sandbox-demo"},
               "spec": {"warmPoolRef": {"name": "python-sandbox-warmpool"}}} for i in range(2)]
    deployed.apply(*claims)
    # two in use, one warm per one in use: the autoscaler asks for 2 (the HPA's period is 15 s)
    deadline, grown = time.monotonic() + 180, None
    while time.monotonic() < deadline:
        if int(_pool(deployed)["spec"].get("replicas") or 0) >= 2:
            grown = time.monotonic() - started
            break
        time.sleep(2)
    hpa = deployed.kubectl("get", "hpa", "-n", "agent-sandbox-demo", check=False).stdout
    assert grown is not None, f"the pool did not grow while 2 sandboxes were in use: {_pool(deployed)['spec']}\n{hpa}"
    for claim in claims:
        deployed.kubectl("delete", "sandboxclaims.extensions.agents.x-k8s.io", "-n", "agent-sandbox-demo", claim["metadata"]["name"], "--wait=false")
    back = driver("up", STACK, *config_args(KEDA_OFF), timeout=900)
    pool = _pool(deployed)
    assert pool["spec"]["replicas"] == 2 and pool["status"].get("readyReplicas") == 2
    for args in (("namespace", "keda"), ("crd", "scaledobjects.keda.sh"), ("apiservice", "v1beta1.external.metrics.k8s.io"),
                 ("hpa", "-n", "agent-sandbox-demo", "keda-hpa-python-sandbox-warmpool")):
        assert deployed.kubectl("get", *args, check=False).returncode != 0, f"{' '.join(args)} left after KEDA's removal"
    TIMINGS["keda_up_seconds"], TIMINGS["keda_removed_up_seconds"] = round(result.elapsed, 1), round(back.elapsed, 1)
    REPORT.check("pool follows demand (keda on, burst, off)", time.monotonic() - started,
                 grown_after_s=round(grown, 1))


def test_an_interrupted_up_is_finished_by_the_next_up(deployed: Kube) -> None:
    started = time.monotonic()
    command = [sys.executable, "-m", "automation", "--out-dir", str(OUT_DIR), "up", STACK,
               "--config", "warmPoolReplicas=1"]
    # Its own process group, interrupted like a user's Ctrl-C: SIGINT to the driver and the engine.
    interrupted = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **OFFLINE_ENV}, start_new_session=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # wait until the engine runs (the set-up before it only checks what exists), then Ctrl-C
    deadline = time.monotonic() + 120
    assert interrupted.stdout is not None
    seen = []
    for line in interrupted.stdout:
        seen.append(line)
        if "Updating" in line or "updating" in line or time.monotonic() > deadline:
            break
    time.sleep(3)
    os.killpg(interrupted.pid, signal.SIGINT)
    output, _ = interrupted.communicate(timeout=300)
    print("".join(seen)[-2000:], output[-3000:], flush=True)
    TIMINGS["interrupted_up_exit"] = interrupted.returncode
    finished = driver("up", STACK, "--config", "warmPoolReplicas=2", timeout=900)
    assert "succeeded" in finished.stdout
    pool = deployed.get_json("sandboxwarmpools.extensions.agents.x-k8s.io", "-n", "agent-sandbox-demo")
    assert pool["items"][0]["spec"]["replicas"] == 2 and pool["items"][0]["status"].get("readyReplicas") == 2
    assert set(change_summary(driver("up", STACK, timeout=600).stdout)) == {"same"}
    REPORT.check("interrupted up finished by the next", time.monotonic() - started,
                 interrupted_exit=interrupted.returncode)


def test_router_keeps_answering_when_a_pod_is_deleted(deployed: Kube) -> None:
    started = time.monotonic()
    pods = deployed.get_json("pods", "-n", "agent-sandbox-system", "-l", "app=sandbox-router")["items"]
    assert len(pods) == 2
    deployed.kubectl("delete", "pod", "-n", "agent-sandbox-system", pods[0]["metadata"]["name"], "--wait=false")
    endpoints = deployed.get_json("endpointslices", "-n", "agent-sandbox-system",
                                  "-l", "kubernetes.io/service-name=sandbox-router-svc")
    ready = [e for s in endpoints["items"] for e in s.get("endpoints") or [] if e["conditions"].get("ready")]
    assert ready, "no ready router endpoint right after deleting one of two pods"
    REPORT.check("router pod deleted", time.monotonic() - started)


def test_down_leaves_nothing_of_ours(deployed: Kube) -> None:
    result = driver("down", STACK, "--keep-stack", timeout=900)
    TIMINGS["down_seconds"] = round(result.elapsed, 1)
    REPORT.check("down", result.elapsed)
    for args in (("namespace", "agent-sandbox-demo"), ("namespace", "agent-sandbox-system"),
                 *(("crd", name) for name in CRDS)):
        gone = deployed.kubectl("get", *args, check=False)
        assert gone.returncode != 0, f"{' '.join(args)} is still there after down"
    ours = deployed.kubectl("get", "runtimeclass,clusterrole,clusterrolebinding", "-o", "name",
                            "-l", "app.kubernetes.io/managed-by=agent-sandbox-iac").stdout.strip()
    assert not ours, f"objects of ours left after down: {ours}"
    loaded = deployed.kubectl("get", "nodes", "-o", "jsonpath={.items[*].status.images[*].names}").stdout
    TIMINGS["images_left_on_node"] = sorted(set(re.findall(r"agent-sandbox/(?:runtime|router):\w+", loaded)))


def test_down_cluster_leaves_no_container_volume_or_host_rule(deployed: Kube) -> None:
    result = driver("down", STACK, "--cluster", timeout=900)
    TIMINGS["cluster_deleted"] = True
    REPORT.check("down --cluster", result.elapsed)
    assert "deleted kind cluster" in result.stdout
    assert kind_leftovers(CLUSTER) == []
    networks = docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert "kind" not in networks or docker("network", "inspect", "kind", "--format",
                                            "{{len .Containers}}").stdout.strip() != "0"
    new_rules = host_iptables_rules() - set(TIMINGS.pop("host_rules_before"))
    assert not new_rules, f"host iptables rules left behind: {sorted(new_rules)[:10]}"
    TIMINGS["e2e_seconds"] = REPORT.data["total_seconds"]
    (OUT_DIR / "e2e").mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "e2e" / "e2e.json").write_text(json.dumps(TIMINGS, indent=2))
    subprocess.run([sys.executable, str(REPO_ROOT / "e2e" / "results_page.py"), "--stack", STACK,
                    "--out", str(OUT_DIR), "--docs", str(REPO_ROOT / "docs")], check=True)
