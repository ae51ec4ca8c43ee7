"""The floor under the router's added latency: what any user-space hop costs on this machine.

Owns one side-by-side run, on loopback, of ``GET /`` of the runtime (images/runtime) four ways:
direct, through a bare TCP relay (``socat``, Debian's: no HTTP parsing, no routing, the least a
process between two sockets can do), through our compiled router and through our Python router.
The relay's added p50 over direct is the floor for the router's "added p50 at c=1" target: a
router cannot add less than a relay does.

It also answers why that floor is what it is. On this kind of VM (Firecracker, the guest kernel's
``cpuidle-haltpoll`` driver booted with ``haltpoll.guest_halt_poll_ns=0``) an idle vCPU halts at
once, and every wake-up of a process that waited for a socket costs a VM exit and a host
reschedule. At c=1 every request wakes each process on its path, so a hop costs wake-ups, not
instructions. ``--halt-poll-ns N`` runs every path a second time with the guest polling for up
to N ns before halting (the module parameter, written for the run and restored after it, also on
error or Ctrl-C); the difference is what the halts cost. Nothing else of the machine is touched.

    python bench/proxy_floor.py [--connections 1,50] [--rounds 3] [--seconds 4] [--halt-poll-ns 200000]

Per router it also counts the context switches per request (all its threads): two is the least
a hop can do (it waits for the client, then for the
runtime); each one more is one more wake-up, which this VM makes expensive.

JSON (default out/bench/proxy_floor.json) and a summary; wrk drives the load, the paths are
interleaved in a rotating order per round, medians over rounds are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from router_bench import REPO, TOKEN, ensure_wrk, free_port, run_wrk, start, stop  # noqa: E402
from router_vs_go import compiled_router, our_router_env  # noqa: E402

PATHS = ("direct", "relay", "ours", "python")
SCHEMA = "proxy_floor/1"
HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def ensure_socat() -> str:
    """socat comes from Debian; install it when missing."""
    if not shutil.which("socat"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "socat"], check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    path = shutil.which("socat")
    if not path:
        raise SystemExit("proxy_floor: socat is not installed and `apt-get install socat` failed; install it")
    return path


def relay_command(socat: str, listen_port: int, target_port: int) -> list[str]:
    """A bare TCP relay of 127.0.0.1:listen_port to 127.0.0.1:target_port, one child per connection
    (Nagle off both ways, as the router and the runtime have it)."""
    return [socat, f"TCP-LISTEN:{listen_port},bind=127.0.0.1,reuseaddr,fork,nodelay",
            f"TCP:127.0.0.1:{target_port},nodelay"]


class HaltPoll:
    """The guest's halt-poll window for the duration of a ``with``: set on entry, the value
    found restored on exit whatever happened. ``available`` says whether this kernel has it."""

    def __init__(self, nanoseconds: int, path: Path = HALT_POLL) -> None:
        self.nanoseconds, self.path, self.original = nanoseconds, path, None

    @property
    def available(self) -> bool:
        return self.path.is_file() and os.access(self.path, os.W_OK)

    def __enter__(self) -> "HaltPoll":
        self.original = self.path.read_text().strip()
        self.path.write_text(str(self.nanoseconds))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.original is not None:
            self.path.write_text(self.original)


def rotations(rounds: int, paths: Sequence[str] = PATHS) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Each round's order of the paths, rotated by one per round so drift hits each alike."""
    paths = tuple(paths)
    for index in range(rounds):
        shift = index % len(paths)
        yield index, paths[shift:] + paths[:shift]


