"""Simulated scale: warm pools of 10, 100 and 1,000 sandboxes on KWOK's fake nodes, claimed at a
fixed rate, on the e2e KIND cluster.

What it owns: the simulation's set-up (KWOK run on the host against the cluster, with stages of
our own that make fake nodes Ready and their pods Running/Ready at once; fake nodes; a bench
namespace with a SandboxTemplate pinned to the fake nodes and a SandboxWarmPool), the open-loop
claim schedule (one claim every 1/rate s, whatever the earlier ones do), the per-level numbers
(claim→Ready p50/p99, claims/s sustained, time until the pool is back, controller and API-server
CPU/memory) and the report (``docs/scale-sim.json`` + ``docs/scale-sim.png``; ``--append`` adds a rerun).

The real controller, API server and etcd do all the work; only the kubelet is simulated, so the
numbers are the control plane's, without pod start-up (that is what ``automation bench`` measures
on the real node). Usage, with the gvisor stack up (``make up STACK=gvisor``)::

    python bench/scale_sim.py [--context kind-agent-sandbox] [--pools 10,100,1000] [--rates 5,20,50]
        [--stack gvisor]

With ``--stack``, the stack itself also declares each pool size on the fake nodes
(``warmPoolReplicas``, ``sandboxNodeSelector``, ``sandboxTolerations``; the policy pack's
``maxReplicas`` raised for the run): the time of that ``up`` (Pulumi waits for the pool's ready
replicas) and of the no-op ``up`` after it are reported, and the stack is put back as it was.

KWOK is built from its Go module on first use (``e2e/toolchain/cluster.sh kwok``). Everything the
run creates (fake nodes, the bench namespace, the KWOK process it started) is removed at the end,
also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from automation import stats  # noqa: E402 - after the checkout is on the path (run as a script)
CACHE_DIR = Path(os.environ.get("CACHE_DIR", "/var/cache/agent-sandbox-iac"))
GROUP = "extensions.agents.x-k8s.io"
VERSION = "v1beta1"
NAMESPACE = "agent-sandbox-sim"
TEMPLATE = "sim-template"
FAKE_LABEL = {"type": "kwok"}
FAKE_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}
FAKE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
# What a fake node offers: room for the largest pool on few nodes (the control plane is measured,
# not the scheduler's bin packing), and pod slots like a large real node.
FAKE_NODE_CAPACITY = {"cpu": "64", "memory": "256Gi", "ephemeral-storage": "1Ti", "pods": "250"}
SIM_POD_REQUESTS = {"cpu": "100m", "memory": "256Mi"}
Log = Callable[[str], None]


# --------------------------------------------------------------------------------- KWOK config

def kwok_config() -> str:
    """KWOK's configuration with stages of our own: a fake node becomes Ready with the capacity it
    declares; a pod bound to one becomes Running and Ready with an address at once; a deleted
    pod goes away at once. Only nodes annotated ``kwok.x-k8s.io/node=fake`` are touched."""
    configuration = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
        "options": {"manageAllNodes": False, "manageNodesWithAnnotationSelector": "kwok.x-k8s.io/node=fake",
                    "cidr": "10.250.0.0/16", "nodeLeaseDurationSeconds": 40,
                    "podPlayStageParallelism": 8, "nodePlayStageParallelism": 2, "nodeLeaseParallelism": 2},
    }
    node_ready = _stage("sim-node-ready", "Node", [
        {"key": '.status.conditions.[] | select( .type == "Ready" ) | .status', "operator": "NotIn", "values": ["True"]},
    ], """{{ $now := Now }}
conditions:
- type: Ready
  status: "True"
  reason: KubeletReady
  message: simulated by kwok
  lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
addresses:
- type: InternalIP
  address: {{ NodeIP | Quote }}
allocatable:
{{ YAML .status.capacity 1 }}
nodeInfo:
  kubeletVersion: simulated
