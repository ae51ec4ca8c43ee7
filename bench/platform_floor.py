"""What the platform under the stack costs on this machine: the floors a claim cannot go below
whatever our code does. Needs a deployed stack (a KIND cluster for the CRI part).

What it owns, each measured here and now, side by side in one run:
- API server: GET and PATCH of a Sandbox (what the controller's writes cost), with the API
  server's and etcd's CPU per request when their processes are visible on this host;
- the controller's serial writes on a warm claim's path (v0.5.6's adoption: a counted constant,
  see ``WARM_PATH_WRITES``) times the PATCH p50: a lower bound of warm claim→Ready;
- the container runtime: pod sandbox + container create + start through the CRI (crictl in the
  KIND node) for gVisor (runsc) and for runc, with the runtime image: the cold-start floor;
- inside a warm sandbox (gVisor): a process start (``/bin/true``), ``python3 -c pass``, the bench's
  first command started bare and through the runtime's ``/execute`` on loopback (its
  Server-Timing: what the runtime adds to the command), and the runtime server's imports, timed
  inside the sandbox; and the idle CPU of each gVisor sandbox.

    PYTHONPATH=. python bench/platform_floor.py gvisor [-n 40]

Output: ``docs/platform-floor.json`` (``--out``) and a summary on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from automation.bench import FIRST_EXEC_COMMAND  # noqa: E402
from automation.kube import Cluster, kube_args  # noqa: E402
from automation.paths import default_paths  # noqa: E402
from automation.session import deployed_by_name, sdk_session  # noqa: E402
from automation.stats import percentile  # noqa: E402
from agent_sandbox_pulumi.sandbox_iac import controller_flags  # noqa: E402
from router_bench import cpu_seconds  # noqa: E402

SANDBOX_API = ("agents.x-k8s.io", "v1beta1", "sandboxes")
WARM_PATH_WRITES = 4
"""API writes one after the other between a warm claim's creation and its Ready condition in
v0.5.6 (extensions/controllers/sandboxclaim_controller.go): the observed-time annotation on the
claim, the claim's assigned-sandbox annotation (an update), the adopted Sandbox's ownership patch,
the claim's status. (The first-ready annotation comes after Ready, off the path.) Each needs the
previous one's answer, so their latencies add up; the claim's own create, the watch deliveries and
the reconciles' CPU come on top: the figure is a lower bound. With
``--disable-claim-observability-annotations`` (the ``interactive`` profile) the first is skipped."""
NO_ANNOTATIONS_FLAG = "disable-claim-observability-annotations"


def warm_path_writes(flags: Mapping[str, str]) -> int:
    """The serial writes of a warm claim under the controller's effective tuning ``flags``."""
    return WARM_PATH_WRITES - (1 if str(flags.get(NO_ANNOTATIONS_FLAG, "")).lower() == "true" else 0)
