"""Where a cold sandbox's start goes, below the controller: one pool member replaced at a time,
timed from the moment its pod reaches the API (seen by a watch) to the watch seeing it Ready.

Between those two, from the node's own clocks (``crictl inspectp`` / ``crictl inspect`` in the
KIND node, nanoseconds) and the runtime's log (kubelet timestamps): the pod sandbox (runsc)
created, the container created and started, the runtime server started and serving; and from the
watch: when the kubelet first reported the container running, and Ready. A gap between
``serving`` and ``running_seen`` is the kubelet noticing the start (its container relist), not the
sandbox or our server.

    PYTHONPATH=. python bench/cold_timeline.py [STACK] [-n 5] [--kubelet-gate EventedPLEG]

``--kubelet-gate NAME`` also times ``n`` more starts with that kubelet feature gate on, alternating with
the node as configured (the gate goes into each node's kubelet config and the kubelet restarts;
the original config is put back and the kubelet restarted again, also on failure): is there a
kubelet setting that notices a started container sooner than its once-a-second relist?

Output: ``docs/cold-timeline.json`` (``--out``) and a line per start plus medians. Needs a deployed
stack on a KIND cluster (docker exec into the node); deletes pool members, never claimed ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from automation.bench import parse_time  # noqa: E402  (RFC 3339 to epoch, nanosecond fraction kept)
from automation.kube import WARM_POOL_LABEL, kube_args  # noqa: E402  (the pool members' label key)
from automation.paths import default_paths, find_tool  # noqa: E402
from automation.session import deployed_by_name  # noqa: E402

KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
STEPS = ("sandbox_created", "container_created", "container_started", "server_started", "serving",
         "running_seen", "ready_seen")


def log_time(lines: Sequence[str], marker: str) -> Optional[float]:
    """Epoch of the first ``kubectl logs --timestamps`` line containing ``marker``."""
    return next((parse_time(line.split()[0]) for line in lines if marker in line), None)


def relative(points: dict[str, Optional[float]], origin: float) -> dict[str, Optional[float]]:
    """Each point in seconds after ``origin`` (None stays None), in STEPS order."""
    return {step: None if points.get(step) is None else round(points[step] - origin, 3) for step in STEPS}


def mark(pod: Any, known: set[str], seen: dict[str, dict[str, float]], now: float) -> bool:
    """Record ``now`` as when a pod whose UID is not in ``known`` was first seen, running, and
    Ready (the Sandbox controller may recreate a deleted pod under the same name, so names do not
    tell); True once it is Ready."""
    if pod.metadata.uid in known or pod.metadata.deletion_timestamp is not None:
        return False
    marks = seen.setdefault(pod.metadata.name, {"added": now})
    statuses = pod.status.container_statuses or []
    if statuses and statuses[0].state and statuses[0].state.running:
        marks.setdefault("running_seen", now)
    if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
        marks.setdefault("ready_seen", now)
        return True
    return False


def watch_new_pod(core: Any, namespace: str, known: set[str], seen: dict[str, dict[str, float]],
                  stop: threading.Event) -> None:
    """Watch the pool's pods and ``mark`` each event until a new one is Ready or ``stop`` is set."""
    from kubernetes import watch

    stream = watch.Watch()
    for event in stream.stream(core.list_namespaced_pod, namespace, label_selector=WARM_POOL_LABEL,
                               timeout_seconds=120):
        if mark(event["object"], known, seen, time.time()) or stop.is_set():
            stream.stop()


def node_points(node: str, container_id: str) -> dict[str, Optional[float]]:
    """The CRI's own timestamps of the pod sandbox and the container, from inside the node."""
    container = json.loads(subprocess.check_output(["docker", "exec", node, "crictl", "inspect", container_id]))
    sandbox_id = container["info"].get("sandboxID") or container["status"].get("sandboxId")
    sandbox = json.loads(subprocess.check_output(["docker", "exec", node, "crictl", "inspectp", sandbox_id]))
    return {"sandbox_created": parse_time(sandbox["status"]["createdAt"]),
            "container_created": parse_time(container["status"]["createdAt"]),
            "container_started": parse_time(container["status"]["startedAt"])}


def one_start(core: Any, namespace: str, kubectl: Sequence[str]) -> dict[str, Any]:
    """Delete the oldest ready pool member and time its replacement."""
    pods = core.list_namespaced_pod(namespace, label_selector=WARM_POOL_LABEL).items
    known = {p.metadata.uid for p in pods}
    victim = min((p for p in pods if p.metadata.deletion_timestamp is None), key=lambda p: p.metadata.creation_timestamp)
    seen: dict[str, dict[str, float]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_new_pod, args=(core, namespace, known, seen, stop), daemon=True)
    watcher.start()
    time.sleep(0.5)  # the watch is open before the replacement can appear
    core.delete_namespaced_pod(victim.metadata.name, namespace, grace_period_seconds=0)
    watcher.join(120)
    stop.set()
    done = [(name, marks) for name, marks in seen.items() if "ready_seen" in marks]
    if not done:
        raise RuntimeError(f"no replacement of {victim.metadata.name} became Ready within 120 s")
    name, marks = done[0]
    pod = core.read_namespaced_pod(name, namespace)
    container_id = pod.status.container_statuses[0].container_id.split("//", 1)[1]
    lines = subprocess.check_output([*kubectl, "-n", namespace, "logs", name, "--timestamps"], text=True).splitlines()
    points: dict[str, Optional[float]] = {**node_points(pod.spec.node_name, container_id),
                                          "server_started": log_time(lines, "Started server process"),
                                          "serving": log_time(lines, "sandbox_runtime: serving"),
                                          "running_seen": marks.get("running_seen"), "ready_seen": marks["ready_seen"]}
    return {"pod": name, "after_pod_seen": relative(points, marks["added"])}


