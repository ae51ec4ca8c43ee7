"""What an idle gVisor sandbox costs: the CPU of ``runsc do sleep`` sandboxes side by side, one
per runsc binary given, in one run on this host (no cluster, no network: ``--network=none``).

Why: a warm pool is N sandboxes that wait. Unpatched systrap wakes every 400 us to re-decide its
fast path even when nothing runs (see e2e/toolchain/cluster/patch_gvisor.py); this measures that
tax per binary, and after the sandboxes ran a short burst of syscalls, that they go quiet again.

    python bench/gvisor_idle.py --runsc old=/path/to/runsc --runsc new=/path/to/runsc [--seconds 15]

Per binary: CPU ms per second of the sandbox's processes while idle, and their context switches
per second. JSON to ``out/bench/gvisor_idle.json`` and a summary. Needs root (runsc do).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from router_bench import cpu_seconds  # noqa: E402
# Busy for a moment (the fast path gets trained), then idle for as long as the run lasts.
WORKLOAD = "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; exec sleep 3600"


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def usage(pids: Sequence[int]) -> tuple[float, int]:
    """CPU seconds and context switches (all threads) of these processes so far."""
    cpu, switches = 0.0, 0
    for pid in pids:
        try:
            cpu += cpu_seconds(pid)
            for task in os.listdir(f"/proc/{pid}/task"):
                status = Path(f"/proc/{pid}/task/{task}/status").read_text()
                for key in ("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"):
                    switches += int(status.split(key, 1)[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return cpu, switches


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runsc", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after start before measuring")
    parser.add_argument("--out", default=str(REPO / "out" / "bench" / "gvisor_idle.json"))
    args = parser.parse_args(argv)
    binaries = dict(item.split("=", 1) for item in args.runsc)
    for name, path in binaries.items():
        if not os.access(path, os.X_OK):
            raise SystemExit(f"--runsc {name}={path}: not an executable runsc")
    roots, running = {}, {}
    load_before = list(os.getloadavg())
    try:
        for name, path in binaries.items():
            roots[name] = tempfile.mkdtemp(prefix=f"gvisor-idle-{name}-")
            running[name] = subprocess.Popen(
                [path, "--root", roots[name], "--network=none", "do", "sh", "-c", WORKLOAD],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(args.settle)
        for name, process in running.items():
            if process.poll() is not None:
                raise SystemExit(f"runsc {name} exited early: {process.stderr.read().decode()[-500:]}")
        trees = {name: descendants(process.pid) for name, process in running.items()}
        before = {name: usage(pids) for name, pids in trees.items()}
        time.sleep(args.seconds)
        after = {name: usage(pids) for name, pids in trees.items()}
    finally:
        for process in running.values():
            process.terminate()
        for process in running.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)
    result = {name: {"cpu_ms_per_s": round((after[name][0] - before[name][0]) / args.seconds * 1000, 1),
                     "switches_per_s": round((after[name][1] - before[name][1]) / args.seconds),
                     "processes": len(trees[name]), "runsc": binaries[name]} for name in binaries}
    report = {"schema": "gvisor-idle/1", "seconds": args.seconds, "load_before": load_before, "sandboxes": result,
              "load_after": list(os.getloadavg())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for name, row in result.items():
        print(f"{name:8} idle sandbox: {row['cpu_ms_per_s']} ms CPU per s, {row['switches_per_s']} context switches per s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
