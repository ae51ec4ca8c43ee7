"""Router resolver benchmark: sandbox-only `watch` resolution vs the legacy `dns` path, side by side.

Issue 11 item 1 made the router resolve every target from a watch cache of sandbox pods instead
of trusting the caller's X-Sandbox-Pod-IP. This measures what that costs. In one run it starts the
runtime, a loopback Kubernetes API double (tests/component/sdk_harness.FakeKubeAPI, HTTPS) serving
one sandbox pod whose address is the runtime, and two routers from the same code: one with
ROUTER_RESOLVER=dns (the caller's pod IP is the target, the previous behaviour) and one with
ROUTER_RESOLVER=watch, plus a second identical dns router whose distance from the first is the
noise floor of the run. Optionally (--baseline DIR, a copy of an older sandbox_router package) a
third router from the previous code runs too. wrk drives `GET /` of the runtime through each
router at the given connection counts, rounds interleaved with a rotating order so drift on a
shared machine hits every variant alike (dns and watch always back to back).

Reported per variant and level: req/s, p50/p99, router CPU µs per request (read from /proc). The
cost of watch resolution is 1 - watch/dns, taken per round (paired runs) and then the median; the
target is <= 10 % throughput at c=50. On a shared, oversubscribed machine single wrk runs vary by
±40 %, so the bench also measures the router's own per-request work in-process, without sockets:
a ClientConnection and a pooled UpstreamConnection on in-memory transports serve the same
keep-alive request in dns and in watch mode (interleaved child processes, CPU time, minimum of the
samples), which gives
the extra microseconds watch resolution adds per request, and their share of the router's
measured CPU per request at c=50 - the throughput it costs when the router is the bottleneck.
JSON goes to out/bench/router_resolver.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "tests" / "component"))

from router_bench import TOKEN, ensure_wrk, free_port, run_wrk, start, stop  # noqa: E402
from sdk_harness import FakeKubeAPI, sandbox_pod  # noqa: E402

SANDBOX, NAMESPACE = "bench", "default"


class NullTransport:
    """The least an asyncio transport must do for the router's protocols: swallow writes."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.written += len(chunk)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("10.1.2.3", 40000) if name == "peername" else default


def inprocess_sample(router_dir: str, resolver: str, requests: int) -> float:
    """CPU microseconds the router code in `router_dir` spends per keep-alive GET (run in a child
    process, so that an older copy of the package can be measured the same way)."""
    import asyncio

    sys.path.insert(0, router_dir)
    from sandbox_router.app import RouterApp
    from sandbox_router.proxy import ClientConnection
    from sandbox_router.settings import RouterSettings
    from sandbox_router.upstream import UpstreamConnection

    port = 9000
    values = {b"x-sandbox-id": SANDBOX.encode(), b"x-sandbox-namespace": NAMESPACE.encode(),
              b"x-sandbox-port": str(port).encode(), b"x-sandbox-pod-ip": b"127.0.0.1"}
    request = (f"GET / HTTP/1.1\r\nHost: router\r\nAuthorization: Bearer {TOKEN}\r\nX-Sandbox-ID: {SANDBOX}\r\n"
               f"X-Sandbox-Namespace: {NAMESPACE}\r\nX-Sandbox-Port: {port}\r\nX-Sandbox-Pod-IP: 127.0.0.1\r\n"
               f"User-Agent: bench\r\nAccept: */*\r\n\r\n").encode()
    response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 55\r\n\r\n"
                b'{"status":"ok","message":"Sandbox Runtime is active."}\n')
    loop = asyncio.new_event_loop()
    try:
        try:
            settings = RouterSettings(auth_token=TOKEN, allow_loopback_pod_ip=True, resolver=resolver,
                                      sandbox_namespaces=(NAMESPACE,), sandbox_ports=(port,))
        except TypeError:  # a router from before ROUTER_RESOLVER existed: its only path is dns
            settings = RouterSettings(auth_token=TOKEN, allow_loopback_pod_ip=True)
        app = RouterApp(settings, loop)
        sandboxes = getattr(app, "sandboxes", None)
        if sandboxes is not None:
            sandboxes.replace(NAMESPACE, [sandbox_pod(SANDBOX, NAMESPACE, "127.0.0.1")])
        key = app.resolver.resolve(values).pool_key
        upstream = UpstreamConnection(app.pool, key)
        upstream.connection_made(NullTransport())  # type: ignore[arg-type]
        app.pool.release(upstream, app.now)
        client = ClientConnection(app)
        client.connection_made(NullTransport())  # type: ignore[arg-type]
        for _ in range(200):  # warm-up (caches, memoised validation)
            client.data_received(request)
            upstream.data_received(response)
        started = time.process_time()
        for _ in range(requests):
            client.data_received(request)
            upstream.data_received(response)
        spent = time.process_time() - started
        if client.requests or client.closing or app.pool.take_idle(key, app.now) is not upstream:
            raise SystemExit("the in-process request loop did not complete its requests")
        return spent * 1e6 / requests
    finally:
        loop.close()


