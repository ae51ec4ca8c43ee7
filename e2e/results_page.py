"""Regenerates docs/results.md (and docs/results-bench.png) from the reports of an e2e run:
out/<stack>/smoke.json, out/<stack>/bench.json and out/e2e/e2e.json.

Usage: python e2e/results_page.py [--stack gvisor] [--out out] [--docs docs]"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Optional

# name: (target, direction): recorded next to the measurements, never asserted. Claims and router
# from the performance issue; set-up times from the make-up issue.
TARGETS: dict[str, tuple[float, str]] = {
    "warm claim->Ready p50 (s)": (0.060, "<="), "warm claim->Ready p99 (s)": (0.250, "<="),
    "warm claim start->first result p50 (s)": (0.120, "<="), "warm claim start->first result p95 (s)": (0.300, "<="),
    "cold claim->Ready p50 (s)": (1.0, "<="),
    "router/direct throughput c=50": (0.8, ">="), "router/Go router throughput c=50": (3.0, ">="),
    "router added p50 c=1 (ms)": (0.1, "<="),
    "up from empty caches (s)": (2700.0, "<="), "up with warm caches (s)": (180.0, "<="), "no-op up (s)": (20.0, "<="),
}


def _load(path: Path) -> Optional[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else None


def _verdict(value: Optional[float], target: float, direction: str = "<=") -> str:
    if value is None:
        return "not measured"
    return "met" if (value <= target if direction == "<=" else value >= target) else "missed"


def _s(value: Any) -> str:
    return "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def _plain(value: Any) -> str:
    """Seconds as the bench rounded them (one decimal), or a dash."""
    return "—" if value is None else str(value)


def measured_targets(bench: Optional[dict], e2e: Optional[dict], router: Optional[dict],
                     cold: Optional[dict]) -> dict[str, Optional[float]]:
    """The measured value of each target from whichever report has it (None: not measured)."""
    got: dict[str, Optional[float]] = {name: None for name in TARGETS}
    warm = (bench or {}).get("warm") or {}
    got["warm claim->Ready p50 (s)"] = (warm.get("claim_ready") or {}).get("p50")
    got["warm claim->Ready p99 (s)"] = (warm.get("claim_ready") or {}).get("p99")
    got["warm claim start->first result p50 (s)"] = (warm.get("total") or {}).get("p50")
    got["warm claim start->first result p95 (s)"] = (warm.get("total") or {}).get("p95")
    got["cold claim->Ready p50 (s)"] = (((bench or {}).get("cold") or {}).get("claim_ready") or {}).get("p50")
    headline = (router or {}).get("headline") or {}
    got["router/direct throughput c=50"] = (headline.get("c50") or {}).get("ours_over_direct")
    got["router/Go router throughput c=50"] = (headline.get("c50") or {}).get("ours_over_go")
    got["router added p50 c=1 (ms)"] = (headline.get("c1") or {}).get("ours_added_p50_ms")
    got["up from empty caches (s)"] = (cold or {}).get("up_seconds")
    got["up with warm caches (s)"] = (e2e or {}).get("up_from_empty_seconds")
    got["no-op up (s)"] = (e2e or {}).get("noop_up_seconds")
    return got


def platform_floors(floor: Optional[dict]) -> dict[str, str]:
    """The floor bench/platform_floor.py measured under a target (below our code), as a cell."""
    if not floor:
        return {}
    api, cri, inside = floor.get("api") or {}, floor.get("cri") or {}, floor.get("in_sandbox_ms") or {}
    out: dict[str, str] = {}
    warm = api.get("warm_path_floor_ms")
    if warm is not None:
        out["warm claim->Ready p50 (s)"] = f"{warm / 1000:.3f} ({api.get('warm_path_writes')} serial API writes x PATCH p50)"
        if isinstance(inside.get("python"), (int, float)):
            out["warm claim start->first result p50 (s)"] = (
                f"{(warm + inside['python']) / 1000:.3f} (+ python3 start in gVisor)")
    runsc = (cri.get("runsc") or {}).get("total_ms")
    if runsc is not None:
        out["cold claim->Ready p50 (s)"] = f"{runsc / 1000:.3f} (runsc pod + container via CRI, no Kubernetes)"
    return out


def proxy_floors(report: Optional[dict]) -> dict[str, str]:
    """The router targets' floor from bench/proxy_floor.py: a bare TCP relay's added p50 at c=1
    (the machine as found, the first run)."""
    runs = (report or {}).get("runs") or []
    level = next((lv for lv in (runs[0].get("levels") or []) if lv.get("connections") == 1), None) if runs else None
    if not level or level.get("relay_added_p50_ms") is None:
        return {}
    return {"router added p50 c=1 (ms)": f"{level['relay_added_p50_ms']:.3f} (a bare TCP relay, socat)"}


def proxy_floor_section(report: Optional[dict]) -> list[str]:
    """bench/proxy_floor.py: each hop's added p50 and throughput over direct, per halt-poll window."""
    if not report:
        return []
    rows = []
    for run in report.get("runs") or []:
        for level in run.get("levels") or []:
            rows.append([run.get("halt_poll_ns"), level.get("connections"), _s((level.get("direct") or {}).get("p50_ms")),
                         *[_s(level.get(f"{name}_added_p50_ms")) for name in ("relay", "ours", "python")],
                         *[_s(level.get(f"{name}_over_direct")) for name in ("relay", "ours", "python")],
                         " / ".join(_plain((level.get(name) or {}).get("switches_per_request"))
                                    for name in ("ours", "python"))])
    before, after = report.get("load_average_before") or [None], report.get("load_average_after") or [None]
    return _table(f"The floor under the router's added latency (bench/proxy_floor.py, {report.get('rounds')} rounds; "
                  f"load {_s(before[0])} → {_s(after[0])})",
                  ["guest halt-poll (ns)", "connections", "direct p50 (ms)", "relay added p50 (ms)",
                   "ours added p50 (ms)", "python added p50 (ms)", "relay/direct rps", "ours/direct rps",
                   "python/direct rps", "context switches per request ours / python"], rows,
                  "`relay` is a bare TCP relay (socat: no HTTP, no routing), the least any process between the "
                  "client and the runtime costs. This VM halts an idle vCPU at once (`haltpoll.guest_halt_poll_ns=0` "
                  "on the guest kernel's command line); a second pass with the guest polling before it halts shows "
                  "what those halts cost each hop at c=1. Context switches count how often a router "
                  "waited and was woken (all its threads): two per request is the least a hop can do.")


