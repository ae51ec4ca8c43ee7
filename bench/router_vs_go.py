"""Router peer benchmark: our router (compiled, images/router-go) vs our Python router
(images/router) vs upstream's Go ``sandbox-router`` vs direct-to-runtime, in one run, on
loopback, against the same upstream.

Owns the side-by-side run and its report. It starts one runtime (images/runtime, the upstream
every path reaches), both of our routers (ROUTER_RESOLVER=dns with the loopback test mode
router_bench.py uses: the caller's X-Sandbox-Pod-IP=127.0.0.1 is the target) and the upstream
Go router (sigs.k8s.io/agent-sandbox v0.5.6, built by go_router.py, ``--allow-loopback-pod-ip``:
the same header takes the same path, no DNS, no cluster). wrk (a separate process) drives
``GET /`` of the runtime at each connection count, the four paths interleaved in a rotating
order per round so drift on a shared machine hits each alike; medians over rounds are reported.
Then sequential ``POST /execute`` every way.

Reported per path and level: req/s, p50/p90/p99 (wrk), router CPU microseconds per request
(/proc, the load-independent number), each of our routers over direct and over upstream's
throughput, ours (compiled) over Python, added p50 over direct; the load average before/after
every run. JSON (default out/bench/router_vs_go.json) and a PNG (latency and throughput vs
connections, 1…200).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import go_router  # noqa: E402
from router_bench import REPO, TOKEN, ensure_wrk, execute_latency, free_port, run_wrk, start, stop  # noqa: E402

PATHS = ("direct", "ours", "python", "go")
OURS = ("ours", "python")  # our routers: the compiled one (the default) and the Python one
DEFAULT_CONNECTIONS = (1, 2, 5, 10, 20, 50, 100, 200)
HEADLINE_CONNECTIONS = (1, 50)
SANDBOX_ID, SANDBOX_NAMESPACE = "bench", "default"
SCHEMA = "router_vs_go/2"
ROUTER_GO_BUILD = REPO / "images" / "router-go" / "build.sh"


@functools.cache
def deployed_gomaxprocs() -> str:
    """GOMAXPROCS as the router Deployment sets it under its default CPU limit (read once)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from agent_sandbox_pulumi.components.router import gomaxprocs_for
    from agent_sandbox_pulumi.sandbox_iac.config import ROUTER_RESOURCES

    return gomaxprocs_for(ROUTER_RESOURCES["limits"]["cpu"]) or ""


def our_router_env(port: int) -> dict[str, str]:
    """Our router in its local-test mode: dns resolution (the caller's pod IP is the target),
    loopback pod IPs allowed, the bench token, warnings only (no access log), and GOMAXPROCS as
    the Deployment sets it (the Python router ignores it)."""
    env = {"ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": str(port), "ROUTER_AUTH_TOKEN": TOKEN,
           "ROUTER_RESOLVER": "dns", "ROUTER_ALLOW_LOOPBACK_POD_IP": "true", "ROUTER_LOG_LEVEL": "WARNING"}
    procs = deployed_gomaxprocs()
    return {**env, "GOMAXPROCS": procs} if procs else env