def inprocess_cost(variants: dict[str, tuple[str, str]], requests: int, rounds: int) -> dict[str, Any]:
    """Median CPU µs per request of each variant (name -> (router dir, resolver)), interleaved."""
    import subprocess

    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for index in range(rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:
            router_dir, resolver = variants[name]
            out = subprocess.run([sys.executable, __file__, "--inprocess-sample", f"{router_dir}::{resolver}",
                                  "--inprocess-requests", str(requests)], capture_output=True, text=True, check=True)
            samples[name].append(float(out.stdout.strip().splitlines()[-1]))
    # The minimum is the estimate least disturbed by other processes (noise only ever adds time).
    result: dict[str, Any] = {"requests_per_sample": requests, "rounds": rounds, "statistic": "min"}
    for name, values in samples.items():
        result[f"{name}_us"] = round(min(values), 2)
        result[f"{name}_median_us"] = round(statistics.median(values), 2)
    result["added_us"] = round(result["watch_us"] - result["dns_us"], 2)
    result["samples"] = {k: [round(v, 2) for v in vs] for k, vs in samples.items()}
    return result


def router_env(port: int, runtime_port: int, extra: dict[str, str]) -> dict[str, str]:
    """Environment of one router under test."""
    return {"ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": str(port), "ROUTER_AUTH_TOKEN": TOKEN,
            "ROUTER_ALLOW_LOOPBACK_POD_IP": "true", "ROUTER_LOG_LEVEL": "WARNING",
            "ROUTER_SANDBOX_PORTS": str(runtime_port), **extra}


def median_of(values: list[float]) -> float:
    """Median, rounded for the report."""
    return round(statistics.median(values), 3)


def main() -> int:
    """Run the benchmark, print the comparison and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6, help="duration of each wrk run")
    parser.add_argument("--connections", default="1,50", help="comma-separated connection counts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    parser.add_argument("--inprocess-requests", type=int, default=20000,
                        help="requests per in-process sample (0 skips the in-process measurement)")
    parser.add_argument("--inprocess-sample", default="", help=argparse.SUPPRESS)  # child: DIR::RESOLVER
    parser.add_argument("--baseline", default="", help="directory holding an older sandbox_router package "
                                                       "to run as a third variant ('before')")
    parser.add_argument("--out", default=str(REPO / os.environ.get("OUT_DIR", "out") / "bench"
                                             / "router_resolver.json"))
    args = parser.parse_args()
    if args.inprocess_sample:
        router_dir, resolver = args.inprocess_sample.split("::")
        print(f"{inprocess_sample(router_dir, resolver, args.inprocess_requests):.3f}")
        return 0
    ensure_wrk()

    inprocess = None
    if args.inprocess_requests:
        router_dir = str(REPO / "images" / "router")
        inprocess_variants = {"dns": (router_dir, "dns"), "watch": (router_dir, "watch")}
        if args.baseline:
            inprocess_variants["before"] = (args.baseline, "dns")
        inprocess = inprocess_cost(inprocess_variants, args.inprocess_requests, 11)
    work = Path(tempfile.mkdtemp(prefix="router-resolver-bench-"))
    procs: list[Any] = []
    kube = None
    try:
        runtime_port = free_port()
        runtime = start("sandbox_runtime", REPO / "images" / "runtime",
                        {"SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": str(runtime_port),
                         "SANDBOX_BASE_DIR": str(work), "SANDBOX_LOG_LEVEL": "warning", "SANDBOX_ACCESS_LOG": "false"},
                        f"http://127.0.0.1:{runtime_port}/")
        procs.append(runtime)
        kube = FakeKubeAPI(work / "kube", namespaces=(NAMESPACE,)).start()
        kube.put_pod(sandbox_pod(SANDBOX, NAMESPACE, "127.0.0.1"))

        variants: dict[str, tuple[Path, dict[str, str]]] = {
            "dns": (REPO / "images" / "router", {"ROUTER_RESOLVER": "dns"}),
            # a second, identical dns router: how far two equal routers drift apart on this machine
            "dns-2": (REPO / "images" / "router", {"ROUTER_RESOLVER": "dns"}),
            "watch": (REPO / "images" / "router", {"ROUTER_RESOLVER": "watch", "ROUTER_SANDBOX_NAMESPACES": NAMESPACE,
                                                   **kube.router_env()}),
        }
        if args.baseline:
            variants["before"] = (Path(args.baseline), {})
        routers: dict[str, tuple[int, Any]] = {}
        for name, (code_dir, extra) in variants.items():
            port = free_port()
            proc = start("sandbox_router", code_dir, router_env(port, runtime_port, extra),
                         f"http://127.0.0.1:{port}/healthz")
            procs.append(proc)
            routers[name] = (port, proc)

        headers = {"Authorization": f"Bearer {TOKEN}", "X-Sandbox-ID": SANDBOX, "X-Sandbox-Namespace": NAMESPACE,
                   "X-Sandbox-Port": str(runtime_port), "X-Sandbox-Pod-IP": "127.0.0.1"}
        for name, (port, _) in routers.items():  # warm-up, and proof every variant really proxies
            result = run_wrk(f"http://127.0.0.1:{port}/", 10, 1, headers)
            if result["non_2xx"] or not result["requests"]:
                raise SystemExit(f"router variant {name} does not proxy: {result}")

        levels = [int(c) for c in args.connections.split(",")]
        names = list(routers)
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {n: {c: [] for c in levels} for n in names}
        load_before = os.getloadavg()
        for round_index in range(args.rounds):
            # dns and watch always run back to back (the pair the target compares), alternating
            # which goes first; the optional previous code goes before or after the pair.
            pair = ["dns", "watch"] if round_index % 2 == 0 else ["watch", "dns"]
            others = [n for n in names if n not in pair]
            order = pair + others if round_index % 4 < 2 else others + pair
            for connections in levels:
                for name in order:
                    port, proc = routers[name]
                    runs[name][connections].append(run_wrk(
                        f"http://127.0.0.1:{port}/", connections, args.seconds, headers,
                        {"router": proc.pid, "runtime": runtime.pid}))
        load_after = os.getloadavg()
    finally:
        for proc in reversed(procs):
            stop(proc)
        if kube is not None:
            kube.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary: dict[str, Any] = {}
    for connections in levels:
        level: dict[str, Any] = {}
        for name in names:
            rs = runs[name][connections]
            level[name] = {"rps": median_of([r["rps"] for r in rs]), "p50_ms": median_of([r["p50_ms"] for r in rs]),
                           "p99_ms": median_of([r["p99_ms"] for r in rs]),
                           "router_cpu_us_per_request": median_of([r["router_cpu_us_per_request"] for r in rs]),
                           "non_2xx": sum(r["non_2xx"] for r in rs)}
        paired = [1 - w["rps"] / d["rps"] for w, d in zip(runs["watch"][connections], runs["dns"][connections])
                  if d["rps"]]
        level["watch_cost_vs_dns"] = round(statistics.median(paired), 4) if paired else None
        floor = [abs(1 - a["rps"] / b["rps"]) for a, b in zip(runs["dns-2"][connections], runs["dns"][connections])
                 if b["rps"]]
        level["noise_floor_dns_vs_dns"] = round(statistics.median(floor), 4) if floor else None
        if "before" in names:
            paired_before = [1 - w["rps"] / b["rps"] for w, b in
                             zip(runs["watch"][connections], runs["before"][connections]) if b["rps"]]
            level["watch_cost_vs_before"] = round(statistics.median(paired_before), 4) if paired_before else None
        summary[str(connections)] = level
    targets = {}
    if "50" in summary:
        targets["watch_costs_le_10pct_throughput_c50"] = summary["50"]["watch_cost_vs_dns"] <= 0.10
        if inprocess is not None:
            share = inprocess["added_us"] / summary["50"]["dns"]["router_cpu_us_per_request"]
            inprocess["share_of_router_cpu_c50"] = round(share, 4)
            targets["inprocess_added_cpu_le_10pct_of_router_cpu_c50"] = share <= 0.10
    report = {"benchmark": "router_resolver", "endpoint": "GET / (runtime health)", "tool": "wrk 4.x",
              "seconds_per_run": args.seconds, "rounds": args.rounds, "cpus": os.cpu_count(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in load_after],
              "levels": summary, "inprocess": inprocess, "runs": runs, "targets_met": targets,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"router resolver bench ({args.rounds} interleaved round(s) x {args.seconds}s per run, medians; "
          f"load avg before {load_before[0]:.2f} after {load_after[0]:.2f} on {os.cpu_count()} CPUs)")
    print(f"{'conns':>5} {'variant':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'router CPU us/req':>18}")
    for connections in levels:
        level = summary[str(connections)]
        for name in names:
            v = level[name]
            print(f"{connections:>5} {name:>8} {v['rps']:>9.0f} {v['p50_ms']:>8.3f} {v['p99_ms']:>8.3f} "
                  f"{v['router_cpu_us_per_request']:>18.1f}")
        line = (f"c={connections}: watch costs {level['watch_cost_vs_dns'] * 100:+.1f} % throughput vs dns "
                f"(two identical dns routers differ by {level['noise_floor_dns_vs_dns'] * 100:.1f} %)")
        if "watch_cost_vs_before" in level:
            line += f", {level['watch_cost_vs_before'] * 100:+.1f} % vs the previous code"
        print(line + " (median of paired rounds; negative = faster)")
    if inprocess is not None:
        line = (f"in-process router work per keep-alive GET (min of {inprocess['rounds']}): "
                f"dns {inprocess['dns_us']:.2f} us, watch {inprocess['watch_us']:.2f} us")
        if "before_us" in inprocess:
            line += f", previous code {inprocess['before_us']:.2f} us"
        line += f" (watch {inprocess['added_us']:+.2f} us vs dns"
        if "share_of_router_cpu_c50" in inprocess:
            line += f" = {inprocess['share_of_router_cpu_c50'] * 100:.1f} % of the router's CPU per request at c=50"
        print(line + ")")
    print("targets: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in targets.items()))
    print(f"json: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