""")
    pod_ready = _stage("sim-pod-ready", "Pod", [
        {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
        {"key": ".status.podIP", "operator": "DoesNotExist"},
    ], """{{ $now := Now }}
phase: Running
hostIP: {{ NodeIP | Quote }}
podIP: {{ PodIP | Quote }}
podIPs:
- ip: {{ PodIP | Quote }}
startTime: {{ $now | Quote }}
conditions:
- type: Initialized
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: ContainersReady
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: PodScheduled
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
""")
    pod_gone = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": "sim-pod-delete"},
                "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                         "selector": {"matchExpressions": [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}]},
                         "next": {"finalizers": {"empty": True}, "delete": True}}}
    return yaml.safe_dump_all([configuration, node_ready, pod_ready, pod_gone], sort_keys=False)


def _stage(name: str, kind: str, expressions: list[dict[str, Any]], status_template: str) -> dict[str, Any]:
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
            "spec": {"resourceRef": {"apiGroup": "v1", "kind": kind},
                     "selector": {"matchExpressions": expressions},
                     "next": {"statusTemplate": status_template}}}


def fake_node(name: str, capacity: Mapping[str, str] = FAKE_NODE_CAPACITY) -> dict[str, Any]:
    """A Node object KWOK manages: labelled and tainted so only pods that ask for it land there."""
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {**FAKE_LABEL, "kubernetes.io/hostname": name},
                         "annotations": dict(FAKE_ANNOTATION)},
            "spec": {"taints": [dict(FAKE_TAINT)]},
            "status": {"capacity": dict(capacity), "allocatable": dict(capacity)}}


def nodes_for(pool: int, capacity: Mapping[str, str] = FAKE_NODE_CAPACITY, claims: int = 0) -> int:
    """Fake nodes to hold the pool plus the sandboxes claims take out of it (refills included)."""
    per_node = int(capacity["pods"])
    return max(1, math.ceil((pool + claims) * 1.1 / per_node))


def sim_template(image: str) -> dict[str, Any]:
    """The bench's SandboxTemplate: the shape of the stack's (one container, requests), pinned to
    the fake nodes. The image is never pulled: KWOK only pretends to run it."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SandboxTemplate",
            "metadata": {"name": TEMPLATE, "namespace": NAMESPACE},
            "spec": {"podTemplate": {"metadata": {"labels": {"app": "agent-sandbox-sim"}},
                                     "spec": {"nodeSelector": dict(FAKE_LABEL),
                                              "tolerations": [{**FAKE_TAINT, "operator": "Equal"}],
                                              "automountServiceAccountToken": False,
                                              "containers": [{"name": "runtime", "image": image,
                                                              "resources": {"requests": dict(SIM_POD_REQUESTS),
                                                                            "limits": {"cpu": "500m", "memory": "1Gi"}}}]}},
                     "networkPolicyManagement": "Unmanaged"}}


def sim_pool(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SandboxWarmPool",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": TEMPLATE}}}