def render(smoke: Optional[dict], bench: Optional[dict], e2e: Optional[dict], stack: str,
           extra: Optional[dict[str, Optional[dict]]] = None) -> str:
    """The Markdown page. ``extra``: the bench reports beside the e2e ones (``router``:
    out/bench/router_vs_go.json, ``profiles``: controller_profiles.json, ``scale``: docs/scale-sim.json,
    ``cold``: out/e2e/cold-up.json, ``demand``: docs/demand-pool.json, ``cpu_limit``:
    docs/sandbox-cpu-limit.json, ``conversion``: docs/conversion-webhook.json, ``write_path``:
    docs/controller-write-path.json, ``floor``:
    docs/platform-floor.json, ``proxy_floor``: docs/proxy-floor.json, ``first_command``:
    docs/first-command.json, ``gvisor_idle``: docs/gvisor-idle.json, ``cold_timeline``:
    docs/cold-timeline.json), each optional."""
    extra = extra or {}
    lines = [
        "# Measured results",
        "",
        f"Regenerated by `python e2e/results_page.py` after the e2e run (`make e2e`) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, stack `{stack}`, "
        f"{platform.system()} {platform.release()}, {__import__('os').cpu_count()} cores. "
        f"Numbers are one run on a KIND cluster of {(e2e or {}).get('nodes', 1)} node(s) with gVisor "
        "(systrap), made by `make up` itself; they are recorded, not asserted by tests.",
        "",
    ]
    e2e = e2e or {}
    measured = measured_targets(bench, e2e, extra.get("router"), extra.get("cold"))
    floors = {**platform_floors(extra.get("floor")), **proxy_floors(extra.get("proxy_floor"))}
    lines += ["## Targets", "",
              "`floor here` is what the platform under our code takes on this machine for the same step "
              "(bench/platform_floor.py, section below): a target under its floor cannot be met here.", "",
              "| measure | target | measured | verdict | floor here |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {direction} {target} | {_s(measured[name])} | {_verdict(measured[name], target, direction)} | "
              f"{floors.get(name, '—')} |" for name, (target, direction) in TARGETS.items()]
    if bench:
        lines += ["", f"## Claim latency (bench, n={bench.get('n')})", "",
                  "Sequential claims are `settled` when each waited for a quiet namespace first (the pool "
                  "refilled, no sandbox starting or terminating), `back-to-back` when each met the previous "
                  "claim's refill or teardown. Each burst of the concurrency curve after the first meets a settled "
                  "namespace too; the claims of one burst contend with each other and with their refills.", "",
                  "| mode | sequence | pool | ok | claim→Ready p50 / p95 / max (s) | first exec p50 / p95 / max (s) |",
                  "|---|---|---|---|---|---|"]
        for mode in ("warm", "cold"):
            data = bench.get(mode)
            if data:
                ready, first = data["claim_ready"], data["first_exec"]
                lines.append(f"| {mode} | {data.get('sequence', 'back-to-back')} | {data['pool_replicas']} | "
                             f"{data['ok']}/{data['ok'] + data['failed']} | "
                             f"{ready['p50']} / {ready['p95']} / {ready['max']} | "
                             f"{first['p50']} / {first['p95']} / {first['max']} |")
        lines += ["", "![claim latency](results-bench.png)"]
        lines += breakdown(bench)
        lines += cold_split(bench)
        lines += command_split(bench)
    lines += floor_section(extra.get("floor")) + proxy_floor_section(extra.get("proxy_floor"))
    lines += cold_timeline_section(extra.get("cold_timeline"))
    lines += first_command_section(extra.get("first_command"))
    lines += idle_section(extra.get("gvisor_idle"))
    lines += compare_section("Sandbox CPU limit", extra.get("cpu_limit"))
    lines += compare_section("Conversion webhook (serveLegacyApiVersions)", extra.get("conversion"))
    lines += compare_section("Controller write path (the interactive profile's flags)", extra.get("write_path"))
    lines += compare_section("Controller profiles", extra.get("profiles")) + router_section(extra.get("router"))
    lines += demand_section(extra.get("demand")) + scale_section(extra.get("scale")) + cold_section(extra.get("cold"))
    if smoke:
        lines += ["", "## Smoke checks (official SDK through our router)", "", "| check | status | seconds | detail |",
                  "|---|---|---|---|"]
        lines += [f"| {c['id']}. {c['name']} | {c['status']} | {c.get('seconds')} | "
                  f"{str(c.get('detail', '')).replace('|', '/')[:160]} |" for c in smoke.get("checks", [])]
    if e2e:
        lines += ["", "## Other e2e measurements", "", "```json", json.dumps(
            {k: v for k, v in e2e.items() if k not in ("bench", "smoke")}, indent=2), "```"]
    return "\n".join(lines) + "\n"