WRITE_GAP_SECONDS = 0.25
"""Pause between measured writes, so that the controller's reaction to one write (a PATCH of a
Sandbox is reconciled) is over before the next: each write meets a quiet API server, as on a
claim's path."""
IN_SANDBOX = r"""
import http.client, json, os, shlex, subprocess, sys, time
COMMAND = %(command)r
# What the runtime gives a command (executor.minimal_environment): its PATH, HOME, LANG, unbuffered.
ENV = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8",
       "PYTHONUNBUFFERED": "1"}
def middle(samples):
    return sorted(samples)[len(samples) // 2]
def t(argv, **kw):
    best = []
    for _ in range(5):
        s = time.perf_counter(); subprocess.run(argv, check=True, **kw); best.append(time.perf_counter() - s)
    return middle(best)
def through_runtime(command):
    # The runtime's own Server-Timing for /execute (its handler, spawn to reply), on loopback.
    took = []
    for _ in range(5):
        connection = http.client.HTTPConnection("127.0.0.1", int(os.environ.get("SANDBOX_PORT", "8888")), timeout=30)
        connection.request("POST", "/execute", json.dumps({"command": command}), {"Content-Type": "application/json"})
        response = connection.getresponse(); response.read(); connection.close()
        took.append(float((response.getheader("Server-Timing") or "dur=nan").split("dur=")[1]) / 1000)
    return middle(took)
print(json.dumps({"true": t(["/bin/true"]), "python": t([sys.executable, "-c", "pass"]),
                  # the bench's first command: bare (as the runtime starts it), then through the runtime
                  "first_command_bare": t(shlex.split(COMMAND), env=ENV, stdout=subprocess.DEVNULL),
                  "first_command_runtime": through_runtime(COMMAND),
                  # the runtime server's own interpreter and imports (commands get a plain environment)
                  "runtime_imports": t(["/opt/venv/bin/python", "-c", "import sys; sys.path.insert(0, '/opt/sandbox'); "
                                        "import sandbox_runtime.app, uvicorn, uvloop, httptools"])}))
"""
def cpu_or_zero(pid: int) -> float:
    """``router_bench.cpu_seconds``, 0 for a process that is gone."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def host_cpu_seconds(name: str) -> Optional[float]:
    """CPU seconds used so far by the processes named ``name`` on this host (None: none visible)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name[:15]:
                pids.append(int(pid))
        except OSError:
            continue
    return sum(cpu_or_zero(pid) for pid in pids) if pids else None


def timed_requests(call: Callable[[int], Any], n: int, gap: float = 0.0) -> dict[str, Any]:
    """``n`` calls one after the other (``gap`` seconds apart): wall p50/p90 in ms, and the API
    server's and etcd's CPU ms per call when visible here (with a gap: including what the
    controller's reaction to each call cost them)."""
    before = {name: host_cpu_seconds(name) for name in ("kube-apiserver", "etcd")}
    walls = []
    for index in range(n):
        started = time.perf_counter()
        call(index)
        walls.append((time.perf_counter() - started) * 1000)
        time.sleep(gap)
    after = {name: host_cpu_seconds(name) for name in before}
    cpu = {f"{name}_cpu_ms": round((after[name] - before[name]) / n * 1000, 2)
           for name in before if before[name] is not None and after[name] is not None}
    return {"n": n, "p50_ms": round(statistics.median(walls), 2), "p90_ms": round(percentile(walls, 0.9), 2), **cpu}


def api_floor(cluster: Cluster, namespace: str, n: int, writes: int = WARM_PATH_WRITES) -> dict[str, Any]:
    custom = cluster.custom
    sandboxes = custom.list_namespaced_custom_object(*SANDBOX_API[:2], namespace, SANDBOX_API[2])["items"]
    if not sandboxes:
        return {"error": f"no Sandbox in {namespace} to read and patch (is the warm pool empty?)"}
    name = sandboxes[0]["metadata"]["name"]
    key = "bench.agent-sandbox.dev/platform-floor"

    def patch(value: Optional[str]) -> Any:
        return custom.patch_namespaced_custom_object(*SANDBOX_API[:2], namespace, SANDBOX_API[2], name,
                                                     {"metadata": {"annotations": {key: value}}})
    try:
        result = {"get_sandbox": timed_requests(
                      lambda i: custom.get_namespaced_custom_object(*SANDBOX_API[:2], namespace, SANDBOX_API[2], name), n),
                  "patch_sandbox": timed_requests(lambda i: patch(str(i)), n, gap=WRITE_GAP_SECONDS)}
    finally:
        patch(None)
    result["warm_path_writes"] = writes
    result["warm_path_floor_ms"] = round(writes * result["patch_sandbox"]["p50_ms"], 1)
    return result


def _docker(node: str, script: str) -> str:
    return subprocess.run(["docker", "exec", node, "bash", "-c", script], check=True, capture_output=True,
                          text=True, timeout=300).stdout


