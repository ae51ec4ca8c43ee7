"""Controller profiles side by side: the same claim bench under each ``controllerProfile``, in one
run, alternating (A B A B ...) so that drift of a shared machine hits both alike.

What it owns: the rounds (``up`` with the profile, then ``bench``), the copies of each round's
``bench.json`` and the comparison (``out/bench/controller_profiles.json`` and a table on stdout):
warm claim→Ready and first command per profile, pooled over its rounds, with the ratio to the
first profile. The stack ends on the profile it started with (``--restore``, default: the first).

    python bench/controller_profiles.py gvisor [--profiles release,latency] [--rounds 2] [-n 20]
        [--concurrency 1,4] [--flags '{"sandbox-write-behind-window": "250ms"}']

``--flags`` adds a third candidate ("custom"): the first profile plus those flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def run(command: Sequence[str], env: Optional[dict[str, str]] = None, check: bool = True) -> int:
    print("$ " + " ".join(command), flush=True)
    return subprocess.run(list(command), cwd=REPO, env={**os.environ, **(env or {})}, check=check).returncode


def deploy(stack: str, profile: str, flags: str) -> float:
    started = time.monotonic()
    run([PY, "-m", "automation", "up", stack, "--skip-prerequisites", "--config", f"controllerProfile={profile}",
         "--config", f"controllerFlags={flags}"])
    return time.monotonic() - started


def pooled(reports: Sequence[dict[str, Any]], mode: str, key: str) -> dict[str, Optional[float]]:
    """p50/p95 of a summary key pooled over rounds: the median of the rounds' p50s and p95s."""
    p50 = [((r.get(mode) or {}).get(key) or {}).get("p50") for r in reports]
    p95 = [((r.get(mode) or {}).get(key) or {}).get("p95") for r in reports]
    p50 = [v for v in p50 if v is not None]
    p95 = [v for v in p95 if v is not None]
    return {"p50": statistics.median(p50) if p50 else None, "p95": statistics.median(p95) if p95 else None,
            "rounds_p50": p50}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--profiles", default="release,latency")
    parser.add_argument("--flags", default="", help="JSON object: a 'custom' candidate = first profile + these flags")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--restore", default=None)
    args = parser.parse_args(argv)
    candidates = [(p, p, "") for p in args.profiles.split(",")]
    if args.flags:
        candidates.append(("custom", candidates[0][1], args.flags))
    out = REPO / "out" / "bench" / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in candidates}
    deploy_seconds: dict[str, list[float]] = {name: [] for name, _, _ in candidates}
    try:
        for round_index in range(args.rounds):
            for name, profile, flags in candidates:
                deploy_seconds[name].append(round(deploy(args.stack, profile, flags), 1))
                report_path = REPO / "out" / args.stack / "bench.json"
                before = report_path.stat().st_mtime if report_path.exists() else 0.0
                # bench exits 1 when a claim failed; its report is still written, with the failures in it
                code = run([PY, "-m", "automation", "bench", args.stack, "-n", str(args.n)],
                           env={"BENCH_CONCURRENCY": args.concurrency}, check=False)
                if not report_path.exists() or report_path.stat().st_mtime <= before:
                    raise SystemExit(f"bench wrote no report (exit {code})")
                copy = out / f"{name}-{round_index}.json"
                shutil.copy(REPO / "out" / args.stack / "bench.json", copy)
                results[name].append(json.loads(copy.read_text()))
    finally:
        restore = args.restore or candidates[0][1]
        deploy(args.stack, restore, "")
    comparison = {}
    for name, reports in results.items():
        comparison[name] = {mode: {key: pooled(reports, mode, key) for key in ("claim_ready", "first_exec", "total")}
                            for mode in ("warm", "cold")}
        comparison[name]["deploy_seconds"] = deploy_seconds[name]
        comparison[name]["load"] = [(r.get("machine") or {}).get("load_before") for r in reports]
    report = {"schema": "controller-profiles/1", "stack": args.stack, "rounds": args.rounds, "n": args.n,
              "concurrency": args.concurrency, "candidates": {n: {"profile": p, "flags": f} for n, p, f in candidates},
              "comparison": comparison}
    (REPO / "out" / "bench" / "controller_profiles.json").write_text(json.dumps(report, indent=2))
    base = comparison[candidates[0][0]]
    print(f"\ncontroller profiles, {args.rounds} alternating rounds of n={args.n} (pooled: median of the rounds)")
    for name in comparison:
        row = comparison[name]
        cells = []
        for mode, key in (("warm", "claim_ready"), ("warm", "first_exec"), ("warm", "total"), ("cold", "claim_ready")):
            value, ref = row[mode][key]["p50"], base[mode][key]["p50"]
            ratio = f" ({value / ref:.2f}x)" if value and ref else ""
            cells.append(f"{mode} {key} p50 {value if value is None else round(value, 3)}s{ratio}")
        print(f"  {name:8} " + " | ".join(cells))
    print(f"wrote {REPO / 'out' / 'bench' / 'controller_profiles.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
