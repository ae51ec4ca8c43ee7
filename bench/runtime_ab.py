"""The runtime server before and after a change, side by side in one run.

``python bench/runtime_ab.py [--baseline REV]`` takes the runtime package (images/runtime/
sandbox_runtime) at the git revision REV (default HEAD) and from the working tree, and measures
both on loopback in alternating rounds, so drift of a shared machine hits both alike:

- start: seconds from ``exec`` to the server's imports being done (``import sandbox_runtime.app``
  with uvicorn, uvloop and httptools), median of the rounds' runs;
- ``GET /`` with wrk at 1 and 50 connections: req/s, p50 and the server's CPU microseconds per
  request (from /proc, robust against a loaded machine);
- ``POST /execute {"command": "true"}`` on one connection: p50.

Both trees run on this interpreter (the project's venv), so a baseline that needs packages the
working tree dropped must find them installed; the error says which. Writes JSON (default
out/bench/runtime_ab.json) and prints a table with after/before ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_bench import REPO, ensure_wrk, execute_latency, free_port, run_wrk, start, stop  # noqa: E402

SCHEMA = "runtime_ab/1"
PACKAGE = "images/runtime/sandbox_runtime"
IMPORTS = "import sandbox_runtime.app, uvicorn, uvloop, httptools"


def baseline_tree(revision: str, into: Path) -> Path:
    """The runtime package at ``revision`` unpacked under ``into``; returns the PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, PACKAGE], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {revision}: git archive failed: {archive.stderr.decode().strip()}")
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "images" / "runtime"


def start_seconds(tree: Path) -> float:
    """Seconds from exec to the server's imports being done, in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); {IMPORTS}; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-P", "-c", code], env={**os.environ, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"the runtime in {tree} does not import here: {last} (install what that revision's "
                         "images/runtime/requirements.txt lists into this venv)")
    return float(done.stdout.strip())


def measure(tree: Path, seconds: int, base_dir: Path) -> dict[str, Any]:
    """One round for one tree: start, then wrk at c=1 and c=50, then execute latency."""
    port = free_port()
    env = {"SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": str(port), "SANDBOX_BASE_DIR": str(base_dir)}
    url = f"http://127.0.0.1:{port}/"
    starts = [start_seconds(tree) for _ in range(3)]
    proc = start("sandbox_runtime", tree, env, url)
    try:
        levels = {f"c{c}": run_wrk(url, c, seconds, {}, {"runtime": proc.pid}) for c in (1, 50)}
        return {"start_s": statistics.median(starts), **levels, "execute": execute_latency(port, {}, 200)}
    finally:
        stop(proc)


def pooled(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the rounds of the figures the table shows."""
    def med(get: Any) -> float:
        return round(statistics.median(get(r) for r in rounds), 4)

    return {
        "start_s": med(lambda r: r["start_s"]),
        "c1_rps": med(lambda r: r["c1"]["rps"]), "c1_p50_ms": med(lambda r: r["c1"]["p50_ms"]),
        "c50_rps": med(lambda r: r["c50"]["rps"]),
        "c50_cpu_us": med(lambda r: r["c50"]["runtime_cpu_us_per_request"]),
        "execute_p50_ms": med(lambda r: r["execute"]["p50_ms"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision of the 'before' runtime (default HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "runtime_ab.json")
    args = parser.parse_args()
    ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="runtime-ab-") as scratch:
        root = Path(scratch)
        trees = {"before": baseline_tree(args.baseline, root / "before"), "after": REPO / "images" / "runtime"}
        (root / "app").mkdir()
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        load = [os.getloadavg()[0]]
        for number in range(args.rounds):
            for name, tree in trees.items():
                rounds[name].append(measure(tree, args.seconds, root / "app"))
                print(f"round {number + 1}/{args.rounds} {name}: {json.dumps(pooled(rounds[name][-1:]))}", flush=True)
            load.append(os.getloadavg()[0])
    summary = {name: pooled(data) for name, data in rounds.items()}
    ratios = {key: round(summary["after"][key] / summary["before"][key], 3) for key in summary["after"]
              if summary["before"][key]}
    report = {"schema": SCHEMA, "baseline": args.baseline, "rounds": args.rounds, "seconds": args.seconds,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_1m": load,
              "summary": summary, "after_over_before": ratios, "raw": rounds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'figure':<16}{'before':>12}{'after':>12}{'after/before':>14}")
    for key in summary["after"]:
        print(f"{key:<16}{summary['before'][key]:>12}{summary['after'][key]:>12}{ratios.get(key, '—'):>14}")
    print(f"load 1m during the run: {load}; report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