def sim_claim(name: str, pool: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SandboxClaim",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"warmPoolRef": {"name": pool}}}


# --------------------------------------------------------------------------------- numbers

def quantile(values: Sequence[float], q: float) -> Optional[float]:
    """The q-quantile (0..1) of ``values`` as the driver's bench computes it
    (``automation.stats.percentile``); None for no values."""
    return stats.percentile(values, q) if values else None


def summarize(latencies: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {"n": len(ordered), "p50": quantile(ordered, 0.5), "p90": quantile(ordered, 0.9),
            "p99": quantile(ordered, 0.99), "max": ordered[-1] if ordered else None}


def schedule(rate: float, count: int) -> list[float]:
    """Offsets (s) of an open-loop schedule: ``count`` claims, one every 1/rate s."""
    if rate <= 0 or count < 0:
        raise ValueError("rate must be > 0 and count >= 0")
    return [i / rate for i in range(count)]


def sustained_rate(created: Sequence[float], ready: Sequence[float]) -> Optional[float]:
    """Claims Ready per second over the span from the first creation to the last Ready."""
    if not ready or not created:
        return None
    span = max(ready) - min(created)
    return len(ready) / span if span > 0 else None


def cpu_seconds(stat_line: str, ticks_per_second: int) -> float:
    """utime + stime of a /proc/<pid>/stat line, in seconds (the command field may hold spaces)."""
    fields = stat_line.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


# --------------------------------------------------------------------------------- cluster side

@dataclass
class Cluster:
    """kubectl and docker against the e2e cluster (the node container runs the control plane)."""

    context: str
    node_container: str
    log: Log = print

    _api: Any = None

    def custom_objects(self) -> Any:
        """One API client for the claims (a kubectl process per claim would cost the machine more
        CPU than the controller it measures); its pool holds as many connections as workers."""
        if self._api is None:
            from kubernetes import client, config

            api_client = config.new_client_from_config(context=self.context)
            api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 64
            self._api = client.CustomObjectsApi(api_client)
        return self._api

    def create_claim(self, body: Mapping[str, Any]) -> None:
        self.custom_objects().create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "sandboxclaims", dict(body))

    def kubectl(self, *args: str, input_text: Optional[str] = None, check: bool = True) -> str:
        result = subprocess.run(["kubectl", "--context", self.context, *args], input=input_text,
                                capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()[:400]}")
        return result.stdout

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                     input_text=yaml.safe_dump_all(list(objects)))

    def process_usage(self, pattern: str) -> Optional[dict[str, float]]:
        """CPU seconds and RSS (MiB) of the newest process in the node container matching ``pattern``."""
        script = (f"p=$(pgrep -o -x '{pattern}') || exit 3; cat /proc/$p/stat; "
                  "grep VmRSS /proc/$p/status; getconf CLK_TCK")
        result = subprocess.run(["docker", "exec", self.node_container, "sh", "-c", script],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return None
        stat, rss, ticks = result.stdout.strip().splitlines()[-3:]
        return {"cpu_s": cpu_seconds(stat, int(ticks)), "rss_mib": int(rss.split()[1]) / 1024}


# Matched on the process name exactly (pgrep -x: the kernel keeps 15 characters of it), so the
# shell running pgrep never matches itself.
PROCESSES = {"controller": "agent-sandbox-c", "apiserver": "kube-apiserver", "etcd": "etcd"}


def usage_delta(before: Mapping[str, Optional[dict[str, float]]], after: Mapping[str, Optional[dict[str, float]]],
                seconds: float) -> dict[str, Any]:
    """Per process: cores used on average over ``seconds`` and RSS at the end."""
    out: dict[str, Any] = {}
    for name in PROCESSES:
        b, a = before.get(name), after.get(name)
        if a is None or b is None or seconds <= 0:
            out[name] = None
            continue
        out[name] = {"cores": round((a["cpu_s"] - b["cpu_s"]) / seconds, 3), "rss_mib": round(a["rss_mib"], 1)}
    return out


class ClaimWatch:
    """Watches the bench namespace's SandboxClaims; records when each was first seen Ready."""

    def __init__(self, cluster: Cluster, stderr_path: Optional[Path] = None):
        self.cluster = cluster
        self.stderr_path = stderr_path
        self.ready_at: dict[str, float] = {}
        self._process: Optional[subprocess.Popen] = None
        self._stderr: Optional[Any] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def start(self) -> "ClaimWatch":
        # kubectl's watch prints one JSON object per event; the receipt time is our clock
        self._stderr = self.stderr_path.open("w") if self.stderr_path else None
        self._process = subprocess.Popen(
            ["kubectl", "--context", self.cluster.context, "get", f"sandboxclaims.{GROUP}", "-n", NAMESPACE,
             "--watch", "--output-watch-events", "-o", "json"], stdout=subprocess.PIPE,
            stderr=self._stderr or subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process and self._process.stdout
        decoder, buffer = json.JSONDecoder(), ""
        for line in self._process.stdout:
            buffer += line
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                self._event(event, time.monotonic())

    def _event(self, event: Mapping[str, Any], now: float) -> None:
        obj = event.get("object") or {}
        name = (obj.get("metadata") or {}).get("name")
        conditions = (obj.get("status") or {}).get("conditions") or []
        if name and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            with self._lock:
                self.ready_at.setdefault(name, now)

    def ready(self, names: Iterable[str]) -> dict[str, float]:
        with self._lock:
            return {n: self.ready_at[n] for n in names if n in self.ready_at}

    def lost(self) -> Optional[str]:
        """Why the watch ended before ``stop`` (its exit code and last stderr line), or None."""
        if self._process is None or self._process.poll() is None:
            return None
        tail = self.stderr_path.read_text().strip().splitlines()[-1:] if self.stderr_path and self.stderr_path.is_file() else []
        return f"kubectl watch exited {self._process.returncode}" + (f": {tail[0][:200]}" if tail else "")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        if self._stderr:
            self._stderr.close()


# --------------------------------------------------------------------------------- the run

@dataclass
class Level:
    pool: int
    rate: float
    claims: int
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    sustained: Optional[float] = None
    refill_seconds: Optional[float] = None
    usage: dict[str, Any] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    watch_lost: Optional[str] = None
    """Why the claim watch ended early (its claims then count as failed: not measured), or None."""

    def as_json(self) -> dict[str, Any]:
        return {"pool": self.pool, "rate_per_s": self.rate, "claims": self.claims, "failed": self.failed,
                "watch_lost": self.watch_lost,
                "claim_to_ready_s": summarize(self.latencies), "sustained_claims_per_s": self.sustained,
                "pool_back_after_s": self.refill_seconds, "usage": self.usage, "load_before_after": self.load}


class Simulation:
    """Owns what it creates: the KWOK process (stopped by PID), the fake nodes, the namespace."""

    def __init__(self, cluster: Cluster, kwok: Path, image: str, log: Log = print):
        self.cluster, self.kwok, self.image, self.log = cluster, kwok, image, log
        self.process: Optional[subprocess.Popen] = None
        self.nodes: list[str] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="scale-sim-"))

    def __enter__(self) -> "Simulation":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.clean_up()

    def start_kwok(self) -> None:
        config = self.workdir / "kwok.yaml"
        config.write_text(kwok_config())
        kubeconfig = self.workdir / "kubeconfig"
        kubeconfig.write_text(self.cluster.kubectl("config", "view", "--minify", "--flatten"))
        log = open(self.workdir / "kwok.log", "w")
        self.process = subprocess.Popen([str(self.kwok), "--kubeconfig", str(kubeconfig), "--config", str(config),
                                         "--node-ip", "10.250.255.254"],
                                        stdout=log, stderr=subprocess.STDOUT)
        self.log(f"scale-sim: kwok pid {self.process.pid} (log {self.workdir / 'kwok.log'})")

    def ensure_nodes(self, count: int) -> None:
        wanted = [f"kwok-sim-{i}" for i in range(count)]
        new = [fake_node(name) for name in wanted if name not in self.nodes]
        if new:
            self.cluster.apply(new)
        self.nodes = sorted(set(self.nodes) | set(wanted))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            out = self.cluster.kubectl("get", "nodes", "-l", "type=kwok", "-o",
                                       "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}")
            if out.split().count("True") >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"KWOK did not make {count} fake nodes Ready in 120 s (log {self.workdir / 'kwok.log'})")

    def prepare_namespace(self) -> None:
        self.cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                            sim_template(self.image)])

    def pool_ready(self, pool: str) -> int:
        out = self.cluster.kubectl("get", f"sandboxwarmpools.{GROUP}", pool, "-n", NAMESPACE, "-o",
                                   "jsonpath={.status.readyReplicas}", check=False)
        return int(out) if out.strip().isdigit() else 0

    def wait_pool(self, pool: str, replicas: int, timeout: float) -> Optional[float]:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.pool_ready(pool) >= replicas:
                return time.monotonic() - started
            time.sleep(0.5)
        return None

    def usage(self) -> dict[str, Optional[dict[str, float]]]:
        return {name: self.cluster.process_usage(pattern) for name, pattern in PROCESSES.items()}

    def run_level(self, pool_size: int, rate: float, claims: int) -> Level:
        pool = f"sim-pool-{pool_size}"
        level = Level(pool_size, rate, claims)
        self.cluster.apply([sim_pool(pool, pool_size)])
        filled = self.wait_pool(pool, pool_size, timeout=max(120, pool_size * 0.5))
        if filled is None:
            raise RuntimeError(f"pool {pool} did not reach {pool_size} ready sandboxes")
        self.log(f"scale-sim: pool {pool_size} ready ({filled:.1f}s); {claims} claims at {rate}/s")
        watch = ClaimWatch(self.cluster, self.workdir / f"watch-{pool_size}-{rate:g}.err").start()
        time.sleep(1)
        level.load = [os.getloadavg()[0]]
        before, started = self.usage(), time.monotonic()
        names = [f"sim-{pool_size}-{int(rate)}-{i}" for i in range(claims)]
        created: dict[str, float] = {}
        offsets = schedule(rate, claims)

        def create(i: int) -> None:
            delay = started + offsets[i] - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            created[names[i]] = time.monotonic()
            self.cluster.create_claim(sim_claim(names[i], pool))

        # Open loop: each claim is sent at its time by its own worker, however slow earlier ones are.
        with ThreadPoolExecutor(max_workers=min(64, claims or 1)) as workers:
            list(workers.map(create, range(claims)))
        deadline = time.monotonic() + 60 + claims / max(rate, 1)
        while time.monotonic() < deadline and len(watch.ready(names)) < claims:
            time.sleep(0.2)
        ended = time.monotonic()
        ready = watch.ready(names)
        level.watch_lost = watch.lost()
        if level.watch_lost:
            self.log(f"scale-sim: WARNING: the claim watch ended early ({level.watch_lost}); this level's "
                     "unseen claims count as failed, not as slow")
        watch.stop()
        level.latencies = [ready[n] - created[n] for n in names if n in ready and n in created]
        level.failed = claims - len(level.latencies)
        level.sustained = sustained_rate(list(created.values()), list(ready.values()))
        level.usage = usage_delta(before, self.usage(), ended - started)
        level.load.append(os.getloadavg()[0])
        # the pool refills while its claimed members go on: how long until it is whole again
        level.refill_seconds = self.wait_pool(pool, pool_size, timeout=300)
        self.cluster.kubectl("delete", f"sandboxclaims.{GROUP}", "-n", NAMESPACE, "--all", "--wait=false", check=False)
        self.cluster.kubectl("delete", f"sandboxwarmpools.{GROUP}", pool, "-n", NAMESPACE, "--wait=true",
                             "--timeout=300s", check=False)
        self._wait_no_sandboxes()
        return level

    def _wait_no_sandboxes(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "name", check=False)
            if not out.strip():
                return
            time.sleep(1)

    def clean_up(self) -> None:
        self.cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=300s",
                             "--ignore-not-found", check=False)
        if self.nodes:
            self.cluster.kubectl("delete", "node", *self.nodes, "--ignore-not-found", check=False)
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log("scale-sim: cleaned up (namespace, fake nodes, kwok process)")


