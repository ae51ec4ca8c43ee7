#!/usr/bin/env python3
"""Execute latency of the sandbox runtime: p50/p99 of POST /execute, plus GET / for reference.

Starts ``python -m sandbox_runtime`` on a free loopback port with a temporary base dir (or uses
``--url`` for a runtime that is already running), then drives it over keep-alive connections:
sequentially (concurrency 1) and with ``--concurrency`` client threads. Prints one JSON document
and a one-line summary. ``--huge-command`` also times GET / while a 4 MiB one-word command is
posted (security review, issue 11: it used to hold the event loop for minutes; now it is split in
a worker thread and refused with 422).

    .venv/bin/python bench/runtime_exec.py [--requests 300] [--concurrency 10] [--command true] [--huge-command]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

RUNTIME_SOURCE = Path(__file__).resolve().parents[1] / "images" / "runtime"


@contextmanager
def local_runtime() -> Iterator[str]:
    """Run the runtime from this checkout on a free loopback port; yield its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="runtime-bench-") as base:
        env = {**os.environ, "PYTHONPATH": str(RUNTIME_SOURCE), "SANDBOX_HOST": "127.0.0.1",
               "SANDBOX_PORT": str(port), "SANDBOX_BASE_DIR": base, "SANDBOX_LOG_LEVEL": "warning"}
        server = subprocess.Popen([sys.executable, "-m", "sandbox_runtime"], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if _call(http.client.HTTPConnection("127.0.0.1", port, timeout=5), "GET", "/", None) == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("runtime did not start")
                    time.sleep(0.05)
            yield url
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)


def _call(connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None) -> int:
    connection.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    response = connection.getresponse()
    response.read()
    return response.status


def measure(url: str, method: str, path: str, body: bytes | None, total: int, concurrency: int) -> dict[str, float]:
    """Send ``total`` requests from ``concurrency`` threads; return latency percentiles and rate."""
    target = urllib.parse.urlsplit(url)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    per_worker = max(1, total // concurrency)

    def worker() -> None:
        nonlocal errors
        connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=60)
        mine: list[float] = []
        failed = 0
        for _ in range(per_worker):
            started = time.perf_counter()
            try:
                ok = _call(connection, method, path, body) == 200
            except OSError:
                ok = False
                connection.close()
            mine.append(time.perf_counter() - started)
            failed += 0 if ok else 1
        connection.close()
        with lock:
            latencies.extend(mine)
            errors += failed

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "concurrency": concurrency,
        "errors": errors,
        "req_per_s": round(len(ordered) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def health_during_huge_command(url: str) -> dict[str, float]:
    """GET / latencies (ms) while one /execute with a 4 MiB single word is being answered."""
    target = urllib.parse.urlsplit(url)
    body = json.dumps({"command": "echo " + "a" * (4 * 1024 * 1024 - 64)}).encode()
    outcome: dict[str, float] = {}

    def post() -> None:
        started = time.perf_counter()
        outcome["execute_status"] = _call(http.client.HTTPConnection(target.hostname, target.port or 80, timeout=600),
                                          "POST", "/execute", body)
        outcome["execute_ms"] = round((time.perf_counter() - started) * 1000, 1)

    worker = threading.Thread(target=post)
    worker.start()
    latencies = []
    while worker.is_alive() or not latencies:
        started = time.perf_counter()
        _call(http.client.HTTPConnection(target.hostname, target.port or 80, timeout=600), "GET", "/", None)
        latencies.append(time.perf_counter() - started)
        time.sleep(0.005)
    worker.join()
    ordered = sorted(latencies)
    return {**outcome, "health_probes": len(ordered), "health_p50_ms": round(statistics.median(ordered) * 1000, 3),
            "health_max_ms": round(ordered[-1] * 1000, 3)}


def main() -> int:
    """Parse arguments, run the measurements, print JSON and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an already running runtime (default: start one from this checkout)")
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement (default 300)")
    parser.add_argument("--concurrency", type=int, default=10, help="client threads for the concurrent run (default 10)")
    parser.add_argument("--command", default="true", help="command to execute (default: true)")
    parser.add_argument("--huge-command", action="store_true", help="also time GET / while a 4 MiB command is posted")
    args = parser.parse_args()
    execute_body = json.dumps({"command": args.command}).encode()

    def run(url: str) -> dict[str, object]:
        measure(url, "POST", "/execute", execute_body, 20, 1)  # warm-up
        return {
            "command": args.command,
            "execute_c1": measure(url, "POST", "/execute", execute_body, args.requests, 1),
            f"execute_c{args.concurrency}": measure(url, "POST", "/execute", execute_body, args.requests, args.concurrency),
            "health_c1": measure(url, "GET", "/", None, args.requests, 1),
            **({"huge_command": health_during_huge_command(url)} if args.huge_command else {}),
        }

    if args.url:
        report = run(args.url)
    else:
        with local_runtime() as url:
            report = run(url)
    print(json.dumps(report, indent=2))
    sequential, concurrent = report["execute_c1"], report[f"execute_c{args.concurrency}"]
    assert isinstance(sequential, dict) and isinstance(concurrent, dict)
    print(
        f"runtime execute '{args.command}': c=1 p50 {sequential['p50_ms']} ms p99 {sequential['p99_ms']} ms; "
        f"c={args.concurrency} p50 {concurrent['p50_ms']} ms p99 {concurrent['p99_ms']} ms {concurrent['req_per_s']} req/s; "
        f"health c=1 p50 {report['health_c1']['p50_ms']} ms; errors {sequential['errors'] + concurrent['errors']}"
    )
    huge = report.get("huge_command")
    if isinstance(huge, dict):
        print(f"4 MiB command: {huge['execute_status']:.0f} in {huge['execute_ms']} ms; GET / meanwhile "
              f"p50 {huge['health_p50_ms']} ms max {huge['health_max_ms']} ms ({huge['health_probes']:.0f} probes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