def breakdown(bench: dict) -> list[str]:
    """Where a claim's time goes: the phases' p50 per mode and concurrency, and the router's
    route waits (first commands that came before the router's watch knew the sandbox)."""
    phases = ("create", "bind", "ready", "sdk", "first_command")
    lines = ["", "### Where the time goes (p50 of each phase, s)", "",
             "| mode | concurrency | " + " | ".join(phases) + " | total | route waits (found / mean s) | load 1m | steal % |",
             "|---|---|" + "---|" * (len(phases) + 4)]
    for mode in ("warm", "cold"):
        for point in ((bench.get("concurrency") or {}).get(mode) or []):
            cells = [_s(((point.get("phases") or {}).get(p) or {}).get("p50")) for p in phases]
            router = point.get("router") or {}
            waits = router.get("sandbox_router_route_wait_seconds") or []
            found = [w for w in waits if (w.get("labels") or {}).get("outcome") == "found"]
            count = sum(w["count"] for w in found)
            mean = sum(w["sum"] for w in found) / count if count else None
            load = (point.get("load_before") or [None])[0]
            lines.append(f"| {mode} | {point.get('concurrency')} | " + " | ".join(cells)
                         + f" | {_s((point.get('total') or {}).get('p50'))} | {count} / {_s(mean)} | {_s(load)} | "
                         f"{_plain(point.get('steal_percent'))} |")
    return lines