STACK_PLACEMENT = {"sandboxNodeSelector": json.dumps(FAKE_LABEL),
                   "sandboxTolerations": json.dumps([{**FAKE_TAINT, "operator": "Equal"}])}


def stack_up_times(stack: str, pools: Sequence[int], workdir: Path, restore_replicas: str,
                   log: Log = print) -> list[dict[str, Any]]:
    """Per pool size: seconds of the ``up`` that declares it on the fake nodes, and of a no-op
    ``up`` right after; the stack's own pool is restored at the end (also after a failure)."""
    policy = workdir / "policy-config.json"
    policy.write_text(json.dumps({"warm-pool-max-replicas": {"maxReplicas": max(pools)}}))
    results = []

    def up(*config: str) -> float:
        started = time.monotonic()
        argv = [sys.executable, "-m", "automation", "up", stack, "--skip-prerequisites", "--policy-config", str(policy)]
        for pair in config:
            argv += ["--config", pair]
        subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        return round(time.monotonic() - started, 1)

    replicas = restore_replicas
    try:
        for pool in pools:
            placement = [f"{k}={v}" for k, v in STACK_PLACEMENT.items()]
            declared = up(f"warmPoolReplicas={pool}", *placement)
            noop = up(f"warmPoolReplicas={pool}", *placement)
            log(f"scale-sim: stack {stack} declaring a pool of {pool} on the fake nodes: up {declared}s, no-op up {noop}s")
            results.append({"pool": pool, "up_seconds": declared, "noop_up_seconds": noop})
    finally:
        up(f"warmPoolReplicas={replicas}", "sandboxNodeSelector=", "sandboxTolerations=")
    return results


