"""Stack configs side by side: the same claim bench under each candidate config, in one run,
alternating (A B A B ...) so that drift of a shared machine hits all candidates alike.

What it owns: the rounds (``up`` with the candidate's ``--config`` values, then ``bench``), the
copies of each round's ``bench.json`` (``out/bench/<name>/``), the comparison (warm and cold
claim→Ready, first command and total, p50/p95 pooled over the rounds, with ratios to the first
candidate) as JSON and a table on stdout. The stack ends as it began: the keys the candidates
set are unset again (``--config KEY=``), unless ``--restore NAME`` ends on a candidate.

    python bench/config_compare.py gvisor --name sandbox-cpu-limit \\
        --candidate cpu-500m 'sandboxResources={"limits": {"cpu": "500m"}}' \\
        --candidate cpu-2 'sandboxResources={"limits": {"cpu": "2"}}' [--rounds 2] [-n 10]
        [--concurrency 1]

``bench/controller_profiles.py`` is this with ``controllerProfile``/``controllerFlags`` candidates.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
SCHEMA = "config-compare/1"
MEASURES = (("warm", "claim_ready"), ("warm", "first_exec"), ("warm", "total"),
            ("cold", "claim_ready"), ("cold", "first_exec"), ("cold", "total"))


@dataclass(frozen=True)
class Candidate:
    """One config under test: a name for the tables and the ``--config`` values it deploys."""

    name: str
    config: Mapping[str, str]


def parse_candidate(words: Sequence[str]) -> Candidate:
    """``["cpu-2", "sandboxResources={...}", ...]`` -> Candidate (a name, then KEY=VALUE words)."""
    name, *pairs = words
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--candidate {name}: {pair!r} is not KEY=VALUE")
        config[key] = value
    return Candidate(name, config)


def run(command: Sequence[str], env: Optional[dict[str, str]] = None, check: bool = True) -> int:
    print("$ " + " ".join(command), flush=True)
    return subprocess.run(list(command), cwd=REPO, env={**os.environ, **(env or {})}, check=check).returncode


def deploy(stack: str, config: Mapping[str, str]) -> float:
    """``up`` with these ``--config`` values (an empty value unsets the key); returns seconds."""
    started = time.monotonic()
    command = [PY, "-m", "automation", "up", stack, "--skip-prerequisites"]
    for key, value in config.items():
        command += ["--config", f"{key}={value}"]
    run(command)
    return time.monotonic() - started


def pooled(reports: Sequence[Mapping[str, Any]], mode: str, key: str) -> dict[str, Any]:
    """p50/p95 of a summary key pooled over rounds: the median of the rounds' p50s and p95s."""
    p50 = [((r.get(mode) or {}).get(key) or {}).get("p50") for r in reports]
    p95 = [((r.get(mode) or {}).get(key) or {}).get("p95") for r in reports]
    p50 = [v for v in p50 if v is not None]
    p95 = [v for v in p95 if v is not None]
    return {"p50": statistics.median(p50) if p50 else None, "p95": statistics.median(p95) if p95 else None,
            "rounds_p50": p50}


def comparison(results: Mapping[str, Sequence[Mapping[str, Any]]],
               deploy_seconds: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Per candidate: every measure pooled over its rounds, its deploy times and machine loads."""
    table: dict[str, Any] = {}
    for name, reports in results.items():
        table[name] = {mode: {key: pooled(reports, mode, key) for m, key in MEASURES if m == mode}
                       for mode in ("warm", "cold")}
        table[name]["deploy_seconds"] = list(deploy_seconds.get(name, []))
        table[name]["load"] = [(r.get("machine") or {}).get("load_before") for r in reports]
        table[name]["sequence"] = sorted({(r.get("warm") or {}).get("sequence", "back-to-back") for r in reports})
    return table


def summary_lines(title: str, table: Mapping[str, Any]) -> list[str]:
    """The human summary: p50 of each measure per candidate, with the ratio to the first one."""
    names = list(table)
    base = table[names[0]] if names else {}
    lines = [title]
    for name in names:
        cells = []
        for mode, key in MEASURES:
            value, ref = table[name][mode][key]["p50"], base[mode][key]["p50"]
            ratio = f" ({value / ref:.2f}x)" if value and ref else ""
            cells.append(f"{mode} {key} {'-' if value is None else round(value, 3)}s{ratio}")
        lines.append(f"  {name:12} " + " | ".join(cells))
    return lines


def compare(stack: str, candidates: Sequence[Candidate], *, report_name: str, rounds: int = 2, n: int = 10,
            concurrency: str = "1", restore: Optional[Candidate] = None) -> dict[str, Any]:
    """Alternating rounds of up + bench per candidate; writes ``out/bench/<report_name>.json``
    and returns the report. The stack is left as ``restore`` (default: the keys unset)."""
    out = REPO / "out" / "bench" / report_name
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {c.name: [] for c in candidates}
    deploy_seconds: dict[str, list[float]] = {c.name: [] for c in candidates}
    bench_json = REPO / "out" / stack / "bench.json"
    try:
        for round_index in range(rounds):
            for candidate in candidates:
                deploy_seconds[candidate.name].append(round(deploy(stack, candidate.config), 1))
                before = bench_json.stat().st_mtime if bench_json.exists() else 0.0
                # bench exits 1 when a claim failed; its report is still written, with the failures in it
                code = run([PY, "-m", "automation", "bench", stack, "-n", str(n)],
                           env={"BENCH_CONCURRENCY": concurrency}, check=False)
                if not bench_json.exists() or bench_json.stat().st_mtime <= before:
                    raise SystemExit(f"bench wrote no report (exit {code})")
                copy = out / f"{candidate.name}-{round_index}.json"
                shutil.copy(bench_json, copy)
                results[candidate.name].append(json.loads(copy.read_text()))
    finally:
        keys = {key for c in candidates for key in c.config}
        deploy(stack, dict(restore.config) if restore else {key: "" for key in sorted(keys)})
    report = {"schema": SCHEMA, "name": report_name, "stack": stack, "rounds": rounds, "n": n,
              "concurrency": concurrency, "candidates": {c.name: {"config": dict(c.config)} for c in candidates},
              "comparison": comparison(results, deploy_seconds)}
    (REPO / "out" / "bench" / f"{report_name}.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--name", required=True, help="report name: out/bench/<name>.json")
    parser.add_argument("--candidate", action="append", nargs="+", required=True, metavar="NAME KEY=VALUE",
                        help="a candidate: its name, then the --config values it deploys (repeat per candidate)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--concurrency", default="1")
    parser.add_argument("--restore", default=None, help="end on this candidate (default: unset the keys they set)")
    args = parser.parse_args(argv)
    candidates = [parse_candidate(words) for words in args.candidate]
    by_name = {c.name: c for c in candidates}
    if args.restore and args.restore not in by_name:
        raise SystemExit(f"--restore {args.restore!r} is none of the candidates {sorted(by_name)}")
    report = compare(args.stack, candidates, report_name=args.name, rounds=args.rounds, n=args.n,
                     concurrency=args.concurrency, restore=by_name.get(args.restore) if args.restore else None)
    print("\n" + "\n".join(summary_lines(
        f"{args.name}: {args.rounds} alternating rounds of n={args.n} (pooled: median of the rounds)",
        report["comparison"])))
    print(f"wrote {REPO / 'out' / 'bench' / (args.name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
