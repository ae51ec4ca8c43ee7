"""Router benchmark: direct-to-runtime vs through-router, side by side in one run.

Starts the runtime (images/runtime, `python -m sandbox_runtime`) and the router
(images/router, `python -m sandbox_router`) on loopback, drives `GET /` with wrk (a separate
process) at 1, 10 and 50 connections, alternating direct and routed runs, then measures
`POST /execute` latency both ways. Prints a summary and writes JSON (default
out/bench/router.json).

Targets (issue 3): routed req/s >= 0.5 x direct at c=50 with p99 <= 20 ms; the router adds
<= 0.3 ms p50 at c=1. The machine is shared, so the load average is recorded with the numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789abcdef0123456789"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(module: str, cwd: Path, env: dict[str, str], health: str) -> subprocess.Popen:
    """Start a server module and wait until its health URL answers."""
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=cwd,
                            env={**os.environ, **env, "PYTHONPATH": str(cwd)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = urllib.parse.urlsplit(health)
    host, port, path = parts.hostname, parts.port, parts.path or "/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{module} exited with {proc.returncode} during startup")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=1)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit(f"{module} did not answer {health} within 30s")


def stop(proc: subprocess.Popen) -> None:
    """Terminate a process this script started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"unparseable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def cpu_seconds(pid: int) -> float:
    """User+system CPU time a process has used so far (from /proc; clock ticks -> seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, connections: int, seconds: int, headers: dict[str, str],
            watch: dict[str, int] | None = None) -> dict[str, Any]:
    """One wrk run; returns req/s, p50/p90/p99 in ms, error counts and, for each watched
    process, the CPU microseconds it spent per request (robust against a loaded machine)."""
    watch = watch or {}
    cpu_before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    threads = 1 if connections == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = {"connections": connections,
                              "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = round(_ms(match.group(1)), 3) if match else None
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["socket_errors"] = socket_errors.group(1).strip() if socket_errors else ""
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    for name, pid in watch.items():
        spent = cpu_seconds(pid) - cpu_before[name]
        result[f"{name}_cpu_us_per_request"] = round(spent * 1e6 / max(result["requests"], 1), 1)
    return result


def execute_latency(port: int, headers: dict[str, str], count: int) -> dict[str, float]:
    """Sequential POST /execute {"command": "true"} on one keep-alive connection."""
    body = json.dumps({"command": "true"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    samples = []
    for index in range(count + 3):
        started = time.perf_counter()
        conn.request("POST", "/execute", body=body, headers={**headers, "Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200 or json.loads(payload).get("exit_code") != 0:
            raise SystemExit(f"execute failed: {response.status} {payload[:200]!r}")
        if index >= 3:  # warm-up
            samples.append(elapsed)
    conn.close()
    samples.sort()
    return {"count": count, "p50_ms": round(statistics.median(samples), 3),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
            "mean_ms": round(statistics.fmean(samples), 3)}


def ensure_wrk() -> None:
    """wrk comes from Debian; install it when missing (the make target does the same)."""
    if shutil.which("wrk"):
        return
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def main() -> int:
    """Run the benchmark and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="duration of each wrk run")
    parser.add_argument("--connections", default="1,10,50", help="comma-separated connection counts")
    parser.add_argument("--rounds", type=int, default=2, help="alternating direct/router rounds (median kept)")
    parser.add_argument("--execute-count", type=int, default=200, help="sequential /execute calls per side")
    parser.add_argument("--out", default=str(REPO / os.environ.get("OUT_DIR", "out") / "bench" / "router.json"))
    args = parser.parse_args()
    ensure_wrk()

    base_dir = Path(tempfile.mkdtemp(prefix="router-bench-"))
    runtime_port, router_port = free_port(), free_port()
    runtime = start("sandbox_runtime", REPO / "images" / "runtime",
                    {"SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": str(runtime_port),
                     "SANDBOX_BASE_DIR": str(base_dir), "SANDBOX_LOG_LEVEL": "warning",
                     "SANDBOX_ACCESS_LOG": "false"},
                    f"http://127.0.0.1:{runtime_port}/")
    router = start("sandbox_router", REPO / "images" / "router",
                   {"ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": str(router_port), "ROUTER_AUTH_TOKEN": TOKEN,
                    "ROUTER_ALLOW_LOOPBACK_POD_IP": "true", "ROUTER_LOG_LEVEL": "WARNING",
                    "ROUTER_RESOLVER": "dns"},
                   f"http://127.0.0.1:{router_port}/healthz")
    routing = {"Authorization": f"Bearer {TOKEN}", "X-Sandbox-ID": "bench", "X-Sandbox-Namespace": "default",
               "X-Sandbox-Port": str(runtime_port), "X-Sandbox-Pod-IP": "127.0.0.1"}
    direct_url, router_url = f"http://127.0.0.1:{runtime_port}/", f"http://127.0.0.1:{router_port}/"
    load_before = os.getloadavg()
    rounds: dict[str, dict[int, list[dict[str, Any]]]] = {"direct": {}, "router": {}}
    try:
        levels = [int(c) for c in args.connections.split(",")]
        run_wrk(direct_url, 10, 1, {})  # warm-up both paths
        run_wrk(router_url, 10, 1, routing)
        for _ in range(args.rounds):
            for connections in levels:
                rounds["direct"].setdefault(connections, []).append(
                    run_wrk(direct_url, connections, args.seconds, {}, {"runtime": runtime.pid}))
                rounds["router"].setdefault(connections, []).append(
                    run_wrk(router_url, connections, args.seconds, routing,
                            {"runtime": runtime.pid, "router": router.pid}))
        execute = {"direct": execute_latency(runtime_port, {}, args.execute_count),
                   "router": execute_latency(router_port, routing, args.execute_count)}
    finally:
        stop(router)
        stop(runtime)
        shutil.rmtree(base_dir, ignore_errors=True)
    load_after = os.getloadavg()

    def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]

    levels_out = []
    for connections in sorted(rounds["direct"]):
        direct = median_run(rounds["direct"][connections])
        routed = median_run(rounds["router"][connections])
        levels_out.append({
            "connections": connections, "direct": direct, "router": routed,
            "ratio": round(routed["rps"] / direct["rps"], 3) if direct["rps"] else None,
            "added_p50_ms": round(routed["p50_ms"] - direct["p50_ms"], 3),
            "all_rounds": {"direct": rounds["direct"][connections], "router": rounds["router"][connections]},
        })
    by_c = {level["connections"]: level for level in levels_out}
    targets = {}
    if 50 in by_c:
        targets["ratio_c50_ge_0.5"] = by_c[50]["ratio"] >= 0.5
        targets["router_p99_c50_le_20ms"] = by_c[50]["router"]["p99_ms"] <= 20
    if 1 in by_c:
        targets["added_p50_c1_le_0.3ms"] = by_c[1]["added_p50_ms"] <= 0.3
    report = {
        "benchmark": "router", "endpoint": "GET / (runtime health)", "tool": "wrk 4.x",
        "seconds_per_run": args.seconds, "rounds": args.rounds, "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "levels": levels_out, "execute": execute, "targets_met": targets,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"router bench ({args.rounds} round(s) x {args.seconds}s per run, median shown; "
          f"load avg before {load_before[0]:.2f} after {load_after[0]:.2f} on {os.cpu_count()} CPUs)")
    print(f"{'conns':>5} {'direct req/s':>13} {'router req/s':>13} {'ratio':>6} "
          f"{'direct p50/p99 ms':>18} {'router p50/p99 ms':>18} {'added p50 ms':>13}")
    for level in levels_out:
        d, r = level["direct"], level["router"]
        print(f"{level['connections']:>5} {d['rps']:>13.0f} {r['rps']:>13.0f} {level['ratio']:>6.2f} "
              f"{d['p50_ms']:>8.3f}/{d['p99_ms']:<9.3f} {r['p50_ms']:>8.3f}/{r['p99_ms']:<9.3f} "
              f"{level['added_p50_ms']:>13.3f}")
    for level in levels_out:
        r = level["router"]
        print(f"CPU per request at c={level['connections']}: router {r.get('router_cpu_us_per_request')} us, "
              f"runtime {r.get('runtime_cpu_us_per_request')} us (direct run: runtime "
              f"{level['direct'].get('runtime_cpu_us_per_request')} us)")
    for side in ("direct", "router"):
        e = execute[side]
        print(f"execute `true` {side:>6}: p50 {e['p50_ms']:.2f} ms, p99 {e['p99_ms']:.2f} ms (n={e['count']})")
    print("targets: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in targets.items()))
    print(f"json: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