def context_switches(pid: int, proc: Path = Path("/proc")) -> int:
    """Voluntary + involuntary context switches so far of every thread of ``pid`` and of its live
    descendants (a server that forks per connection): how often the process waited and was
    woken, which on a VM that halts idle vCPUs is what one connection pays for. socat's children
    end with their connections, taking their counts along, so the relay is not counted."""
    total, pending, seen = 0, [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for task in (proc / str(current) / "task").glob("*"):
            try:
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
                pending += [int(child) for child in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue  # the thread or child ended meanwhile
    return total


def medians(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Median rps, p50, p99 and context switches per request over rounds of one path at one level."""
    out: dict[str, Any] = {}
    for key in ("rps", "p50_ms", "p99_ms", "switches_per_request"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def level_summary(level: Mapping[str, Any], paths: Sequence[str] = PATHS) -> dict[str, Any]:
    """Each hop's added p50 over direct (ms) and throughput over direct at one level."""
    direct = level["direct"]
    out: dict[str, Any] = {}
    for name in paths[1:]:
        path = level[name]
        out[f"{name}_added_p50_ms"] = (round(path["p50_ms"] - direct["p50_ms"], 3)
                                       if path["p50_ms"] is not None and direct["p50_ms"] is not None else None)
        out[f"{name}_over_direct"] = (round(path["rps"] / direct["rps"], 3)
                                      if path["rps"] and direct["rps"] else None)
    return out


def measure(urls: Mapping[str, str], headers: Mapping[str, Mapping[str, str]], connections: Sequence[int],
            rounds: int, seconds: int, pids: Optional[Mapping[str, int]] = None) -> list[dict[str, Any]]:
    """``pids``: the process in between for each path (none for direct), whose context switches
    per request are counted."""
    paths = tuple(urls)  # direct first
    pids = pids or {}
    levels = []
    for count in connections:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
        for _, order in rotations(rounds, paths):
            for name in order:
                before = context_switches(pids[name]) if name in pids else None
                result = run_wrk(urls[name], count, seconds, dict(headers[name]))
                if before is not None:
                    result["switches_per_request"] = round(
                        (context_switches(pids[name]) - before) / max(result["requests"], 1), 2)
                runs[name].append(result)
        level: dict[str, Any] = {"connections": count, **{name: medians(runs[name]) for name in paths}}
        level.update(level_summary(level, paths))
        levels.append(level)
        print(f"  c={count}: p50 ms " + " / ".join(f"{n} {level[n]['p50_ms']}" for n in paths)
              + " | added p50 ms " + " / ".join(f"{n} {level[f'{n}_added_p50_ms']}" for n in paths[1:]), flush=True)
    return levels


def print_summary(report: Mapping[str, Any]) -> None:
    print(f"proxy floor ({report['rounds']} rounds x {report['seconds_per_run']} s, medians; load "
          f"{report['load_average_before'][0]:.2f} -> {report['load_average_after'][0]:.2f} on {report['cpus']} CPUs)")
    for run in report["runs"]:
        print(f"halt-poll {run['halt_poll_ns']} ns:")
        for level in run["levels"]:
            names = [key[:-len("_added_p50_ms")] for key in level if key.endswith("_added_p50_ms")]
            print(f"  c={level['connections']:<3} added p50 over direct: "
                  + ", ".join(f"{n} {level[f'{n}_added_p50_ms']} ms" for n in names)
                  + f"; direct p50 {level['direct']['p50_ms']} ms; rps "
                  + ", ".join(f"{n} {level[n]['rps']:.0f}" for n in ("direct", *names))
                  + "; context switches per request " + ", ".join(f"{n} {level[n].get('switches_per_request')}"
                                                                  for n in names))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="1,50", help="comma-separated wrk connection counts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    parser.add_argument("--seconds", type=int, default=4, help="duration of each wrk run")
    parser.add_argument("--halt-poll-ns", type=int, default=None,
                        help="also run with the guest's halt-poll window set to this (restored after)")
    parser.add_argument("--gomaxprocs", default="",
                        help="also run our compiled router with GOMAXPROCS set to each of these (comma-separated): "
                             "paths ours_gomaxprocs<N> beside `ours` (GOMAXPROCS as the Deployment sets it)")
    parser.add_argument("--out", default=str(REPO / os.environ.get("OUT_DIR", "out") / "bench" / "proxy_floor.json"))
    args = parser.parse_args(argv)
    connections = [int(c) for c in args.connections.split(",") if c.strip()]
    ensure_wrk()
    socat = ensure_socat()
    router_binary = compiled_router()
    poll_found = HALT_POLL.read_text().strip() if HALT_POLL.is_file() else None
    if args.halt_poll_ns is not None and not HaltPoll(args.halt_poll_ns).available:
        raise SystemExit(f"proxy_floor: --halt-poll-ns needs a writable {HALT_POLL} (the cpuidle-haltpoll driver, root)")

    base_dir = Path(tempfile.mkdtemp(prefix="proxy-floor-"))
    runtime_port, relay_port, ours_port, python_port = free_port(), free_port(), free_port(), free_port()
    processes: list[subprocess.Popen] = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        runtime = start("sandbox_runtime", REPO / "images" / "runtime",
                        {"SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": str(runtime_port),
                         "SANDBOX_BASE_DIR": str(base_dir), "SANDBOX_LOG_LEVEL": "warning",
                         "SANDBOX_ACCESS_LOG": "false"}, f"http://127.0.0.1:{runtime_port}/")
        processes.append(runtime)
        between: dict[str, subprocess.Popen] = {}  # the process between client and runtime, per path
        between["relay"] = subprocess.Popen(relay_command(socat, relay_port, runtime_port),
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        between["ours"] = subprocess.Popen([router_binary], env={**os.environ, **our_router_env(ours_port)},
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        between["python"] = start("sandbox_router", REPO / "images" / "router", our_router_env(python_port),
                                  f"http://127.0.0.1:{python_port}/healthz")
        variants = {f"ours_gomaxprocs{n}": (int(n), free_port()) for n in args.gomaxprocs.split(",") if n.strip()}
        for name, (procs, port) in variants.items():
            between[name] = subprocess.Popen([router_binary], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             env={**os.environ, **our_router_env(port), "GOMAXPROCS": str(procs)})
        processes += between.values()
        # socat serves each connection in a child that exits with the connection, its switches with
        # it: the relay's are not counted.
        pids = {name: proc.pid for name, proc in between.items() if name != "relay"}
        time.sleep(0.5)
        routing = {"Authorization": f"Bearer {TOKEN}", "X-Sandbox-ID": "bench", "X-Sandbox-Namespace": "default",
                   "X-Sandbox-Port": str(runtime_port), "X-Sandbox-Pod-IP": "127.0.0.1"}
        urls = {"direct": runtime_port, "relay": relay_port, "ours": ours_port, "python": python_port,
                **{name: port for name, (_, port) in variants.items()}}
        urls = {name: f"http://127.0.0.1:{port}/" for name, port in urls.items()}
        headers = {"direct": {}, "relay": {}, **{name: routing for name in urls if name not in ("direct", "relay")}}
        runs = [{"halt_poll_ns": int(poll_found) if poll_found and poll_found.isdigit() else None,
                 "levels": measure(urls, headers, connections, args.rounds, args.seconds, pids)}]
        if args.halt_poll_ns is not None:
            with HaltPoll(args.halt_poll_ns):
                print(f"halt-poll window {args.halt_poll_ns} ns for this pass (was {poll_found})", flush=True)
                runs.append({"halt_poll_ns": args.halt_poll_ns,
                             "levels": measure(urls, headers, connections, args.rounds, args.seconds, pids)})
    finally:
        for proc in processes:
            stop(proc)
        shutil.rmtree(base_dir, ignore_errors=True)
    report = {"schema": SCHEMA, "cpus": os.cpu_count(), "rounds": args.rounds, "seconds_per_run": args.seconds,
              "halt_poll_found_ns": poll_found, "load_average_before": load_before,
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "runs": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