CRI_SCRIPT = r"""
mkdir -p /tmp/floor
printf '{"metadata":{"name":"c"},"image":{"image":"IMAGE"},"command":["sleep","600"],"log_path":"c.log","linux":{}}' \
  > /tmp/floor/ctr.json
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
cri() { crictl --timeout 60s "$@" 2>/tmp/floor/err; }
for handler in RUNTIMES; do
  for i in 1 2 3; do
    # a pod of its own each time: a name and uid no earlier attempt left behind
    id="$handler-$i-$RANDOM"
    printf '{"metadata":{"name":"floor-%s","namespace":"default","uid":"floor-%s"},"log_directory":"/tmp/floor","linux":{}}' \
      "$id" "$id" > /tmp/floor/pod.json
    t=$(date +%s%N); P=$(cri runp --runtime "$handler" /tmp/floor/pod.json) \
      || { echo "error $handler runp: $(tail -c 300 /tmp/floor/err | tr '\n' ' ')"; continue; }; a=$(ms $t)
    t=$(date +%s%N); C=$(cri create "$P" /tmp/floor/ctr.json /tmp/floor/pod.json) \
      || { echo "error $handler create: $(tail -c 300 /tmp/floor/err | tr '\n' ' ')"; cri stopp "$P"; cri rmp "$P"; continue; }; b=$(ms $t)
    t=$(date +%s%N); cri start "$C" >/dev/null || echo "error $handler start: $(tail -c 300 /tmp/floor/err | tr '\n' ' ')"; c=$(ms $t)
    echo "$handler $a $b $c"
    cri stopp "$P" >/dev/null; cri rmp "$P" >/dev/null
  done
done
"""


def cri_floor(node: str, image: str, handler: str) -> dict[str, Any]:
    """runp / create / start in ms (median of 3) per runtime handler, in the KIND node."""
    output = _docker(node, CRI_SCRIPT.replace("IMAGE", image).replace("RUNTIMES", f"{handler} runc"))
    rows: dict[str, list[list[int]]] = {}
    errors = [line for line in output.splitlines() if line.startswith("error ")]
    for line in output.splitlines():
        if re.fullmatch(r"\S+ \d+ \d+ \d+", line):
            name, *numbers = line.split()
            rows.setdefault(name, []).append([int(x) for x in numbers])
    result: dict[str, Any] = {
        name: {step: statistics.median(r[i] for r in got) for i, step in enumerate(("runp_ms", "create_ms", "start_ms"))}
        | {"total_ms": statistics.median(sum(r) for r in got)} for name, got in rows.items()}
    if errors:
        result["errors"] = errors[:6]
    return result