# The cold start's steps in order, from the watch events of the claim, its sandbox and its pod.
COLD_STEPS = (
    ("claim_to_sandbox_created", "claim seen → sandbox created (controller)"),
    ("sandbox_to_pod_created", "sandbox → pod created"),
    ("pod_created_to_scheduled", "pod → scheduled"),
    ("pod_scheduled_to_running", "scheduled → running (runsc pod + container)"),
    ("pod_running_to_ready", "running → Ready (server start, readiness probe)"),
    ("pod_ready_to_claim_ready", "pod Ready → claim Ready (controller)"),
)


def cold_split(bench: dict) -> list[str]:
    """A cold claim's Ready phase split at the pod's milestones (p50 per concurrency), so the
    runtime's own start is told apart from runsc's and the controller's."""
    points = [p for p in ((bench.get("concurrency") or {}).get("cold") or []) if p.get("cold_phases")]
    if not points:
        return []
    header = ["concurrency", *[label for _, label in COLD_STEPS]]
    rows = [[point.get("concurrency"), *[_s(((point.get("cold_phases") or {}).get(key) or {}).get("p50"))
                                          for key, _ in COLD_STEPS]] for point in points]
    return _table("Cold start, split at the pod's milestones (p50, s)", header, rows,
                  "Receive times of watch events; `running → Ready` is the runtime server's start plus the "
                  "kubelet's readiness probe and status update.", level=3)


# The first command's parts in the order its request meets them (automation/server_timing.py).
COMMAND_PARTS = (
    ("sdk_lookup", "SDK's pod-IP lookup (a Sandbox GET)"),
    ("path", "SDK + tunnel (rest outside the router)"),
    ("connect", "router gets a sandbox connection"),
    ("router", "router's own work"),
    ("hop", "router → pod → runtime's server"),
    ("runtime", "runtime handler (the command's run)"),
)


def _ms(seconds: Optional[float]) -> str:
    """Seconds as milliseconds with one decimal, or a dash."""
    return "—" if seconds is None else f"{seconds * 1000:.1f}"


def command_split(bench: dict) -> list[str]:
    """The first command of each claim split along its path by the router's and runtime's
    Server-Timing entries (p50 per mode and concurrency, ms)."""
    rows = []
    for mode in ("warm", "cold"):
        for point in ((bench.get("concurrency") or {}).get(mode) or []):
            split = point.get("first_command_split") or {}
            if not split:
                continue
            rows.append([mode, point.get("concurrency"),
                         *[_ms((split.get(key) or {}).get("p50")) for key, _ in COMMAND_PARTS],
                         _s(((point.get("phases") or {}).get("first_command") or {}).get("p50"))])
    if not rows:
        return []
    return _table("The first command, split along its path (p50, ms)",
                  ["mode", "concurrency", *[label for _, label in COMMAND_PARTS], "first command p50 (s)"], rows,
                  "From the `Server-Timing` entries our router (`router`, `connect`, `sandbox`) and runtime "
                  "(`runtime`) put on the response, with the SDK's wall time; each part's p50 on its own, so "
                  "they need not add up to the first command's p50.", level=3)


def compare_section(title: str, report: Optional[dict]) -> list[str]:
    """A bench/config_compare.py report: each candidate's config and its pooled p50s (p95)."""
    if not report:
        return []
    lines = ["", f"## {title} ({report.get('rounds')} alternating rounds, n={report.get('n')}, "
             f"concurrency {report.get('concurrency')}, sequential claims {_sequence(report)})", "",
             "| candidate | config | warm claim→Ready p50 / p95 | warm first exec p50 / p95 | warm total p50 "
             "| cold claim→Ready p50 / p95 | cold first exec p50 |",
             "|---|---|---|---|---|---|---|"]
    for name, row in (report.get("comparison") or {}).items():
        candidate = (report.get("candidates") or {}).get(name) or {}
        # reports before config_compare.py named a profile and its flags
        config = candidate.get("config") or {"controllerProfile": candidate.get("profile"),
                                             "controllerFlags": candidate.get("flags")}
        shown = ", ".join(f"`{k}={v}`" for k, v in config.items() if v) or "—"
        warm, cold = row.get("warm") or {}, row.get("cold") or {}

        def pair(data: dict, key: str) -> str:
            got = data.get(key) or {}
            return f"{_s(got.get('p50'))} / {_s(got.get('p95'))}"
        lines.append(f"| {name} | {shown} | {pair(warm, 'claim_ready')} | {pair(warm, 'first_exec')} | "
                     f"{_s((warm.get('total') or {}).get('p50'))} | {pair(cold, 'claim_ready')} | "
                     f"{_s((cold.get('first_exec') or {}).get('p50'))} |")
    return lines