def compiled_router() -> str:
    """Our compiled router's binary (built, or found in its cache, by images/router-go/build.sh)."""
    result = subprocess.run([str(ROUTER_GO_BUILD)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"images/router-go/build.sh failed: {result.stderr.strip()[-800:]}")
    return result.stdout.strip().splitlines()[-1]


def routing_headers(runtime_port: int) -> dict[str, str]:
    """The same request headers for both routers (the Go router, in allow-all mode, ignores the
    token; sending it keeps the requests byte-identical)."""
    return {"Authorization": f"Bearer {TOKEN}", "X-Sandbox-ID": SANDBOX_ID, "X-Sandbox-Namespace": SANDBOX_NAMESPACE,
            "X-Sandbox-Port": str(runtime_port), "X-Sandbox-Pod-IP": "127.0.0.1"}


def start_binary(argv: Sequence[str], health: str, timeout: float = 30,
                 env: Optional[Mapping[str, str]] = None) -> subprocess.Popen:
    """Start a binary (with ``env`` added to this environment) and wait until ``health`` answers 200."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-800:] if proc.stderr else ""
            raise SystemExit(f"{argv[0]} exited with {proc.returncode} during startup: {err}")
        try:
            with urllib.request.urlopen(health, timeout=1) as response:
                if response.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise SystemExit(f"{argv[0]} did not answer {health} within {timeout:.0f}s")


def rotation(names: Sequence[str], round_index: int) -> list[str]:
    """The order of the paths in a round: rotated each round, so no path always runs first
    (right after a pause) or last."""
    shift = round_index % len(names)
    return list(names[shift:]) + list(names[:shift])


def _median(values: Iterable[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summarize_level(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One path at one connection count over its rounds: medians of every figure (a median per
    figure, not the run with the median req/s, so one noisy round moves nothing) and the sums of
    errors."""
    figures = ("rps", "p50_ms", "p90_ms", "p99_ms", "router_cpu_us_per_request", "runtime_cpu_us_per_request")
    out: dict[str, Any] = {name: _median(r.get(name) for r in runs) for name in figures}
    out["rounds"] = len(runs)
    out["requests"] = sum(int(r.get("requests") or 0) for r in runs)
    out["non_2xx"] = sum(int(r.get("non_2xx") or 0) for r in runs)
    out["socket_errors"] = [r["socket_errors"] for r in runs if r.get("socket_errors")]
    return out


def paired_ratio(numerator: Sequence[Mapping[str, Any]], denominator: Sequence[Mapping[str, Any]]) -> Optional[float]:
    """Median over rounds of numerator/denominator req/s, each ratio taken within one round
    (the two runs were seconds apart, so they saw the same machine)."""
    ratios = [a["rps"] / b["rps"] for a, b in zip(numerator, denominator) if b.get("rps")]
    return round(statistics.median(ratios), 3) if ratios else None


def compare(runs: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """Per connection count: each path's summary, the ratios and the added p50 over direct."""
    levels = []
    for connections in sorted(runs["direct"]):
        level: dict[str, Any] = {"connections": connections}
        for name in PATHS:
            level[name] = summarize_level(runs[name][connections])
        for name in (*OURS, "go"):
            level[f"{name}_over_direct"] = paired_ratio(runs[name][connections], runs["direct"][connections])
        for name in OURS:
            level[f"{name}_over_go"] = paired_ratio(runs[name][connections], runs["go"][connections])
        level["ours_over_python"] = paired_ratio(runs["ours"][connections], runs["python"][connections])
        for name in (*OURS, "go"):
            ours, direct = level[name]["p50_ms"], level["direct"]["p50_ms"]
            level[f"{name}_added_p50_ms"] = round(ours - direct, 3) if ours is not None and direct is not None else None
        levels.append(level)
    return levels


def headline(levels: Sequence[Mapping[str, Any]], wanted: Sequence[int] = HEADLINE_CONNECTIONS) -> dict[str, Any]:
    """The numbers the issue tracks, at c=1 and c=50 (whichever were measured)."""
    out: dict[str, Any] = {}
    for level in levels:
        if level["connections"] in wanted:
            out[f"c{level['connections']}"] = {
                **{f"{name}_rps": level[name]["rps"] for name in PATHS},
                **{f"{name}_p50_ms": level[name]["p50_ms"] for name in PATHS},
                **{f"{name}_p99_ms": level[name]["p99_ms"] for name in PATHS},
                **{f"{name}_over_direct": level[f"{name}_over_direct"] for name in OURS},
                **{f"{name}_over_go": level[f"{name}_over_go"] for name in OURS},
                "ours_over_python": level["ours_over_python"],
                **{f"{name}_added_p50_ms": level[f"{name}_added_p50_ms"] for name in (*OURS, "go")},
                **{f"{name}_cpu_us_per_request": level[name]["router_cpu_us_per_request"] for name in (*OURS, "go")},
            }
    return out


def targets(levels: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
    """Issue 14's router targets (recorded, never asserted by tests)."""
    by_c = {level["connections"]: level for level in levels}
    met: dict[str, bool] = {}
    if 50 in by_c and by_c[50]["ours_over_direct"] is not None:
        met["ours_over_direct_c50_ge_0.8"] = by_c[50]["ours_over_direct"] >= 0.8
    if 50 in by_c and by_c[50]["ours_over_go"] is not None:
        met["ours_over_go_c50_ge_3"] = by_c[50]["ours_over_go"] >= 3.0
    if 1 in by_c and by_c[1]["ours_added_p50_ms"] is not None:
        met["ours_added_p50_c1_le_0.1ms"] = by_c[1]["ours_added_p50_ms"] <= 0.1
    return met


def validate(report: Any) -> list[str]:
    """Schema problems of a router_vs_go report (empty list: valid)."""
    errors: list[str] = []
    if not isinstance(report, dict):
        return ["report should be an object"]
    for key, kind in (("schema", str), ("levels", list), ("headline", dict), ("load_average_before", list),
                      ("load_average_after", list), ("go_router", dict), ("execute", dict), ("cpus", int)):
        if not isinstance(report.get(key), kind):
            errors.append(f"report.{key} should be {kind.__name__}")
    if report.get("schema") != SCHEMA:
        errors.append(f"report.schema should be {SCHEMA!r}")
    for index, level in enumerate(report.get("levels") or []):
        where = f"report.levels[{index}]"
        if not isinstance(level, dict) or not isinstance(level.get("connections"), int):
            errors.append(f"{where}.connections should be int")
            continue
        for name in PATHS:
            side = level.get(name)
            if not isinstance(side, dict):
                errors.append(f"{where}.{name} is missing")
                continue
            for figure in ("rps", "p50_ms", "p99_ms"):
                if not isinstance(side.get(figure), (int, float)) or isinstance(side.get(figure), bool):
                    errors.append(f"{where}.{name}.{figure} should be a number")
        for ratio in ("ours_over_direct", "ours_over_go", "python_over_direct", "python_over_go", "go_over_direct",
                      "ours_over_python"):
            if not isinstance(level.get(ratio), (int, float, type(None))):
                errors.append(f"{where}.{ratio} should be a number or null")
    return errors


def plot(report: Mapping[str, Any], path: Path) -> Path:
    """Latency (p50 solid, p99 dashed) and throughput vs connections, one line per path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    xs = [level["connections"] for level in levels]
    labels = {"direct": "direct to runtime", "ours": "our router (compiled)", "python": "our Python router",
              "go": "upstream Go sandbox-router v0.5.6"}
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name in PATHS:
        line, = latency.plot(xs, [level[name]["p50_ms"] for level in levels], marker="o", label=f"{labels[name]} p50")
        latency.plot(xs, [level[name]["p99_ms"] for level in levels], marker="x", linestyle="--",
                     color=line.get_color(), label=f"{labels[name]} p99")
        throughput.plot(xs, [level[name]["rps"] for level in levels], marker="o", color=line.get_color(),
                        label=labels[name])
    for axis, title, unit in ((latency, "latency vs connections", "ms"), (throughput, "throughput", "req/s")):
        axis.set_xscale("log")
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.set_xlabel("concurrent connections (wrk)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    latency.set_yscale("log")
    before, after = report["load_average_before"], report["load_average_after"]
    figure.suptitle(f"router peers on loopback, GET / of the runtime ({report['cpus']} CPUs, load avg "
                    f"{before[0]:.1f} → {after[0]:.1f})", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def print_summary(report: Mapping[str, Any]) -> None:
    before, after = report["load_average_before"], report["load_average_after"]
    print(f"router peers ({report['rounds']} round(s) x {report['seconds_per_run']}s per run, medians; load avg "
          f"{before[0]:.2f} before, {after[0]:.2f} after, {report['cpus']} CPUs); ours = compiled, py = our Python "
          f"router, go = upstream's")

    def fmt(value: Optional[float], spec: str) -> str:
        return format(value, spec) if value is not None else "-"

    print(f"{'conns':>5} {'direct':>7} {'ours':>7} {'py':>7} {'go':>7} {'ours/dir':>8} {'ours/go':>7} {'py/go':>6} "
          f"{'p50 dir/ours/py/go ms':>27} {'added p50 ours/py':>17} {'cpu us/req ours/py/go':>22}")
    for level in report["levels"]:
        p50 = "/".join(fmt(level[name]["p50_ms"], ".3f") for name in PATHS)
        cpu = "/".join(fmt(level[name]["router_cpu_us_per_request"], ".0f") for name in ("ours", "python", "go"))
        added = "/".join(fmt(level[f"{name}_added_p50_ms"], ".3f") for name in OURS)
        print(f"{level['connections']:>5} " + " ".join(fmt(level[name]["rps"], "7.0f") for name in PATHS) +
              f" {fmt(level['ours_over_direct'], '8.2f')} {fmt(level['ours_over_go'], '7.2f')} "
              f"{fmt(level['python_over_go'], '6.2f')} {p50:>27} {added:>17} {cpu:>22}")
    for name in PATHS:
        e = report["execute"][name]
        print(f"execute `true` {name:>6}: p50 {e['p50_ms']:.2f} ms, p99 {e['p99_ms']:.2f} ms (n={e['count']})")
    if report["targets_met"]:
        print("targets: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in report["targets_met"].items()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    parser.add_argument("--connections", default=",".join(map(str, DEFAULT_CONNECTIONS)),
                        help="comma-separated connection counts (the curve; c=1 and c=50 are the headline)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (medians reported)")
    parser.add_argument("--execute-count", type=int, default=200, help="sequential /execute calls per path")
    out_dir = REPO / os.environ.get("OUT_DIR", "out") / "bench"
    parser.add_argument("--out", default=str(out_dir / "router_vs_go.json"))
    parser.add_argument("--plot", default="", help="PNG path (default: the JSON path with .png)")
    parser.add_argument("--router-dir", default=str(REPO / "images" / "router"),
                        help="the Python router tree measured as 'python' (e.g. a git worktree of an older "
                             "commit's images/router, for a before/after with the same peers in each run)")
    args = parser.parse_args(argv)
    levels = sorted({int(c) for c in args.connections.split(",") if c.strip()})
    if not levels or levels[0] < 1:
        parser.error("--connections needs positive integers")
    ensure_wrk()
    binary = go_router.ensure_router()
    compiled = compiled_router()

    work = Path(tempfile.mkdtemp(prefix="router-vs-go-"))
    procs: list[subprocess.Popen] = []
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {c: [] for c in levels} for name in PATHS}
    run_loads: list[dict[str, Any]] = []
    try:
        runtime_port, ours_port, python_port = free_port(), free_port(), free_port()
        go_ports = [free_port() for _ in range(3)]
        runtime = start("sandbox_runtime", REPO / "images" / "runtime",
                        {"SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": str(runtime_port), "SANDBOX_BASE_DIR": str(work),
                         "SANDBOX_LOG_LEVEL": "warning", "SANDBOX_ACCESS_LOG": "false"},
                        f"http://127.0.0.1:{runtime_port}/")
        procs.append(runtime)
        ours = start_binary([compiled], f"http://127.0.0.1:{ours_port}/healthz", env=our_router_env(ours_port))
        procs.append(ours)
        python = start("sandbox_router", Path(args.router_dir), our_router_env(python_port),
                       f"http://127.0.0.1:{python_port}/healthz")
        procs.append(python)
        go_argv = go_router.router_command(binary, *go_ports)
        go = start_binary(go_argv, f"http://127.0.0.1:{go_ports[0]}/healthz")
        procs.append(go)
        headers = routing_headers(runtime_port)
        targets_of = {"direct": (f"http://127.0.0.1:{runtime_port}/", {}, {"runtime": runtime.pid}),
                      "ours": (f"http://127.0.0.1:{ours_port}/", headers, {"runtime": runtime.pid, "router": ours.pid}),
                      "python": (f"http://127.0.0.1:{python_port}/", headers,
                                 {"runtime": runtime.pid, "router": python.pid}),
                      "go": (f"http://127.0.0.1:{go_ports[0]}/", headers, {"runtime": runtime.pid, "router": go.pid})}
        for name, (url, hdrs, _) in targets_of.items():  # warm-up, and proof that every path really proxies
            result = run_wrk(url, 10, 1, hdrs)
            if result["non_2xx"] or not result["requests"]:
                raise SystemExit(f"path {name} does not answer 2xx: {result}")
        load_before = os.getloadavg()
        for round_index in range(args.rounds):
            for connections in levels:
                for name in rotation(PATHS, round_index + connections):
                    url, hdrs, watch = targets_of[name]
                    load = os.getloadavg()[0]
                    result = run_wrk(url, connections, args.seconds, hdrs, watch)
                    result["load_1m_before"] = round(load, 2)
                    runs[name][connections].append(result)
                    run_loads.append({"path": name, "connections": connections, "round": round_index,
                                      "load_1m_before": round(load, 2)})
        execute = {"direct": execute_latency(runtime_port, {}, args.execute_count),
                   "ours": execute_latency(ours_port, headers, args.execute_count),
                   "python": execute_latency(python_port, headers, args.execute_count),
                   "go": execute_latency(go_ports[0], headers, args.execute_count)}
        load_after = os.getloadavg()
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)

    compared = compare(runs)
    report = {
        "schema": SCHEMA, "benchmark": "router_vs_go", "endpoint": "GET / (runtime health)", "tool": "wrk 4.x",
        "seconds_per_run": args.seconds, "rounds": args.rounds, "cpus": os.cpu_count() or 1,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "go_router": {"module": go_router.MODULE, "version": go_router.VERSION, "package": go_router.MAIN_PACKAGE,
                      "binary": str(binary), "argv": go_argv[1:]},
        "ours": {"env": {k: v for k, v in our_router_env(ours_port).items() if k != "ROUTER_AUTH_TOKEN"},
                 "binary": compiled, "source": "images/router-go"},
        "python": {"env": {k: v for k, v in our_router_env(python_port).items() if k != "ROUTER_AUTH_TOKEN"},
                   "router_dir": str(args.router_dir)},
        "levels": [{**level, "all_rounds": {name: runs[name][level["connections"]] for name in PATHS}}
                   for level in compared],
        "headline": headline(compared), "execute": execute, "targets_met": targets(compared),
        "runs": run_loads, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    problems = validate(report)
    if problems:
        raise SystemExit(f"router_vs_go report does not match its schema: {problems}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    png = plot(report, Path(args.plot) if args.plot else out.with_suffix(".png"))
    print_summary(report)
    print(f"json: {out}\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