def sentry_idle(seconds: float = 10.0) -> dict[str, Any]:
    """CPU ms per second of each gVisor sandbox (runsc-sandbox process) while nothing runs."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"runsc-sandbox":
                pids.append(int(pid))
        except OSError:
            continue
    if not pids:
        return {"error": "no runsc-sandbox process visible on this host"}
    before = {pid: cpu_or_zero(pid) for pid in pids}
    time.sleep(seconds)
    per = sorted((cpu_or_zero(pid) - before[pid]) / seconds * 1000 for pid in pids)
    return {"sandboxes": len(pids), "median_ms_per_s": round(statistics.median(per), 1),
            "max_ms_per_s": round(per[-1], 1)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", nargs="?", default="gvisor")
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--out", default=str(REPO / "docs" / "platform-floor.json"))
    args = parser.parse_args(argv)
    config, target, cluster = deployed_by_name(default_paths(), args.stack)
    report: dict[str, Any] = {"schema": "platform-floor/1", "stack": args.stack, "cpus": os.cpu_count(),
                              "load_before": list(os.getloadavg()), "started_at": time.time()}
    print(f"platform floor on {args.stack}: API requests (n={args.n})", flush=True)
    flags = controller_flags.effective_flags(config.controller_profile, dict(config.controller_flags))
    report["api"] = api_floor(cluster, target.namespace, args.n, warm_path_writes(flags))
    pods = cluster.pods(target.namespace)
    sample = next(iter(pods.values()), None)
    node = sample.spec.node_name if sample else None
    image = sample.spec.containers[0].image if sample else None
    if config.cluster_flavour == "kind" and node and image:
        print(f"platform floor: CRI create+start in node {node} ({target.runtime_class} vs runc)", flush=True)
        from kubernetes import client

        handler = client.NodeV1Api(cluster.client).read_runtime_class(target.runtime_class).handler
        report["cri"] = cri_floor(node, image, handler)
    else:
        report["cri"] = {"error": "skipped: the CRI floor needs a KIND node this host can docker exec into"}
    print("platform floor: inside a warm sandbox, and gVisor's idle CPU", flush=True)
    with sdk_session(target, cluster, kube_args(config)) as session:
        sandbox = session.client.create_sandbox(target.warm_pool, namespace=target.namespace, sandbox_ready_timeout=120)
        try:
            # base64: the script's quotes and newlines reach python3 intact through the SDK's command line
            encoded = base64.b64encode((IN_SANDBOX % {"command": FIRST_EXEC_COMMAND}).encode()).decode()
            result = sandbox.commands.run(f"python3 -c \"import base64; exec(base64.b64decode('{encoded}'))\"")
            match = re.search(r"\{.*\}", result.stdout or "")
            inside = json.loads(match.group(0)) if match else {"error": (result.stderr or "")[:300]}
            report["in_sandbox_ms"] = {k: round(v * 1000, 1) for k, v in inside.items()} if match else inside
        finally:
            session.client.delete_sandbox(sandbox.claim_name, namespace=target.namespace)
    cluster.wait_settled(target.namespace, target.warm_pool, target.warm_pool_replicas)
    report["sentry_idle"] = sentry_idle()
    report["load_after"] = list(os.getloadavg())
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for line in summary(report):
        print(line)
    print(f"wrote {args.out}")
    return 0


def summary(report: dict[str, Any]) -> list[str]:
    api, cri, inside, idle = (report.get(k) or {} for k in ("api", "cri", "in_sandbox_ms", "sentry_idle"))
    lines = [f"platform floor ({report.get('cpus')} cores, load {report.get('load_before')}):"]
    for name in ("get_sandbox", "patch_sandbox"):
        if name in api:
            row = api[name]
            cpu = ", ".join(f"{k.replace('_cpu_ms', '')} {v} ms CPU" for k, v in row.items() if k.endswith("_cpu_ms"))
            lines.append(f"  API {name}: p50 {row['p50_ms']} ms, p90 {row['p90_ms']} ms" + (f" ({cpu})" if cpu else ""))
    if "warm_path_floor_ms" in api:
        lines.append(f"  warm claim floor: {api['warm_path_writes']} serial writes x PATCH p50 = {api['warm_path_floor_ms']} ms")
    for handler, row in cri.items():
        if isinstance(row, dict) and "total_ms" in row:
            lines.append(f"  CRI {handler}: runp {row['runp_ms']} + create {row['create_ms']} + start {row['start_ms']}"
                         f" = {row['total_ms']} ms")
    if inside and "error" not in inside:
        lines.append(f"  in a gVisor sandbox: /bin/true {inside.get('true')} ms, python3 -c pass {inside.get('python')} ms, "
                     f"runtime imports {inside.get('runtime_imports')} ms; the bench's first command bare "
                     f"{inside.get('first_command_bare')} ms, through the runtime {inside.get('first_command_runtime')} ms")
    if idle and "error" not in idle:
        lines.append(f"  idle gVisor sandbox: {idle['median_ms_per_s']} ms CPU per second (median of {idle['sandboxes']})")
    return lines


if __name__ == "__main__":
    sys.exit(main())