def _sequence(report: dict) -> str:
    kinds = sorted({k for row in (report.get("comparison") or {}).values() for k in (row.get("sequence") or [])})
    return "/".join(kinds) if kinds else "back-to-back"


ROUTER_PATHS = (("direct", "direct"), ("ours", "ours (compiled)"), ("python", "our Python router"),
                ("go", "upstream's Go router"))


def router_section(report: Optional[dict]) -> list[str]:
    """bench/router_vs_go.py: our compiled router (the default), our Python router and upstream's
    Go router against direct, in one run (schema router_vs_go/2; /1 had no compiled router)."""
    if not report:
        return []
    names = [(key, label) for key, label in ROUTER_PATHS if all(key in lv for lv in report.get("levels") or [])]
    ours = [key for key, _ in names if key in ("ours", "python")]
    lines = ["", f"## Router vs direct vs upstream's Go router (loopback, wrk, {report.get('rounds')} rounds; load "
             f"{report.get('load_average_before')} → {report.get('load_average_after')})", "",
             "`ours` is the compiled router (images/router-go, the default image); `python` the Python router "
             "(images/router, `routerImplementation: python`); `go` upstream's sandbox-router v0.5.6.", "",
             "| connections | " + " | ".join(f"{key} rps" for key, _ in names) + " | "
             + " | ".join(f"{key}/direct | {key}/Go | {key} added p50 (ms)" for key in ours)
             + " | router CPU µs/request " + " / ".join(key for key, _ in names if key != "direct") + " |",
             "|" + "---|" * (1 + len(names) + 3 * len(ours) + 1)]
    for level in report.get("levels") or []:
        cpu = " / ".join(_s(level[key].get("router_cpu_us_per_request")) for key, _ in names if key != "direct")
        lines.append(f"| {level['connections']} | " + " | ".join(str(level[key]["rps"]) for key, _ in names) + " | "
                     + " | ".join(f"{level.get(f'{key}_over_direct')} | {level.get(f'{key}_over_go')} | "
                                  f"{level.get(f'{key}_added_p50_ms')}" for key in ours) + f" | {cpu} |")
    return lines + router_budget(report) + ["", "![router vs Go](router_vs_go.png)"]


def router_budget(report: dict, connections: int = 50) -> list[str]:
    """What the ours/Go target asks of our router's CPU, from this run: if both paths were bound by
    CPU alone, ours/Go would be (runtime + Go router) / (runtime + our router) per request, each
    path with the runtime's cost as measured behind it (the load generator's share left out)."""
    level = next((lv for lv in report.get("levels") or [] if lv["connections"] == connections), None)
    if not level:
        return []
    rt_ours, rt_go = (level[name].get("runtime_cpu_us_per_request") for name in ("ours", "go"))
    ours, go = (level[name].get("router_cpu_us_per_request") for name in ("ours", "go"))
    if not (rt_ours and rt_go and ours and go):
        return []
    ceiling = (rt_go + go) / (rt_ours + ours)
    needed = max((rt_go + go) / 3 - rt_ours, 0.0)
    lines = ["", f"At c={connections}, per request: behind our router the runtime costs {rt_ours:.0f} µs of CPU and our "
             f"router {ours:.0f} µs; behind the Go router the runtime costs {rt_go:.0f} µs and the Go router {go:.0f} µs. "
             f"Bound by CPU alone ours/Go would be {ceiling:.2f}×; 3× needs our router at ≤ {needed:.0f} µs per request. "
             f"The runtime is one process (at most one core), so ours/direct also depends on how much of the second "
             f"core the machine leaves free: compare runs by their load."]
    direct, go_rps = level["direct"].get("rps"), level["go"].get("rps")
    if direct and go_rps:
        # No router makes the runtime faster than wrk reaching it directly: direct/Go bounds ours/Go.
        lines.append(f"\nNo router outruns the runtime it fronts: direct reached {direct:.0f} req/s, so ours/Go is at "
                     f"most direct/Go = {direct / go_rps:.2f}× in this run, and 3× needs ours/direct ≥ "
                     f"{3 * go_rps / direct:.2f}.")
    return lines


