"""A warm pool that follows demand vs a fixed one, measured on the stack's own cluster.

The same load runs against the deployed stack twice, once per mode, each brought up through the
driver (``python -m automation up``) with only the pool's sizing changed:

- ``fixed``: ``warmPoolReplicas = --baseline`` (the default behaviour);
- ``keda``: ``warmPoolAutoscaling: keda`` with ``warmPoolMinReplicas = --baseline``,
  ``warmPoolMaxReplicas = --max`` and ``installKeda: true`` (KEDA's ScaledObject keeps one warm
  sandbox per sandbox in use).

The load: a burst of ``--wave`` claims at t=0 that drains the pool, held ``--hold`` s and
released; the same burst again at t=``--gap``; then the pool is watched until
``--scale-down`` + 45 s after the last release. Per wave: claim->Ready p50/p95/max (claim created
-> Ready condition seen on a watch), how many claims got a warm sandbox, and how long until the
pool had as many ready sandboxes as before the wave; per mode: the pool's size over time (plot).
At the end the stack is brought up once more as it was (fixed, no KEDA).

    .venv/bin/python bench/demand_pool.py --stack gvisor \\
        [--baseline 2 --wave 4 --max 6 --hold 25 --gap 60 --scale-down 60] \\
        [--json docs/demand-pool.json --png docs/demand-pool.png] [--plot-only]

Needs the stack deployed (``make up STACK=gvisor``) on a cluster with room for
``baseline + 2 * wave`` sandboxes at once; offline, the first KEDA ``up`` builds KEDA's images
from its Go module (e2e/toolchain/cluster.sh keda, ~20-30 min cold)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from automation import stats  # noqa: E402 - after the checkout is on the path (run as a script)
from agent_sandbox_pulumi.sandbox_iac.autoscaling import claimed_pods_selector  # noqa: E402
from agent_sandbox_pulumi.sandbox_iac.sandbox_spec import SANDBOX_POD_LABELS  # noqa: E402

GROUP, VERSION = "extensions.agents.x-k8s.io", "v1beta1"
SANDBOX_GROUP = "agents.x-k8s.io"
CLAIM_LABEL = "agents.x-k8s.io/claim-uid"  # on the Sandbox objects claims hold
# the pods in use, as KEDA's trigger counts them
IN_USE_SELECTOR = claimed_pods_selector(SANDBOX_POD_LABELS)
LAUNCH_TYPE_LABEL = "agents.x-k8s.io/launch-type"
Log = Any


def mode_config(mode: str, args: argparse.Namespace) -> list[str]:
    """The ``--config`` pairs of one mode ("key=" unsets a key for that run)."""
    if mode == "fixed":
        return ["warmPoolAutoscaling=off", f"warmPoolReplicas={args.baseline}", "warmPoolMinReplicas=",
                "warmPoolMaxReplicas=", "warmPoolScaleDownSeconds=", "installKeda=false"]
    return ["warmPoolAutoscaling=keda", "warmPoolReplicas=", f"warmPoolMinReplicas={args.baseline}",
            f"warmPoolMaxReplicas={args.max}", f"warmPoolScaleDownSeconds={args.scale_down}", "installKeda=true"]


def stack_up(stack: str, pairs: Sequence[str], log: Log = print) -> float:
    """``python -m automation up`` with ``pairs``; its seconds (output in out/bench/demand-pool-up.log)."""
    argv = [sys.executable, "-m", "automation", "up", stack, "--skip-prerequisites"]
    for pair in pairs:
        argv += ["--config", pair]
    log_path = REPO / "out" / "bench" / "demand-pool-up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"up {stack} {' '.join(pairs)} failed (exit {result.returncode}); see {log_path}")
    seconds = round(time.monotonic() - started, 1)
    log(f"demand-pool: up {' '.join(p for p in pairs if not p.endswith('='))}: {seconds}s")
    return seconds


# --------------------------------------------------------------------------------- numbers

def summarize(latencies: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    pick = (lambda q: round(stats.percentile(ordered, q), 3)) if ordered else (lambda q: None)
    return {"n": len(ordered), "p50": pick(0.5), "p95": pick(0.95), "max": round(ordered[-1], 3) if ordered else None}


def back_after(samples: Sequence[Mapping[str, Any]], start: float, level: int) -> Optional[float]:
    """Seconds from ``start`` until the pool again had ``level`` ready sandboxes after dropping
    below it (None: it never dropped, or never came back within the samples)."""
    dropped = False
    for sample in samples:
        if sample["t"] < start:
            continue
        if sample["ready"] < level:
            dropped = True
        elif dropped:
            return round(sample["t"] - start, 1)
    return None


def first_at(samples: Sequence[Mapping[str, Any]], start: float, field: str, value: int) -> Optional[float]:
    """Seconds from ``start`` until ``field`` first equals ``value``."""
    for sample in samples:
        if sample["t"] >= start and sample[field] == value:
            return round(sample["t"] - start, 1)
    return None


# --------------------------------------------------------------------------------- the cluster

def deployed(stack: str) -> tuple[str, str, str]:
    """(namespace, warm pool, kube context) of the deployed stack, as smoke and bench find them."""
    from automation.paths import default_paths
    from automation.session import deployed_by_name

    config, target, _ = deployed_by_name(default_paths(), stack)
    return target.namespace, target.warm_pool, config.kube_context or ""


class Pool:
    """The stack's pool, its claims and their sandboxes, through the Kubernetes API."""

    def __init__(self, context: str, namespace: str, pool: str):
        from kubernetes import client, config

        api = config.new_client_from_config(context=context)
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self.namespace, self.pool = namespace, pool
        self.created: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def size(self) -> dict[str, int]:
        pool = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "sandboxwarmpools", self.pool)
        in_use = self.core.list_namespaced_pod(self.namespace, label_selector=IN_USE_SELECTOR).items
        return {"spec": int((pool.get("spec") or {}).get("replicas") or 0),
                "ready": int((pool.get("status") or {}).get("readyReplicas") or 0),
                "in_use": sum(1 for p in in_use if p.metadata.deletion_timestamp is None)}

    def claim(self, name: str) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SandboxClaim",
                "metadata": {"name": name, "namespace": self.namespace}, "spec": {"warmPoolRef": {"name": self.pool}}}
        with self._lock:
            self.created[name] = time.monotonic()
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "sandboxclaims", body)

    def release(self, names: Sequence[str]) -> None:
        for name in names:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, "sandboxclaims", name)

    def launch_types(self) -> dict[str, str]:
        """{claim uid: warm|cold} of the sandboxes claims hold now."""
        items = self.custom.list_namespaced_custom_object(SANDBOX_GROUP, "v1beta1", self.namespace, "sandboxes",
                                                          label_selector=CLAIM_LABEL)["items"]
        return {s["metadata"]["labels"][CLAIM_LABEL]: s["metadata"]["labels"].get(LAUNCH_TYPE_LABEL, "?")
                for s in items}

    def claim_uids(self, names: Sequence[str]) -> dict[str, str]:
        return {n: self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "sandboxclaims",
                                                            n)["metadata"]["uid"] for n in names}

    def watch_claims(self) -> threading.Thread:
        """Records when each claim is first seen with Ready=True (receipt time on our clock)."""
        from kubernetes import watch

        def run() -> None:
            while not self._stop.is_set():
                stream = watch.Watch()
                try:
                    for event in stream.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                                               self.namespace, "sandboxclaims", timeout_seconds=30):
                        obj = event["object"]
                        conditions = (obj.get("status") or {}).get("conditions") or []
                        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                            with self._lock:
                                self.ready.setdefault(obj["metadata"]["name"], time.monotonic())
                        if self._stop.is_set():
                            break
                except Exception:  # noqa: BLE001 - a dropped watch is restarted
                    time.sleep(0.5)
                finally:
                    stream.stop()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def wait_settled(self, ready: int, timeout: float = 300) -> float:
        """Until no claim holds a sandbox and the pool has ``ready`` ready sandboxes."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            size = self.size()
            if size["in_use"] == 0 and size["ready"] >= ready:
                return time.monotonic() - started
            time.sleep(1)
        raise TimeoutError(f"pool {self.namespace}/{self.pool} did not settle at {ready} ready within {timeout:.0f}s")


def run_mode(pool: Pool, mode: str, args: argparse.Namespace, log: Log = print) -> dict[str, Any]:
    """The two bursts against the pool as it is now deployed; samples of its size every second."""
    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                samples.append({"t": round(time.monotonic() - start, 2), **pool.size()})
            except Exception:  # noqa: BLE001 - one missed sample is fine
                pass
            done.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    waves = []
    for index, at in enumerate((0.0, float(args.gap))):
        while time.monotonic() - start < at:
            time.sleep(0.1)
        before = pool.size()["ready"]  # read now: the sampler's last sample may be a second old
        wave_start = time.monotonic() - start
        names = [f"demand-{mode}-{os.getpid()}-{index}-{i}" for i in range(args.wave)]
        for name in names:
            pool.claim(name)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len([n for n in names if n in pool.ready]) < len(names):
            time.sleep(0.1)
        uids = pool.claim_uids(names)
        kinds = pool.launch_types()
        latencies = [pool.ready[n] - pool.created[n] for n in names if n in pool.ready]
        warm = sum(1 for n in names if kinds.get(uids[n]) == "warm")
        entry = {"wave": index + 1, "at_s": round(wave_start, 1), "ready_before": before, **summarize(latencies),
                 "warm": warm, "cold": len(names) - warm, "not_ready": len(names) - len(latencies)}
        log(f"demand-pool: {mode} wave {index + 1}: {entry['n']}/{len(names)} ready, warm {warm}, "
            f"p50 {entry['p50']}s p95 {entry['p95']}s max {entry['max']}s (pool had {before} ready)")
        while time.monotonic() - start < wave_start + args.hold:
            time.sleep(0.2)
        pool.release(names)
        waves.append(entry)
    last_release = time.monotonic() - start
    while time.monotonic() - start < last_release + args.scale_down + 45:
        time.sleep(0.5)
    done.set()
    sampler.join(5)
    for entry in waves:
        entry["pool_back_s"] = back_after(samples, entry["at_s"], entry["ready_before"])
    peak = max((s["spec"] for s in samples), default=0)
    return {"waves": waves, "samples": samples, "pool_peak": peak,
            "peak_reached_s": first_at(samples, 0.0, "spec", peak),
            "back_to_baseline_s": (first_at(samples, last_release, "spec", args.baseline)
                                   if mode == "keda" else None),
            "last_release_s": round(last_release, 1)}


# --------------------------------------------------------------------------------- report

def plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = report["modes"]
    fig, axes = plt.subplots(1, len(modes) + 1, figsize=(5 * (len(modes) + 1), 3.8))
    for ax, (mode, data) in zip(axes, modes.items()):
        t = [s["t"] for s in data["samples"]]
        ax.step(t, [s["spec"] for s in data["samples"]], where="post", label="pool size (spec)")
        ax.step(t, [s["ready"] for s in data["samples"]], where="post", label="warm ready")
        ax.step(t, [s["in_use"] for s in data["samples"]], where="post", label="in use", linestyle=":")
        for wave in data["waves"]:
            ax.axvspan(wave["at_s"], wave["at_s"] + report["config"]["hold"], alpha=0.12, color="grey")
        ax.set_title(f"{mode}: pool over time (grey: bursts held)")
        ax.set_xlabel("s")
        ax.legend(fontsize=7)
    ax = axes[-1]
    width = 0.35
    for offset, (mode, data) in enumerate(modes.items()):
        xs = [w["wave"] + (offset - 0.5) * width for w in data["waves"]]
        ax.bar(xs, [w["max"] or 0 for w in data["waves"]], width, alpha=0.35, label=f"{mode} max")
        ax.bar(xs, [w["p50"] or 0 for w in data["waves"]], width, label=f"{mode} p50")
    ax.set_xticks([1, 2], ["burst 1", "burst 2"])
    ax.set_ylabel("claim -> Ready (s)")
    ax.set_title("claim latency per burst")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def human(report: Mapping[str, Any]) -> str:
    lines = [f"demand-pool on {report['stack']} (baseline {report['config']['baseline']}, bursts of "
             f"{report['config']['wave']}, max {report['config']['max']}; load {report['load_average']})"]
    for mode, data in report["modes"].items():
        for w in data["waves"]:
            lines.append(f"  {mode:5} burst {w['wave']}: warm {w['warm']}/{w['n']}, claim->Ready p50 {w['p50']}s "
                         f"p95 {w['p95']}s max {w['max']}s; pool back to {w['ready_before']} ready after "
                         f"{w['pool_back_s']}s")
        extra = f", back to {report['config']['baseline']} {data['back_to_baseline_s']}s after the last release" \
            if data.get("back_to_baseline_s") is not None else ""
        lines.append(f"  {mode:5} pool peak {data['pool_peak']} (at {data['peak_reached_s']}s){extra}; "
                     f"up {data.get('up_seconds')}s")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="gvisor")
    parser.add_argument("--context", default=None, help="kube context (default the stack's)")
    parser.add_argument("--baseline", type=int, default=2)
    parser.add_argument("--wave", type=int, default=4)
    parser.add_argument("--max", type=int, default=6)
    parser.add_argument("--hold", type=int, default=25)
    parser.add_argument("--gap", type=int, default=60)
    parser.add_argument("--scale-down", type=int, default=60)
    parser.add_argument("--modes", default="fixed,keda")
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "demand-pool.json")
    parser.add_argument("--png", type=Path, default=REPO / "docs" / "demand-pool.png")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from --json")
    args = parser.parse_args(argv)
    if args.plot_only:
        report = json.loads(args.json.read_text())
        plot(report, args.png)
        print(human(report))
        return 0
    namespace, pool_name, context = deployed(args.stack)
    report: dict[str, Any] = {"stack": args.stack, "load_average": [round(x, 2) for x in os.getloadavg()],
                              "config": {k: getattr(args, k) for k in ("baseline", "wave", "max", "hold", "gap",
                                                                        "scale_down")}, "modes": {}}
    pool = Pool(args.context or context, namespace, pool_name)
    pool.watch_claims()
    try:
        for mode in args.modes.split(","):
            up_seconds = stack_up(args.stack, mode_config(mode, args))
            pool.wait_settled(args.baseline)
            data = run_mode(pool, mode, args)
            data["up_seconds"] = up_seconds
            report["modes"][mode] = data
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))
    finally:
        pool.stop()
        stack_up(args.stack, ["warmPoolAutoscaling=off", "warmPoolReplicas=", "warmPoolMinReplicas=",
                              "warmPoolMaxReplicas=", "warmPoolScaleDownSeconds=", "installKeda=false"])
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.json.write_text(json.dumps(report, indent=1))
    plot(report, args.png)
    print(human(report))
    print(f"demand-pool: wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