def with_gate(config_text: str, gate: str) -> str:
    """The kubelet configuration with feature gate ``gate`` turned on (other gates kept)."""
    config = yaml.safe_load(config_text) or {}
    config.setdefault("featureGates", {})[gate] = True
    return yaml.safe_dump(config, sort_keys=False)


def gate_on(metrics: str, gate: str) -> bool:
    """Whether a kubelet's metrics text reports feature gate ``gate`` on."""
    prefix = f'kubernetes_feature_enabled{{name="{gate}",'
    return any(line.startswith(prefix) and line.rsplit(" ", 1)[-1] == "1" for line in metrics.splitlines())


def gate_enabled(core: Any, node: str, gate: str) -> bool:
    """Whether the node's kubelet (through the API server's node proxy) reports ``gate`` on;
    False while a restarting kubelet does not answer the proxy yet."""
    try:
        metrics = core.connect_get_node_proxy_with_path(node, "metrics")
    except Exception:  # noqa: BLE001  (refused or 503 while the kubelet restarts: not yet)
        return False
    return gate_on(metrics, gate)


def restart_kubelet(node: str, config_text: str) -> None:
    subprocess.run(["docker", "exec", "-i", node, "sh", "-c", f"cat > {KUBELET_CONFIG} && systemctl restart kubelet"],
                   input=config_text, text=True, check=True)


@contextlib.contextmanager
def kubelet_gate(core: Any, gate: str, timeout: float = 120) -> Iterator[None]:
    """Every node's kubelet with ``gate`` on for the block; the original config back after it."""
    nodes = [node.metadata.name for node in core.list_node().items]
    originals = {node: subprocess.check_output(["docker", "exec", node, "cat", KUBELET_CONFIG], text=True)
                 for node in nodes}
    try:
        for node in nodes:
            restart_kubelet(node, with_gate(originals[node], gate))
        deadline = time.monotonic() + timeout
        for node in nodes:
            while not gate_enabled(core, node, gate):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the kubelet on {node} does not report feature gate {gate} on")
                time.sleep(1)
        yield
    finally:
        for node in nodes:
            restart_kubelet(node, originals[node])


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The samples with the median of each step."""
    medians = {step: round(statistics.median(v), 3) if (v := [s["after_pod_seen"][step] for s in samples
                                                              if s["after_pod_seen"][step] is not None]) else None
               for step in STEPS}
    return {"n": len(samples), "samples": samples, "median": medians}


def time_starts(cluster: Any, target: Any, kubectl: Sequence[str], n: int, label: str) -> list[dict[str, Any]]:
    samples = []
    for index in range(n):
        cluster.wait_settled(target.namespace, target.warm_pool, target.warm_pool_replicas)
        sample = one_start(cluster.core, target.namespace, kubectl)
        samples.append(sample)
        print(f"{label} start {index + 1}/{n}: " + ", ".join(f"{k} {v}s" for k, v in sample["after_pod_seen"].items()),
              flush=True)
    return samples


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", nargs="?", default="gvisor")
    parser.add_argument("-n", type=int, default=5, help="pod starts to time (as many again with --kubelet-gate)")
    parser.add_argument("--out", default=str(REPO / "docs" / "cold-timeline.json"))
    parser.add_argument("--kubelet-gate", metavar="NAME", help="also time n starts with this kubelet feature gate on")
    args = parser.parse_args(argv)
    config, target, cluster = deployed_by_name(default_paths(), args.stack)
    kubectl = [find_tool("kubectl") or "kubectl", *kube_args(config)]
    if not args.kubelet_gate:
        report = {"schema": "cold-timeline/1", "stack": args.stack,
                  **summary(time_starts(cluster, target, kubectl, args.n, "as configured:"))}
    else:
        # Alternating halves, so a machine that gets busier or quieter during the run weighs on both.
        plain: list[dict[str, Any]] = []
        gated: list[dict[str, Any]] = []
        for half in (args.n // 2, args.n - args.n // 2):
            plain += time_starts(cluster, target, kubectl, half, "as configured:")
            with kubelet_gate(cluster.core, args.kubelet_gate):
                gated += time_starts(cluster, target, kubectl, half, f"{args.kubelet_gate} on:")
        report = {"schema": "cold-timeline/1", "stack": args.stack, **summary(plain),
                  "variants": {f"kubelet {args.kubelet_gate}": summary(gated)}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for label, part in [("as configured", report), *report.get("variants", {}).items()]:
        print(f"{label}: median seconds after the pod is seen: "
              + ", ".join(f"{k} {v}" for k, v in part["median"].items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