def demand_section(report: Optional[dict]) -> list[str]:
    """bench/demand_pool.py: the same two bursts against a fixed and a KEDA-sized pool."""
    if not report:
        return []
    c = report["config"]
    lines = ["", "## A pool that follows demand (bench/demand_pool.py)", "",
             f"Bursts of {c['wave']} claims at t=0 and t={c['gap']} s, each held {c['hold']} s; fixed pool "
             f"{c['baseline']} vs `warmPoolAutoscaling: keda` (min {c['baseline']}, max {c['max']}, scale-down "
             f"{c['scale_down']} s). Load average at the start {report.get('load_average')}.", "",
             "| pool | burst | warm / claims | claim→Ready p50 / p95 / max (s) | pool back after (s) |",
             "|---|---|---|---|---|"]
    for mode, data in (report.get("modes") or {}).items():
        for w in data["waves"]:
            lines.append(f"| {mode} | {w['wave']} | {w['warm']} / {w['n']} | {_s(w['p50'])} / {_s(w['p95'])} / "
                         f"{_s(w['max'])} | {_plain(w.get('pool_back_s'))} |")
    for mode, data in (report.get("modes") or {}).items():
        back = data.get("back_to_baseline_s")
        lines.append(f"\n{mode}: largest pool {data['pool_peak']} (reached {_plain(data['peak_reached_s'])} s after the "
                     f"first burst)" + (f"; back to {c['baseline']} {_plain(back)} s after the last release" if back is not None
                                        else "") + f"; `up` {_plain(data.get('up_seconds'))} s.")
    return lines + ["", "![demand-driven pool](demand-pool.png)"]


def scale_section(report: Optional[dict]) -> list[str]:
    if not report:
        return []
    lines = ["", "## Simulated scale (KWOK fake nodes; real controller, API server, etcd)", "",
             "| pool | rate (claims/s) | claims | claim→Ready p50 / p99 / max (s) | sustained claims/s | pool back after (s) | "
             "controller cores / MiB | API server cores / MiB |", "|---|---|---|---|---|---|---|---|"]
    for level in report.get("levels") or []:
        ready, usage = level["claim_to_ready_s"], level.get("usage") or {}

        def use(name: str) -> str:
            u = usage.get(name)
            return f"{u['cores']} / {u['rss_mib']}" if u else "—"

        lines.append(f"| {level['pool']} | {level['rate_per_s']} | {level['claims']} | {_s(ready['p50'])} / "
                     f"{_s(ready['p99'])} / {_s(ready['max'])} | {_s(level['sustained_claims_per_s'])} | "
                     f"{_s(level['pool_back_after_s'])} | {use('controller')} | {use('apiserver')} |")
    stack_up = report.get("stack_up") or []
    if stack_up:
        lines += ["", "The stack's own `up` declaring that pool on the fake nodes (through the driver, policy pack on):", "",
                  "| pool | `up` (s) | no-op `up` (s) |", "|---|---|---|"]
        lines += [f"| {entry['pool']} | {entry['up_seconds']} | {entry['noop_up_seconds']} |" for entry in stack_up]
    return lines + ["", "![simulated scale](scale-sim.png)"]


COLD_TIMELINE_STEPS = {"sandbox_created": "pod sandbox (runsc) created", "container_created": "container created",
                       "container_started": "container started", "server_started": "runtime server process started",
                       "serving": "runtime serving", "running_seen": "kubelet reports the container running",
                       "ready_seen": "pod Ready (seen by a watch)"}