def ensure_kwok(log: Log = print) -> Path:
    versions = subprocess.run(["bash", "-c", f". {REPO}/e2e/toolchain/cluster-versions.sh; echo $KWOK_VERSION"],
                              capture_output=True, text=True, check=True).stdout.strip()
    binary = CACHE_DIR / "kwok" / versions / "bin" / "kwok"
    if not binary.is_file():
        log(f"scale-sim: building kwok {versions} from its Go module (e2e/toolchain/cluster.sh kwok)")
        subprocess.run(["bash", str(REPO / "e2e" / "toolchain" / "cluster.sh"), "kwok"], check=True)
    return binary


def plot(levels: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Latency vs pool size (one line per rate) and vs rate (one line per pool), p50 and p99, from
    the report's levels (so a report can be plotted again: ``--plot-only``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_pool, by_rate) = plt.subplots(1, 2, figsize=(11, 4.2))
    rates = sorted({lv["rate_per_s"] for lv in levels})
    pools = sorted({lv["pool"] for lv in levels})
    for rate in rates:
        row = sorted((lv for lv in levels if lv["rate_per_s"] == rate), key=lambda lv: lv["pool"])
        for q, style in (("p50", "-o"), ("p99", "--x")):
            by_pool.plot([lv["pool"] for lv in row], [lv["claim_to_ready_s"][q] for lv in row], style,
                         label=f"{rate:g}/s {q}")
    for pool in pools:
        row = sorted((lv for lv in levels if lv["pool"] == pool), key=lambda lv: lv["rate_per_s"])
        for q, style in (("p50", "-o"), ("p99", "--x")):
            by_rate.plot([lv["rate_per_s"] for lv in row], [lv["claim_to_ready_s"][q] for lv in row], style,
                         label=f"pool {pool} {q}")
    by_pool.set(xscale="log", xlabel="warm pool size (sandboxes)", ylabel="claim → Ready (s)",
                title="latency vs pool size")
    by_rate.set(xlabel="claim rate (claims/s, open loop)", ylabel="claim → Ready (s)", title="latency vs claim rate")
    for ax in (by_pool, by_rate):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Simulated scale (KWOK fake nodes; real controller, API server, etcd)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def merged(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """``old`` with ``new``'s entries added, an old entry with the same ``keys`` values replaced,
    sorted by those keys (reruns of one level or pool size update the report in place)."""
    key = lambda entry: tuple(entry[k] for k in keys)  # noqa: E731
    fresh = {key(entry) for entry in new}
    return sorted([dict(e) for e in old if key(e) not in fresh] + [dict(e) for e in new], key=key)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", default="kind-agent-sandbox")
    parser.add_argument("--node-container", default=None, help="default: <cluster>-control-plane")
    parser.add_argument("--pools", default="10,100,1000")
    parser.add_argument("--rates", default="5,20,50")
    parser.add_argument("--seconds", type=float, default=10.0, help="claims per level: rate × seconds, at most the pool")
    parser.add_argument("--image", default="agent-sandbox/sim-never-pulled:1")
    parser.add_argument("--out", default=str(REPO / "docs" / "scale-sim.json"))
    parser.add_argument("--png", default=str(REPO / "docs" / "scale-sim.png"))
    parser.add_argument("--stack", default="", help="also time `up` / no-op `up` of this stack declaring each pool")
    parser.add_argument("--stack-only", action="store_true",
                        help="with --stack: only the stack's up times, added to the report at --out")
    parser.add_argument("--plot-only", action="store_true", help="draw --png again from the report at --out")
    parser.add_argument("--append", action="store_true",
                        help="add this run's levels to the report at --out (a level of the same pool and rate is replaced)")
    args = parser.parse_args(argv)
    out_path = Path(args.out)
    if args.plot_only:
        plot(json.loads(out_path.read_text())["levels"], Path(args.png))
        print(f"scale-sim: drew {args.png}")
        return 0
    cluster_name = args.context.removeprefix("kind-")
    cluster = Cluster(args.context, args.node_container or f"{cluster_name}-control-plane")
    pools, rates = _ints(args.pools), _floats(args.rates)
    kwok = ensure_kwok()
    levels: list[Level] = []
    started = time.monotonic()
    report = (json.loads(out_path.read_text()) if (args.stack_only or args.append) and out_path.is_file()
              else {"schema": "scale-sim/1", "cluster": args.context, "kwok": str(kwok), "levels": [], "stack_up": []})

    def write() -> None:
        # after every part: a later part that fails or is interrupted keeps what came before
        report["seconds"] = round(time.monotonic() - started)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2))

    with Simulation(cluster, kwok, args.image) as sim:
        sim.start_kwok()
        sim.prepare_namespace()
        for pool in pools:
            claims_max = max(min(pool, math.ceil(rate * args.seconds)) for rate in rates)
            sim.ensure_nodes(nodes_for(pool, claims=claims_max))
            for rate in ([] if args.stack_only else rates):
                claims = min(pool, max(1, math.ceil(rate * args.seconds)))
                level = sim.run_level(pool, rate, claims)
                s = summarize(level.latencies)
                print(f"pool {pool:>5}  rate {rate:>5g}/s  claims {claims:>4}  p50 {_ms(s['p50'])}  p99 {_ms(s['p99'])}"
                      f"  max {_ms(s['max'])}  sustained {level.sustained or 0:.1f}/s  failed {level.failed}"
                      f"  pool back {level.refill_seconds if level.refill_seconds is None else round(level.refill_seconds, 1)}s"
                      f"  usage {json.dumps(level.usage)}", flush=True)
                levels.append(level)
                report["levels"] = merged(report["levels"], [level.as_json()], ("pool", "rate_per_s"))
                write()
        if args.stack:
            current = cluster.kubectl("get", f"sandboxwarmpools.{GROUP}", "-A", "-o",
                                      "jsonpath={.items[?(@.metadata.namespace!='" + NAMESPACE + "')].spec.replicas}")
            report["stack_up"] = merged(report.get("stack_up") or [],
                                        stack_up_times(args.stack, pools, sim.workdir, (current.split() or ["2"])[0]),
                                        ("pool",))
            write()
    if report["levels"]:
        plot(report["levels"], Path(args.png))
    print(f"scale-sim: wrote {args.out} and {args.png}")
    return 0


def _ms(value: Optional[float]) -> str:
    return "   -  " if value is None else f"{value * 1000:5.0f}ms"


if __name__ == "__main__":
    sys.exit(main())
