"""``bench STACK -n N``: N sequential claims from a warm pool sized N, then N claims with the
pool at 0 (cold starts from the template); claim→Ready and first-exec latency, as JSON and a
PNG plot. The pool's replica count is patched for the run and restored afterwards (the
Pulumi-declared value), so the stack's state is unchanged when bench ends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from automation.kube import Cluster
from automation.report import SCHEMA_VERSION
from automation.smoke import StackTarget, python_command
from automation.stats import summarize
from automation.tunnel import PortForwardTunnel
from sandbox_iac import constants

FIRST_EXEC_COMMAND = python_command("print('ready')")


def claim_sample(sdk: Any, target: StackTarget, timeout: int = 300) -> dict[str, Any]:
    """One claim: seconds to Ready, seconds of the first command, whether it was warm
    (adopted from the pool: the sandbox name differs from the claim name); the claim is deleted."""
    sample: dict[str, Any] = {"claim": "", "ok": False, "warm": None, "claim_ready_seconds": None,
                              "first_exec_seconds": None, "error": None}
    started = time.monotonic()
    sandbox = None
    try:
        sandbox = sdk.create_sandbox(target.warm_pool, namespace=target.namespace, sandbox_ready_timeout=timeout)
        sample["claim_ready_seconds"] = round(time.monotonic() - started, 4)
        sample["claim"] = sandbox.claim_name
        sample["warm"] = sandbox.sandbox_id != sandbox.claim_name
        exec_started = time.monotonic()
        result = sandbox.commands.run(FIRST_EXEC_COMMAND)
        sample["first_exec_seconds"] = round(time.monotonic() - exec_started, 4)
        sample["ok"] = result.exit_code == 0 and result.stdout == "ready\n"
        if not sample["ok"]:
            sample["error"] = f"first exec returned {result.exit_code}: {result.stdout!r} {result.stderr!r}"
    except Exception as error:  # noqa: BLE001 - a failed claim is a data point, not the end of the run
        sample["error"] = f"{type(error).__name__}: {error}"
    finally:
        if sandbox is not None:
            try:
                sdk.delete_sandbox(sandbox.claim_name, namespace=target.namespace)
            except Exception as error:  # noqa: BLE001
                sample["error"] = (sample["error"] or "") + f" (delete failed: {error})"
    return sample


def section(samples: Sequence[dict[str, Any]], pool_replicas: int, prepare_seconds: float) -> dict[str, Any]:
    """Statistics of one mode (only successful samples count toward the latency figures)."""
    ok = [s for s in samples if s["ok"]]
    return {
        "pool_replicas": pool_replicas,
        "prepare_seconds": round(prepare_seconds, 3),
        "ok": len(ok),
        "failed": len(samples) - len(ok),
        "warm_adopted": sum(1 for s in samples if s["warm"]),
        "claim_ready": summarize([s["claim_ready_seconds"] for s in ok]),
        "first_exec": summarize([s["first_exec_seconds"] for s in ok]),
        "samples": list(samples),
    }


def measure_modes(target: StackTarget, cluster: Cluster, sdk: Any, n: int,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Warm then cold claims through ``sdk``; the pool's original replica count is restored in
    any case (errors, Ctrl-C). Returns the report without timestamps of the overall run."""
    original = int((cluster.warm_pool(target.namespace, target.warm_pool).get("spec") or {}).get("replicas") or 0)
    report: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "stack": target.stack, "runtime": target.runtime_class,
                              "n": n, "original_pool_replicas": original}
    try:
        for mode, replicas in (("warm", n), ("cold", 0)):
            log(f"bench: {mode}: pool {target.warm_pool} -> {replicas} replicas")
            cluster.set_pool_replicas(target.namespace, target.warm_pool, replicas)
            prepared = cluster.wait_pool_ready(target.namespace, target.warm_pool, replicas)
            samples = []
            for index in range(n):
                sample = claim_sample(sdk, target)
                samples.append(sample)
                log(f"bench: {mode} {index + 1}/{n}: ready {sample['claim_ready_seconds']}s, first exec "
                    f"{sample['first_exec_seconds']}s, warm={sample['warm']}"
                    + (f", error: {sample['error']}" if sample["error"] else ""))
            report[mode] = section(samples, replicas, prepared)
    finally:
        log(f"bench: restoring pool {target.warm_pool} to {original} replicas")
        cluster.set_pool_replicas(target.namespace, target.warm_pool, original)
        if original:
            cluster.wait_pool_ready(target.namespace, target.warm_pool, original)
    return report


def run_bench(target: StackTarget, cluster: Cluster, kube_args: Sequence[str], n: int,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Open the tunnel, connect the official SDK with the bearer token and measure both modes."""
    from k8s_agent_sandbox import SandboxClient
    from k8s_agent_sandbox.models import SandboxDirectConnectionConfig

    started = time.time()
    with PortForwardTunnel(kube_args) as tunnel:
        connection = SandboxDirectConnectionConfig(
            api_url=tunnel.url, server_port=constants.SANDBOX_PORT,
            extra_headers={"Authorization": f"Bearer {target.router_token}"})
        with SandboxClient(connection_config=connection, api_client=cluster.client) as sdk:
            report = measure_modes(target, cluster, sdk, n, log)
    report["started_at"], report["finished_at"] = started, time.time()
    return report


def bench_summary(report: dict[str, Any]) -> str:
    lines = [f"bench {report['stack']} ({report.get('runtime')}), n={report['n']}:"]
    for mode in ("warm", "cold"):
        data = report.get(mode)
        if not data:
            continue
        ready, first = data["claim_ready"], data["first_exec"]
        lines.append(f"  {mode:4} (pool {data['pool_replicas']}): claim->Ready p50 {ready['p50']}s p95 {ready['p95']}s "
                     f"max {ready['max']}s | first exec p50 {first['p50']}s p95 {first['p95']}s max {first['max']}s | "
                     f"ok {data['ok']}/{data['ok'] + data['failed']}, adopted warm {data['warm_adopted']}")
    return "\n".join(lines)


def plot_bench(report: dict[str, Any], path: Path) -> Optional[Path]:
    """Box plots with the individual samples of claim→Ready and first exec, warm vs cold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("warm", "cold") if report.get(m)]
    if not modes:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for axis, (metric, title) in zip(axes, (("claim_ready_seconds", "claim → Ready"),
                                            ("first_exec_seconds", "first exec"))):
        data = [[s[metric] for s in report[m]["samples"] if s["ok"]] for m in modes]
        axis.boxplot([d or [0.0] for d in data], tick_labels=modes, showfliers=False)
        for position, values in enumerate(data, start=1):
            axis.scatter([position + (i % 5 - 2) * 0.03 for i in range(len(values))], values, s=12, alpha=0.7)
        axis.set_title(f"{title} (n={report['n']})")
        axis.set_ylabel("seconds")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"agent-sandbox {report['stack']} ({report.get('runtime')})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