def cold_timeline_section(report: Optional[dict]) -> list[str]:
    """bench/cold_timeline.py: one cold sandbox start, step by step after its pod is seen, and the
    median of each variant the run also timed (a kubelet feature gate) beside it."""
    if not report or not report.get("median"):
        return []
    median, samples = report["median"], report.get("samples") or []
    variants = report.get("variants") or {}
    rows, previous = [], 0.0
    for step, title in COLD_TIMELINE_STEPS.items():
        at = median.get(step)
        if at is None:
            continue
        spread = [s["after_pod_seen"][step] for s in samples if (s.get("after_pod_seen") or {}).get(step) is not None]
        others = [_s((variant.get("median") or {}).get(step)) for variant in variants.values()]
        rows.append([title, f"{at:.3f}", f"{at - previous:+.3f}", f"{min(spread):.3f}–{max(spread):.3f}" if spread else "—",
                     *others])
        previous = at
    intro = ("A pool member is replaced and timed with the node's CRI timestamps, the runtime's log and a watch. "
             "The gap between `runtime serving` and the kubelet's report is the kubelet noticing the start on its "
             "next container relist (once a second) and writing the pod's status; the readiness probe then passes "
             "at once (the runtime listens before it imports).")
    if variants:
        intro += (" The last columns are the same starts with a kubelet feature gate on, alternating with the node "
                  "as configured in one run (`--kubelet-gate`).")
    return _table(f"Where a cold start goes (bench/cold_timeline.py, n={report.get('n')})",
                  ["step", "median s after the pod is seen", "step's own", "range",
                   *[f"{name} (median s, n={variant.get('n')})" for name, variant in variants.items()]], rows, intro)


def floor_section(report: Optional[dict]) -> list[str]:
    """bench/platform_floor.py: the platform's own costs here, below anything of ours."""
    if not report:
        return []
    api, cri, inside, idle = (report.get(k) or {} for k in ("api", "cri", "in_sandbox_ms", "sentry_idle"))
    lines = ["", "## The floor under our code (bench/platform_floor.py)", "",
             f"Load average at the start {[round(x, 2) for x in report.get('load_before') or []]}.", "",
             "| step | p50 | p90 / detail |", "|---|---|---|"]
    for name, title in (("get_sandbox", "API GET of a Sandbox"), ("patch_sandbox", "API PATCH of a Sandbox")):
        row = api.get(name)
        if row:
            cpu = ", ".join(f"{k.replace('_cpu_ms', '')} {v} ms" for k, v in row.items() if k.endswith("_cpu_ms"))
            lines.append(f"| {title} | {row['p50_ms']} ms | {row['p90_ms']} ms; CPU per request: {cpu or '—'} |")
    if "warm_path_floor_ms" in api:
        lines.append(f"| warm claim: the controller's serial writes | {api['warm_path_floor_ms']} ms | "
                     f"{api['warm_path_writes']} writes x PATCH p50 (v0.5.6's adoption path; a lower bound) |")
    for handler, row in cri.items():
        if isinstance(row, dict) and "total_ms" in row:
            lines.append(f"| CRI pod + container, {handler} | {row['total_ms']} ms | runp {row['runp_ms']} + create "
                         f"{row['create_ms']} + start {row['start_ms']} ms |")
    for key, title in (("true", "`/bin/true` in a gVisor sandbox"), ("python", "`python3 -c pass` in a gVisor sandbox"),
                       ("first_command_bare", "the bench's first command, started bare in a gVisor sandbox"),
                       ("first_command_runtime", "the same through the runtime's `/execute` (its Server-Timing)"),
                       ("runtime_imports", "the runtime server's imports in a gVisor sandbox")):
        if isinstance(inside.get(key), (int, float)):
            lines.append(f"| {title} | {inside[key]} ms | median of {5 if key.startswith('first_') else 3} |")
    if "median_ms_per_s" in idle:
        lines.append(f"| an idle sandbox of the pool (runtime + probes) | {idle['median_ms_per_s']} ms CPU/s | "
                     f"max {idle['max_ms_per_s']}, {idle['sandboxes']} sandboxes |")
    return lines


def _table(title: str, header: list[str], rows: list[list[Any]], intro: str = "", level: int = 2) -> list[str]:
    """A section: its heading (``level`` hashes), an optional paragraph, and a Markdown table."""
    lines = ["", f"{'#' * level} {title}", ""] + ([intro, ""] if intro else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def first_command_section(report: Optional[dict]) -> list[str]:
    """bench/first_command.py: a warm claim's first command at once vs after the pool's refill."""
    if not report:
        return []
    rows = [[mode, row.get("count"), _s(row.get("claim_ready_seconds")), _s(row.get("first_exec_seconds")),
             _s(row.get("second_exec_seconds"))] for mode, row in (report.get("summary") or {}).items()]
    return _table(f"Warm first command: at once vs after the refill (bench/first_command.py, n={report.get('n')} each)",
                  ["first command", "claims", "claim→Ready p50 (s)", "first command p50 (s)", "second command p50 (s)"],
                  rows, "Adopting a warm sandbox makes the pool boot a replacement on the same node at once; run at "
                  "once, the first command shares the node's cores with that boot.") + _command_split_rows(report)


def _command_split_rows(report: dict) -> list[str]:
    """first_command.py's first and second command split by Server-Timing (medians, ms)."""
    rows = []
    for mode, row in (report.get("summary") or {}).items():
        for which in ("first", "second"):
            split = row.get(f"{which}_split")
            if split:
                rows.append([mode, which, *[_ms(split.get(key)) for key, _ in COMMAND_PARTS]])
    if not rows:
        return []
    return _table("The first and the second command, split along their path (median, ms)",
                  ["first command", "command", *[label for _, label in COMMAND_PARTS]], rows, level=3)


def idle_section(report: Optional[dict]) -> list[str]:
    """bench/gvisor_idle.py: an idle `runsc do sleep` sandbox per runsc build, side by side."""
    if not report:
        return []
    rows = [[name, row["cpu_ms_per_s"], row["switches_per_s"]] for name, row in (report.get("sandboxes") or {}).items()]
    return _table(f"An idle gVisor sandbox per runsc build (bench/gvisor_idle.py, {report.get('seconds')} s)",
                  ["runsc", "CPU ms per s", "context switches per s"], rows)


def cold_section(report: Optional[dict]) -> list[str]:
    if not report:
        return []
    lines = ["", "## `make up STACK=gvisor` from empty caches (fresh clone, offline)", "",
             f"{report.get('summary', '')}", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds} |" for step, seconds in (report.get("steps") or {}).items()]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="gvisor")
    parser.add_argument("--out", default="out")
    parser.add_argument("--docs", default="docs")
    args = parser.parse_args()
    out, docs = Path(args.out), Path(args.docs)
    smoke, bench = _load(out / args.stack / "smoke.json"), _load(out / args.stack / "bench.json")
    docs.mkdir(parents=True, exist_ok=True)
    # The bench reports out/ has are copied into docs/ (as the PNGs are), so that a clone can
    # regenerate the same page without running the benches again.
    for name in ("router_vs_go.json", "controller_profiles.json"):
        if (out / "bench" / name).is_file():
            shutil.copyfile(out / "bench" / name, docs / name)
    extra = {"router": _load(docs / "router_vs_go.json"), "profiles": _load(docs / "controller_profiles.json"),
             "scale": _load(docs / "scale-sim.json") or _load(out / "bench" / "scale_sim.json"), "cold": _load(out / "e2e" / "cold-up.json") or _load(docs / "cold-up.json"),
             "demand": _load(docs / "demand-pool.json"), "cpu_limit": _load(docs / "sandbox-cpu-limit.json"),
             "conversion": _load(docs / "conversion-webhook.json"),
             "write_path": _load(docs / "controller-write-path.json"),
             "floor": _load(docs / "platform-floor.json"), "first_command": _load(docs / "first-command.json"),
             "proxy_floor": _load(docs / "proxy-floor.json"),
             "gvisor_idle": _load(docs / "gvisor-idle.json"), "cold_timeline": _load(docs / "cold-timeline.json")}
    (docs / "results.md").write_text(render(smoke, bench, _load(out / "e2e" / "e2e.json"), args.stack, extra))
    if (out / "bench" / "router_vs_go.png").is_file():
        shutil.copyfile(out / "bench" / "router_vs_go.png", docs / "router_vs_go.png")
    if (out / args.stack / "bench.png").is_file():
        shutil.copyfile(out / args.stack / "bench.png", docs / "results-bench.png")
    print(f"wrote {docs / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
