"""``bench STACK -n N``: where the time of a claim goes, and how it grows with concurrency.

Owns the claim benchmark: N sequential claims from a warm pool sized N, then N with the pool at 0
(cold starts from the template); then bursts of 2, 4, 8 claims at once (``BENCH_CONCURRENCY``,
default ``1,2,4,8``; level 1 is the sequential run) in both modes, capped by what the node can
hold (allocatable minus other pods' requests, divided by the template's requests plus the
RuntimeClass overhead). Each claim is split into phases on one clock (the driver's):

    requested → claim seen (API write + watch) → bound (controller: status.sandbox.name)
    → Ready (claim condition) → SDK returns → first command's result

from watch events on SandboxClaims, Sandboxes and Pods recorded with their receive time, plus
the controller's own annotations (RFC 3339 with nanoseconds, its clock) and its Prometheus
histograms (scraped through the API server's service proxy before and after every series).
Machine load (os.getloadavg) is recorded around every series. Output: JSON (schema in
automation.report) and a PNG (box plots, a stacked bar per phase, latency vs concurrency).

The pool's replica count is patched for the run and restored afterwards (the Pulumi-declared
value), so the stack's state is unchanged when bench ends. Everything that computes is a pure
function tested without a cluster; the classes at the end do the I/O.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from automation.kube import Cluster
from automation.report import BENCH_SCHEMA_VERSION
from automation.server_timing import SPLIT_PARTS, ResponseTimings, split_latency
from automation.session import StackTarget, sdk_session
from automation.smoke import python_command
from automation.stats import histogram_quantile, summarize
from agent_sandbox_pulumi.sandbox_iac import constants, versions
from agent_sandbox_pulumi.sandbox_iac.quantity import parse_quantity

FIRST_EXEC_COMMAND = python_command("print('ready')")
PHASES = ("create", "bind", "ready", "sdk", "first_command")
"""Consecutive phases of one claim; they add up to ``total`` (requested → first result)."""
PHASE_TITLES = {"create": "create (API + watch)", "bind": "bind (controller)", "ready": "→ Ready",
                "sdk": "SDK returns", "first_command": "first command"}
MILESTONES = ("requested", "claim_seen", "bound_seen", "ready_seen", "sdk_returned", "first_result")
DEFAULT_CONCURRENCY = (1, 2, 4, 8)
CONCURRENCY_ENV = "BENCH_CONCURRENCY"
SETTLE_ENV = "BENCH_SETTLE"
"""``BENCH_SETTLE=0``: sequential claims back to back (each one meets the previous claim's pool
refill or teardown still running); by default each waits for a settled namespace first."""
CLAIM_PLURAL, SANDBOX_PLURAL = "sandboxclaims", "sandboxes"
SANDBOX_VERSION = "v1beta1"
ANNOTATIONS = {  # the controller's (and the SDK's) observability annotations, v0.5.6
    "client_requested": "agents.x-k8s.io/client-first-requested-at",
    "webhook_observed": "agents.x-k8s.io/webhook-first-observed-at",
    "controller_observed": "agents.x-k8s.io/controller-first-observed-at",
    "controller_first_ready": "agents.x-k8s.io/claim-first-ready-at",
}
CONTROLLER_METRIC_PREFIXES = ("agent_sandbox_", "controller_runtime_reconcile_", "workqueue_queue_duration_seconds",
                              "workqueue_work_duration_seconds")
ROUTER_METRIC_PREFIXES = ("sandbox_router_route_wait_seconds", "sandbox_router_upstream_connections_opened",
                          "sandbox_router_upstream_errors", "sandbox_router_request_duration_seconds")
SETTLE_SECONDS = 0.5


# ============================================================================ pure: time & events

def parse_time(text: Any) -> Optional[float]:
    """Epoch seconds of an RFC 3339 timestamp (``Z`` or an offset, up to nanoseconds; Python
    keeps microseconds); None for empty or unparseable values (the controller's ``unknown``)."""
    if not isinstance(text, str) or not text:
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text.strip())
    if not match:
        return None
    base, fraction, zone = match.groups()
    stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + (float("0" + fraction) if fraction else 0.0)


def _condition(obj: Mapping[str, Any], kind: str) -> Optional[Mapping[str, Any]]:
    for condition in ((obj.get("status") or {}).get("conditions") or []):
        if condition.get("type") == kind:
            return condition
    return None


def _owner(obj: Mapping[str, Any], kind: str) -> Optional[str]:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind:
            return ref.get("name")
    return None


def object_event(kind: str, event_type: str, obj: Mapping[str, Any], received: float) -> dict[str, Any]:
    """The few facts of one watch event the phases need (claim, sandbox or pod)."""
    meta = obj.get("metadata") or {}
    ready = _condition(obj, "Ready")
    event: dict[str, Any] = {"kind": kind, "type": event_type, "name": meta.get("name"), "t": received,
                             "created": parse_time(meta.get("creationTimestamp")),
                             "ready": bool(ready and ready.get("status") == "True")}
    if kind == "claim":
        annotations = meta.get("annotations") or {}
        event["bound"] = ((obj.get("status") or {}).get("sandbox") or {}).get("name") or None
        event["reason"] = ready.get("reason") if ready else None
        event["annotations"] = {key: parse_time(annotations.get(name)) for key, name in ANNOTATIONS.items()}
    elif kind == "sandbox":
        event["owner"] = _owner(obj, "SandboxClaim")
    elif kind == "pod":
        scheduled = _condition(obj, "PodScheduled")
        event["owner"] = _owner(obj, "Sandbox")
        event["scheduled"] = bool(scheduled and scheduled.get("status") == "True")
        event["running"] = (obj.get("status") or {}).get("phase") == "Running"
        event["node"] = (obj.get("spec") or {}).get("nodeName")
    return event


def _first(events: Iterable[Mapping[str, Any]], test: Callable[[Mapping[str, Any]], bool]) -> Optional[float]:
    times = [e["t"] for e in events if test(e)]
    return min(times) if times else None


def claim_timeline(claim: str, requested: Optional[float], sdk_returned: Optional[float],
                   first_result: Optional[float], events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every milestone of one claim (epoch seconds or None). ``*_seen`` are client receive times
    of watch events (upper bounds of when it happened); ``requested``/``sdk_returned``/
    ``first_result`` were taken around the SDK calls; the annotation times are the controller's
    clock (and the SDK's for ``client_requested``); ``claim_created`` has 1 s resolution."""
    mine = [e for e in events if e["kind"] == "claim" and e["name"] == claim]
    bound = next((e["bound"] for e in sorted(mine, key=lambda e: e["t"]) if e.get("bound")), None)
    sandbox = [e for e in events if e["kind"] == "sandbox" and bound and (e["name"] == bound or e.get("owner") == claim)]
    # A cold start: the claim controller created the sandbox, owned by the claim from its first
    # event. (A warm pool's refill creates sandboxes too, owned by the pool; adopting one later
    # is no cold start.)
    created = _first(sandbox, lambda e: e["type"] == "ADDED" and e.get("owner") == claim)
    pods = [e for e in events if e["kind"] == "pod" and created is not None
            and (e["name"] == bound or e.get("owner") == bound)]
    annotations: dict[str, Optional[float]] = {key: None for key in ANNOTATIONS}
    for event in mine:
        for key, value in (event.get("annotations") or {}).items():
            annotations[key] = annotations.get(key) or value
    return {
        "sandbox": bound,
        "requested": requested, "sdk_returned": sdk_returned, "first_result": first_result,
        "claim_seen": _first(mine, lambda e: True),
        "bound_seen": _first(mine, lambda e: bool(e.get("bound"))),
        "ready_seen": _first(mine, lambda e: e["ready"]),
        "claim_created": next((e["created"] for e in mine if e.get("created")), None),
        **annotations,
        "sandbox_created_seen": created,
        "sandbox_ready_seen": _first(sandbox, lambda e: e["ready"]),
        "pod_created_seen": _first(pods, lambda e: e["type"] == "ADDED"),
        "pod_scheduled_seen": _first(pods, lambda e: e.get("scheduled")),
        "pod_running_seen": _first(pods, lambda e: e.get("running")),
        "pod_ready_seen": _first(pods, lambda e: e["ready"]),
    }


def _span(start: Optional[float], end: Optional[float]) -> Optional[float]:
    return round(end - start, 4) if start is not None and end is not None else None


def claim_phases(timeline: Mapping[str, Any]) -> dict[str, Any]:
    """``{phases: {create, bind, ready, sdk, first_command}, total, clamped, controller, cold}``.

    The watch milestones are upper bounds (an event arrives after it happened, and our watch
    competes with the SDK's), while the SDK returned only after it saw Ready: so each is
    clamped to at most the next milestone and at least ``requested``; the names of clamped
    milestones are listed. The phases then add up to ``total`` exactly. ``controller`` figures
    use the controller's clock only (skew-free); ``cold`` splits a cold start when pod events
    were seen."""
    values = {name: timeline.get(name) for name in MILESTONES}
    clamped: list[str] = []
    upper = values["sdk_returned"]
    for name in ("ready_seen", "bound_seen", "claim_seen"):  # backwards: each <= its successor
        value = values[name]
        if value is not None and upper is not None and value > upper:
            values[name], value = upper, upper
            clamped.append(name)
        upper = value if value is not None else upper
    start = values["requested"]
    for name in ("claim_seen", "bound_seen", "ready_seen"):
        if values[name] is not None and start is not None and values[name] < start:
            values[name] = start
            clamped.append(name)
    phases = {phase: _span(values[a], values[b]) for phase, a, b in zip(PHASES, MILESTONES, MILESTONES[1:])}
    controller = {
        # Both ends on the controller's clock.
        "observed_to_first_ready": _span(timeline.get("controller_observed"), timeline.get("controller_first_ready")),
        # The SDK's clock to the controller's: exact on a single-host cluster, skewed elsewhere.
        "client_to_observed": _span(timeline.get("client_requested"), timeline.get("controller_observed")),
        "webhook_to_first_ready": _span(timeline.get("webhook_observed"), timeline.get("controller_first_ready")),
    }
    cold = {
        # The controller's wait for a warm candidate before it creates a sandbox.
        "claim_to_sandbox_created": _span(values["claim_seen"], timeline.get("sandbox_created_seen")),
        "sandbox_to_pod_created": _span(timeline.get("sandbox_created_seen"), timeline.get("pod_created_seen")),
        "pod_created_to_scheduled": _span(timeline.get("pod_created_seen"), timeline.get("pod_scheduled_seen")),
        "pod_scheduled_to_running": _span(timeline.get("pod_scheduled_seen"), timeline.get("pod_running_seen")),
        "pod_running_to_ready": _span(timeline.get("pod_running_seen"), timeline.get("pod_ready_seen")),
        "pod_ready_to_claim_ready": _span(timeline.get("pod_ready_seen"), values["ready_seen"]),
    } if timeline.get("sandbox_created_seen") is not None else {}
    return {"phases": phases, "total": _span(values["requested"], values["first_result"]),
            "clamped": clamped, "controller": controller, "cold": cold}


# ============================================================================ pure: capacity

def _container_requests(container: Mapping[str, Any]) -> dict[str, float]:
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    # A resource with a limit and no request is requested at its limit (API defaulting).
    return {name: parse_quantity(requests.get(name, limits.get(name))) for name in {*requests, *limits}}


def pod_requests(pod_spec: Mapping[str, Any], overhead: Optional[Mapping[str, Any]] = None) -> dict[str, float]:
    """What the scheduler reserves for a pod: the containers' (and sidecar init containers')
    requests summed, at least the largest plain init container's, plus the RuntimeClass
    overhead."""
    total: dict[str, float] = {}
    for container in pod_spec.get("containers") or []:
        for name, value in _container_requests(container).items():
            total[name] = total.get(name, 0.0) + value
    init_peak: dict[str, float] = {}
    for container in pod_spec.get("initContainers") or []:
        for name, value in _container_requests(container).items():
            if container.get("restartPolicy") == "Always":  # a sidecar runs alongside the containers
                total[name] = total.get(name, 0.0) + value
            else:
                init_peak[name] = max(init_peak.get(name, 0.0), value)
    for name, value in init_peak.items():
        total[name] = max(total.get(name, 0.0), value)
    for name, value in (overhead or {}).items():
        total[name] = total.get(name, 0.0) + parse_quantity(value)
    return total


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists" and (not toleration.get("key") or toleration.get("key") == taint.get("key")):
            return True
        if toleration.get("key") == taint.get("key") and toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def node_eligible(node: Mapping[str, Any], selector: Mapping[str, str], tolerations: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """Why a sandbox pod cannot land on ``node`` (None: it can)."""
    if node.get("unschedulable"):
        return "cordoned"
    labels = node.get("labels") or {}
    missing = [f"{k}={v}" for k, v in selector.items() if labels.get(k) != v]
    if missing:
        return f"lacks label(s) {', '.join(missing)}"
    for taint in node.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return f"taint {taint.get('key')}:{taint.get('effect')}"
    return None


def capacity(nodes: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]], per_sandbox: Mapping[str, float],
             selector: Optional[Mapping[str, str]] = None, tolerations: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """How many sandboxes fit at once: per eligible node, min over the requested resources (and
    the pod count) of floor(free / per sandbox), free = allocatable − requests of the pods on the
    node that are not ours (``pods``: ``{node, requests}`` of every other non-terminal pod)."""
    result_nodes, total, limits = [], 0, {}
    for node in nodes:
        allocatable = {k: parse_quantity(v) for k, v in (node.get("allocatable") or {}).items()}
        used: dict[str, float] = {"pods": 0.0}
        for pod in pods:
            if pod.get("node") == node["name"]:
                used["pods"] += 1
                for name, value in (pod.get("requests") or {}).items():
                    used[name] = used.get(name, 0.0) + value
        free = {name: allocatable.get(name, 0.0) - used.get(name, 0.0) for name in allocatable}
        why_not = node_eligible(node, selector or {}, tolerations)
        fits, limited_by = 0, None
        if why_not is None:
            needs = {name: value for name, value in per_sandbox.items() if value > 0}
            needs["pods"] = 1.0
            counts = {}
            for name, value in needs.items():
                # A resource the node does not report (e.g. ephemeral-storage) does not limit.
                if name in free:
                    counts[name] = max(0, math.floor(free[name] / value + 1e-9))
            if counts:
                limited_by = min(counts, key=lambda name: counts[name])
                fits = counts[limited_by]
            total += fits
            if limited_by:
                limits[limited_by] = limits.get(limited_by, 0) + 1
        result_nodes.append({"name": node["name"], "fits": fits, "limited_by": limited_by, "ineligible": why_not,
                             "free": {k: round(v, 4) for k, v in free.items()},
                             "allocatable": {k: round(v, 4) for k, v in allocatable.items()}})
    return {"max_sandboxes": total, "limited_by": max(limits, key=lambda k: limits[k]) if limits else None,
            "per_sandbox": {k: round(v, 4) for k, v in per_sandbox.items()}, "nodes": result_nodes}


def plan_levels(requested: Sequence[int], max_sandboxes: Optional[int]) -> dict[str, Any]:
    """The concurrency levels to run: the requested ones that fit; says why when capped."""
    wanted = sorted({int(c) for c in requested if int(c) >= 1})
    if max_sandboxes is None:
        return {"levels_requested": wanted, "levels": wanted, "capped": False,
                "reason": "node capacity unknown; levels not capped"}
    levels = [c for c in wanted if c <= max_sandboxes]
    dropped = [c for c in wanted if c > max_sandboxes]
    reason = (f"capped: the node(s) fit {max_sandboxes} sandbox(es) at once (allocatable minus other pods' requests, "
              f"divided by the template's requests + RuntimeClass overhead); dropped {dropped}") if dropped else None
    return {"levels_requested": wanted, "levels": levels, "capped": bool(dropped), "reason": reason}


def warm_replicas_for(n: int, max_sandboxes: Optional[int]) -> tuple[int, Optional[str]]:
    """Pool size for the sequential warm claims: ``n``, but never more than fit beside the one
    claimed sandbox that is in use while the pool refills (``max_sandboxes - 1``, at least 1),
    so a small node runs the bench instead of failing on an unschedulable pool. Settled claims
    each still find a warm sandbox: the pool is full again before the next one. Returns the
    size and, when capped, why."""
    if max_sandboxes is None or n <= max_sandboxes - 1:
        return n, None
    replicas = max(1, max_sandboxes - 1)
    return replicas, (f"warm pool capped at {replicas} replica(s), not n={n}: the node(s) fit {max_sandboxes} "
                      "sandbox(es) at once, one of them the claim in use")


def concurrency_from_env(env: Mapping[str, str]) -> tuple[int, ...]:
    """``BENCH_CONCURRENCY=1,2,4,8`` (the default); ``1`` runs only the sequential modes."""
    raw = env.get(CONCURRENCY_ENV, "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    try:
        levels = tuple(sorted({int(part) for part in raw.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"{CONCURRENCY_ENV}={raw!r}: expected comma-separated positive integers, e.g. 1,2,4,8") from None
    if not levels or levels[0] < 1:
        raise ValueError(f"{CONCURRENCY_ENV}={raw!r}: expected comma-separated positive integers, e.g. 1,2,4,8")
    return levels


def settle_from_env(env: Mapping[str, str]) -> bool:
    """``BENCH_SETTLE``: unset or ``1`` settles before each sequential claim, ``0`` does not."""
    raw = env.get(SETTLE_ENV, "1").strip() or "1"
    if raw not in ("0", "1"):
        raise ValueError(f"{SETTLE_ENV}={raw!r}: expected 1 (settle before each sequential claim) or 0 (back to back)")
    return raw == "1"


def bursts_for(concurrency: int, n: int) -> int:
    """Bursts per level: enough for about ``n`` samples, at least one."""
    return max(1, math.ceil(n / concurrency))


# ============================================================================ pure: controller metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str, prefixes: Sequence[str] = CONTROLLER_METRIC_PREFIXES) -> dict[str, Any]:
    """Prometheus text exposition → ``{family: {"type": t, "series": {labels json: {...}}}}``
    for the families starting with ``prefixes``; a histogram series is ``{buckets: {le: n},
    sum, count}``, a counter/gauge ``{value}``."""
    types: dict[str, str] = {}
    families: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
            continue
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if not match:
            continue
        name, raw_labels, raw_value = match.groups()
        labels = dict(_LABEL.findall(raw_labels or ""))
        value = float(raw_value)  # handles +Inf/NaN
        family, part = name, "value"
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                family, part = name[: -len(suffix)], suffix[1:]
        if not family.startswith(tuple(prefixes)):
            continue
        le = labels.pop("le", None)
        key = json.dumps(labels, sort_keys=True)
        entry = families.setdefault(family, {"type": types.get(family, "untyped"), "series": {}})
        series = entry["series"].setdefault(key, {"buckets": {}, "sum": 0.0, "count": 0.0} if entry["type"] == "histogram"
                                            else {"value": 0.0})
        if part == "bucket" and le is not None:
            series["buckets"][float(le)] = value
        elif part in ("sum", "count"):
            series[part] = value
        else:
            series["value"] = value
    return families


def metrics_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """What changed between two scrapes: per histogram series the observations in between
    (count, mean, bucket-estimated p50/p95/p99 in the metric's unit), per counter the
    increase; series that did not move are left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    for family, entry in after.items():
        old_series = (before.get(family) or {}).get("series") or {}
        for key, series in entry["series"].items():
            old = old_series.get(key) or {}
            labels = json.loads(key)
            if entry["type"] == "histogram":
                count = series["count"] - (old.get("count") or 0.0)
                if count <= 0:
                    continue
                buckets = {le: n - (old.get("buckets") or {}).get(le, 0.0) for le, n in series["buckets"].items()}
                total = series["sum"] - (old.get("sum") or 0.0)
                row = {"labels": labels, "count": int(count), "sum": round(total, 4), "mean": round(total / count, 4)}
                for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
                    estimate = histogram_quantile(fraction, buckets) if math.inf in buckets else None
                    row[name] = round(estimate, 4) if estimate is not None else None
                row["buckets"] = {("+Inf" if math.isinf(le) else format(le, "g")): int(n)
                                  for le, n in sorted(buckets.items())}
            else:
                increase = series["value"] - (old.get("value") or 0.0)
                if increase == 0:
                    continue
                row = {"labels": labels, "increase": round(increase, 4)}
            out.setdefault(family, []).append(row)
    return out


def route_waits(router_delta: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """From a router metrics delta: how many requests waited for their sandbox to reach the
    router's pod index (found / never found), their mean wait, and upstream connections opened."""
    if router_delta is None:
        return None
    rows = router_delta.get("sandbox_router_route_wait_seconds") or []
    found = [r for r in rows if r["labels"].get("outcome") == "found"]
    connects = router_delta.get("sandbox_router_upstream_connections_opened_total") or []
    count = sum(r["count"] for r in found)
    return {"found": count, "found_mean": round(sum(r["sum"] for r in found) / count, 4) if count else None,
            "not_found": sum(r["count"] for r in rows if r["labels"].get("outcome") == "not_found"),
            "connects": int(sum(r.get("increase", 0) for r in connects))}


# ============================================================================ pure: statistics of a section

def phase_statistics(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summaries of each phase, of the total and of the controller/cold figures over the
    successful samples."""
    ok = [s for s in samples if s.get("ok")]

    def values(getter: Callable[[Mapping[str, Any]], Any]) -> list[float]:
        return [v for v in (getter(s) for s in ok) if v is not None]

    controller_keys = sorted({k for s in ok for k in (s.get("controller") or {})})
    cold_keys = sorted({k for s in ok for k in (s.get("cold") or {})})
    return {
        "phases": {phase: summarize(values(lambda s, p=phase: (s.get("phases") or {}).get(p))) for phase in PHASES},
        "total": summarize(values(lambda s: s.get("total_seconds"))),
        "controller_phases": {k: summarize(values(lambda s, k=k: (s.get("controller") or {}).get(k)))
                              for k in controller_keys},
        "cold_phases": {k: summarize(values(lambda s, k=k: (s.get("cold") or {}).get(k))) for k in cold_keys},
        "first_command_split": {part: summarize(values(lambda s, p=part: (s.get("first_command_split") or {}).get(p)))
                                for part in SPLIT_PARTS} if any(s.get("first_command_split") for s in ok) else {},
    }


def section(samples: Sequence[dict[str, Any]], pool_replicas: int, prepare_seconds: float) -> dict[str, Any]:
    """Statistics of one mode (only successful samples count toward the latency figures)."""
    ok = [s for s in samples if s["ok"]]
    return {
        "pool_replicas": pool_replicas,
        "prepare_seconds": round(prepare_seconds, 3),
        "ok": len(ok),
        "failed": len(samples) - len(ok),
        "warm_adopted": sum(1 for s in samples if s["warm"]),
        "claim_ready": summarize([s["claim_ready_seconds"] for s in ok]),
        "first_exec": summarize([s["first_exec_seconds"] for s in ok]),
        **phase_statistics(samples),
        "samples": list(samples),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_times(path: str = "/proc/stat") -> Optional[list[int]]:
    """The machine's CPU time counters (user ... steal), or None where /proc/stat is absent."""
    try:
        with open(path) as stat:
            return [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def steal_percent(before: Optional[Sequence[int]], after: Optional[Sequence[int]]) -> Optional[float]:
    """Share of CPU time the hypervisor gave to other guests between two readings: on a shared VM
    the noise a load average does not show (the 8th counter of /proc/stat's cpu line)."""
    if not before or not after or len(before) < 8 or len(after) < 8:
        return None
    total = sum(after) - sum(before)
    return round((after[7] - before[7]) * 100 / total, 1) if total > 0 else None


# ============================================================================ measuring

def new_sample() -> dict[str, Any]:
    return {"claim": "", "sandbox": None, "ok": False, "warm": None, "claim_ready_seconds": None,
            "first_exec_seconds": None, "total_seconds": None, "requested_at": None, "sdk_returned_at": None,
            "first_result_at": None, "phases": {phase: None for phase in PHASES}, "clamped": [],
            "controller": {}, "cold": {}, "timeline": {}, "first_command_split": None, "error": None}


def claim_sample(sdk: Any, target: StackTarget, timeout: int = 300) -> dict[str, Any]:
    """One claim: seconds to Ready, seconds of the first command, whether it was warm
    (adopted from the pool: the sandbox name differs from the claim name), and the wall-clock
    times around the SDK calls that the phases start from; the claim is deleted."""
    sample = new_sample()
    started = time.monotonic()
    sample["requested_at"] = time.time()
    sandbox = None
    try:
        sandbox = sdk.create_sandbox(target.warm_pool, namespace=target.namespace, sandbox_ready_timeout=timeout)
        sample["sdk_returned_at"] = time.time()
        sample["claim_ready_seconds"] = round(time.monotonic() - started, 4)
        sample["claim"] = sandbox.claim_name
        sample["sandbox"] = sandbox.sandbox_id
        sample["warm"] = sandbox.sandbox_id != sandbox.claim_name
        timings = ResponseTimings()
        hooked = timings.attach(sandbox)
        exec_started = time.monotonic()
        result = sandbox.commands.run(FIRST_EXEC_COMMAND)
        exec_seconds = time.monotonic() - exec_started
        sample["first_result_at"] = time.time()
        sample["first_exec_seconds"] = round(exec_seconds, 4)
        if hooked:
            sample["first_command_split"] = split_latency(exec_seconds, timings.last, timings.lookup_seconds)
        sample["total_seconds"] = round(time.monotonic() - started, 4)
        sample["ok"] = result.exit_code == 0 and result.stdout == "ready\n"
        if not sample["ok"]:
            sample["error"] = f"first exec returned {result.exit_code}: {result.stdout!r} {result.stderr!r}"
    except Exception as error:  # noqa: BLE001 - a failed claim is a data point, not the end of the run
        sample["error"] = f"{type(error).__name__}: {error}"
    finally:
        if sandbox is not None:
            try:
                sdk.delete_sandbox(sandbox.claim_name, namespace=target.namespace)
            except Exception as error:  # noqa: BLE001
                sample["error"] = (sample["error"] or "") + f" (delete failed: {error})"
    return sample


def attach_phases(sample: dict[str, Any], events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fill in a sample's timeline and phases from the watch events (in place; returned)."""
    if not sample["claim"]:
        return sample
    timeline = claim_timeline(sample["claim"], sample["requested_at"], sample["sdk_returned_at"],
                              sample["first_result_at"], events)
    split = claim_phases(timeline)
    sample.update(timeline={k: (round(v, 6) if isinstance(v, float) else v) for k, v in timeline.items()},
                  phases=split["phases"], clamped=split["clamped"], controller=split["controller"], cold=split["cold"])
    if split["total"] is not None:
        sample["total_seconds"] = split["total"]
    return sample


def burst(sdk: Any, target: StackTarget, concurrency: int) -> tuple[list[dict[str, Any]], float]:
    """``concurrency`` claims released together (a barrier, so thread start-up is not
    measured); returns the samples and the burst's wall time."""
    gate = threading.Barrier(concurrency + 1)

    def one(_: int) -> dict[str, Any]:
        gate.wait()
        return claim_sample(sdk, target)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(one, index) for index in range(concurrency)]
        gate.wait()
        started = time.monotonic()
        samples = [future.result() for future in futures]
    return samples, time.monotonic() - started


class _NoObserver:
    """Stands in when no watch runs: phases then come from the SDK timings alone."""

    def settle(self) -> None:
        pass

    def snapshot(self) -> list[dict[str, Any]]:
        return []


class _NoScraper:
    source: Optional[str] = None
    error: Optional[str] = "not scraped"

    def scrape(self) -> Optional[dict[str, Any]]:
        return None


def _controller_delta(scraper: Any, before: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    after = scraper.scrape()
    return metrics_delta(before, after) if before is not None and after is not None else None


def _finish(samples: list[dict[str, Any]], observer: Any) -> None:
    observer.settle()
    events = observer.snapshot()
    for sample in samples:
        attach_phases(sample, events)


def measure_modes(target: StackTarget, cluster: Cluster, sdk: Any, n: int, log: Callable[[str], None] = print,
                  observer: Any = None, scraper: Any = None, levels: Sequence[int] = (1,),
                  capacity_info: Optional[dict[str, Any]] = None, router_scraper: Any = None,
                  settle: bool = True) -> dict[str, Any]:
    """Warm then cold claims through ``sdk`` (sequential: concurrency 1, each after a settled
    namespace unless ``settle`` is false), then for each level above 1 bursts in both modes;
    the pool's original replica count is restored in any case (errors, Ctrl-C). Returns the
    report without timestamps of the overall run."""
    observer = observer or _NoObserver()
    scraper = scraper or _NoScraper()
    router_scraper = router_scraper or _NoScraper()
    plan = plan_levels(levels, (capacity_info or {}).get("max_sandboxes"))
    original = int((cluster.warm_pool(target.namespace, target.warm_pool).get("spec") or {}).get("replicas") or 0)
    report: dict[str, Any] = {"schema_version": BENCH_SCHEMA_VERSION, "stack": target.stack,
                              "runtime": target.runtime_class, "n": n, "original_pool_replicas": original,
                              "machine": {"cpus": os.cpu_count() or 1, "load_before": load_average(), "load_after": None},
                              "capacity": capacity_info or {"max_sandboxes": None, "limited_by": None,
                                                            "per_sandbox": {}, "nodes": [], "error": "not measured"},
                              "concurrency": {**plan, "warm": [], "cold": []}}
    try:
        warm_replicas, capped = warm_replicas_for(n, (capacity_info or {}).get("max_sandboxes"))
        if capped:
            log(f"bench: {capped}")
        for mode, replicas in (("warm", warm_replicas), ("cold", 0)):
            log(f"bench: {mode}: pool {target.warm_pool} -> {replicas} replicas")
            cluster.set_pool_replicas(target.namespace, target.warm_pool, replicas)
            prepared = cluster.wait_pool_ready(target.namespace, target.warm_pool, replicas)
            load_before, metrics_before, router_before = load_average(), scraper.scrape(), router_scraper.scrape()
            times_before = cpu_times()
            samples, settle_seconds = [], []
            for index in range(n):
                if settle:
                    settle_seconds.append(round(cluster.wait_settled(target.namespace, target.warm_pool, replicas), 3))
                sample = claim_sample(sdk, target)
                samples.append(sample)
                log(f"bench: {mode} {index + 1}/{n}: ready {sample['claim_ready_seconds']}s, first exec "
                    f"{sample['first_exec_seconds']}s, warm={sample['warm']}"
                    + (f", settled after {settle_seconds[-1]}s" if settle else "")
                    + (f", error: {sample['error']}" if sample["error"] else ""))
            _finish(samples, observer)
            report[mode] = {**section(samples, replicas, prepared), "concurrency": 1, "load_before": load_before,
                            "load_after": load_average(), "steal_percent": steal_percent(times_before, cpu_times()),
                            "controller": _controller_delta(scraper, metrics_before),
                            "router": _controller_delta(router_scraper, router_before),
                            "sequence": "settled" if settle else "back-to-back", "settle_seconds": settle_seconds}
            report["concurrency"][mode].append(level_entry(report[mode], 1, "sequential", [], replicas))
        for mode in ("warm", "cold"):
            for level in (c for c in plan["levels"] if c > 1):
                report["concurrency"][mode].append(
                    measure_level(target, cluster, sdk, mode, level, bursts_for(level, n), observer, scraper, log,
                                  router_scraper))
    finally:
        log(f"bench: restoring pool {target.warm_pool} to {original} replicas")
        cluster.set_pool_replicas(target.namespace, target.warm_pool, original)
        if original:
            cluster.wait_pool_ready(target.namespace, target.warm_pool, original)
        report["machine"]["load_after"] = load_average()
    report["controller_metrics"] = {"available": scraper.error is None, "source": scraper.source,
                                    "error": scraper.error}
    return report


def level_entry(data: Mapping[str, Any], concurrency: int, source: str, walls: Sequence[float],
                pool_replicas: int) -> dict[str, Any]:
    """One point of the latency-vs-concurrency curve (statistics only; the samples stay in
    their section, except for bursts, whose samples are kept here)."""
    entry = {key: data[key] for key in ("ok", "failed", "warm_adopted", "claim_ready", "first_exec", "phases", "total",
                                        "controller_phases", "cold_phases", "first_command_split", "load_before",
                                        "load_after", "controller")}
    entry["steal_percent"] = data.get("steal_percent")
    entry["router"] = data.get("router")
    rates = [concurrency / wall for wall in walls if wall > 0]
    entry.update(concurrency=concurrency, source=source, pool_replicas=pool_replicas,
                 burst_seconds=[round(w, 4) for w in walls],
                 claims_per_second=round(sorted(rates)[len(rates) // 2], 3) if rates else None)
    return entry


def measure_level(target: StackTarget, cluster: Cluster, sdk: Any, mode: str, concurrency: int, bursts: int,
                  observer: Any, scraper: Any, log: Callable[[str], None], router_scraper: Any = None) -> dict[str, Any]:
    """``bursts`` bursts of ``concurrency`` claims; warm: the pool is refilled to
    ``concurrency`` ready sandboxes before each burst, so every claim can be adopted."""
    replicas = concurrency if mode == "warm" else 0
    cluster.set_pool_replicas(target.namespace, target.warm_pool, replicas)
    prepared = cluster.wait_pool_ready(target.namespace, target.warm_pool, replicas)
    router_scraper = router_scraper or _NoScraper()
    load_before, metrics_before, router_before = load_average(), scraper.scrape(), router_scraper.scrape()
    times_before = cpu_times()
    samples: list[dict[str, Any]] = []
    walls = []
    for index in range(bursts):
        if index:
            # A quiet namespace, not just the pool's readyReplicas: v0.5.6 counts a refilled member
            # ready before its claim controller takes it as a candidate, and a burst that came
            # then went cold after a 1-2 s wait (seen at x2). The previous burst's sandboxes are
            # gone too, so each burst meets the node as the first one did.
            prepared += cluster.wait_settled(target.namespace, target.warm_pool, replicas)
        got, wall = burst(sdk, target, concurrency)
        samples += got
        walls.append(wall)
        ready = sorted(s["claim_ready_seconds"] for s in got if s["claim_ready_seconds"] is not None)
        log(f"bench: {mode} x{concurrency} burst {index + 1}/{bursts}: {wall:.2f}s, claim->Ready "
            f"{ready[0] if ready else None}..{ready[-1] if ready else None}s, "
            f"failed {sum(1 for s in got if not s['ok'])}")
    _finish(samples, observer)
    data = {**section(samples, replicas, prepared), "load_before": load_before, "load_after": load_average(),
            "steal_percent": steal_percent(times_before, cpu_times()),
            "controller": _controller_delta(scraper, metrics_before), "router": _controller_delta(router_scraper, router_before)}
    return {**level_entry(data, concurrency, "burst", walls, replicas), "prepare_seconds": data["prepare_seconds"],
            "samples": data["samples"]}


# ============================================================================ cluster I/O

class ObjectWatch:
    """Watches SandboxClaims, Sandboxes and Pods of one namespace from the moment it starts and
    keeps every event (reduced by ``object_event``) with its client receive time. Its own
    ApiClient, so its long-lived connections never compete with the SDK's pool."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self._api = client.ApiClient(configuration=api_client.configuration)
        self.namespace = namespace
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._responses: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._last_event = time.monotonic()

    def _lister(self, kind: str) -> Callable[..., Any]:
        from kubernetes import client

        custom, core = client.CustomObjectsApi(self._api), client.CoreV1Api(self._api)
        if kind == "claim":
            group, version = versions.EXTENSIONS_API_VERSION.split("/")
            return lambda **kw: custom.list_namespaced_custom_object(group, version, self.namespace, CLAIM_PLURAL, **kw)
        if kind == "sandbox":
            return lambda **kw: custom.list_namespaced_custom_object(versions.SANDBOX_API_GROUP, SANDBOX_VERSION,
                                                                     self.namespace, SANDBOX_PLURAL, **kw)
        return lambda **kw: core.list_namespaced_pod(self.namespace, **kw)

    def _run(self, kind: str) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        lister = self._lister(kind)
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = lister(_preload_content=False)
                    version = json.loads(listed.data)["metadata"]["resourceVersion"]
                response = lister(watch=True, resource_version=version, timeout_seconds=300,
                                  allow_watch_bookmarks=True, _preload_content=False)
                self._responses[kind] = response
                opened = time.monotonic()
                for line in iter_resp_lines(response):
                    received = time.time()
                    if not line:
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        version = None  # 410 Gone or similar: list again
                        break
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
                        continue  # BOOKMARK: only its resourceVersion matters
                    reduced = object_event(kind, event["type"], obj, received)
                    with self._lock:
                        self.events.append(reduced)
                        self._last_event = time.monotonic()
                if time.monotonic() - opened < 1:
                    time.sleep(1)  # a watch the server ends at once must not become a busy loop
            except Exception as error:  # noqa: BLE001 - a lost watch costs phases, never the bench
                if self._stop.is_set():
                    return
                self.errors.append(f"{kind}: {type(error).__name__}: {error}"[:300])
                time.sleep(1)

    def start(self) -> "ObjectWatch":
        for kind in ("claim", "sandbox", "pod"):
            thread = threading.Thread(target=self._run, args=(kind,), name=f"bench-watch-{kind}", daemon=True)
            thread.start()
            self._threads.append(thread)
        time.sleep(0.5)  # let the initial lists finish before the first claim
        return self

    def settle(self, quiet: float = SETTLE_SECONDS, limit: float = 5.0) -> None:
        """Wait until no event arrived for ``quiet`` seconds (the last ones of a sample are still
        on their way when the SDK returns), at most ``limit``."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and time.monotonic() - self._last_event < quiet:
            time.sleep(0.1)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def stop(self) -> None:
        self._stop.set()
        for response in list(self._responses.values()):
            # Shutting the socket down ends the reading thread's recv at once; close() from
            # this thread would instead wait for the reader's lock (until the next event).
            try:
                response.connection.sock.shutdown(socket.SHUT_RDWR)
            except Exception:  # noqa: BLE001 - already closed, or not a socket
                pass
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> "ObjectWatch":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ControllerScraper:
    """The controller's /metrics through the API server's service proxy (the release's Service
    ``agent-sandbox-controller`` has a plain-HTTP port named ``metrics``; no port-forward
    needed), falling back to the pod proxy of a controller pod."""

    def __init__(self, api_client: Any, namespace: str = constants.CONTROLLER_NAMESPACE) -> None:
        self.api_client, self.namespace = api_client, namespace
        self.source: Optional[str] = None
        self.error: Optional[str] = None
        self._fetch: Optional[Callable[[], str]] = None

    def _locate(self) -> Callable[[], str]:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        for service in core.list_namespaced_service(self.namespace).items:
            for port in service.spec.ports or []:
                if port.name == "metrics":
                    name = f"{service.metadata.name}:{port.name}"
                    self.source = f"service proxy {self.namespace}/{name}/metrics"
                    return lambda: core.connect_get_namespaced_service_proxy_with_path(name, self.namespace, "metrics")
        for pod in core.list_namespaced_pod(self.namespace, label_selector="app=agent-sandbox-controller").items:
            for container in pod.spec.containers:
                for port in container.ports or []:
                    if port.name == "metrics":
                        name = f"{pod.metadata.name}:{port.container_port}"
                        self.source = f"pod proxy {self.namespace}/{name}/metrics"
                        return lambda: core.connect_get_namespaced_pod_proxy_with_path(name, self.namespace, "metrics")
        raise LookupError(f"no Service or pod port named 'metrics' in {self.namespace}")

    def scrape(self) -> Optional[dict[str, Any]]:
        """Parsed families, or None (the reason kept in ``error``; bench goes on without)."""
        try:
            if self._fetch is None:
                self._fetch = self._locate()
            families = parse_metrics(self._fetch())
            self.error = None
            return families
        except Exception as error:  # noqa: BLE001 - metrics are extra evidence
            self.error = f"{type(error).__name__}: {error}"[:300]
            return None


class RouterScraper:
    """The router's own /metrics (``sandbox_router_*``) through the session's tunnel, with the
    stack's token: the pod the tunnel reaches is the one every bench request goes through. Its
    route waits say how often a first command came before the watch knew the sandbox."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.source: Optional[str] = f"{url}/metrics"
        self.error: Optional[str] = None

    def scrape(self) -> Optional[dict[str, Any]]:
        import requests

        try:
            response = requests.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.token}"}, timeout=5)
            response.raise_for_status()
            self.error = None
            return parse_metrics(response.text, prefixes=ROUTER_METRIC_PREFIXES)
        except Exception as error:  # noqa: BLE001 - metrics are extra evidence
            self.error = f"{type(error).__name__}: {error}"[:300]
            return None


def runtime_class_terms(cluster: Cluster, runtime_class: Optional[str]) -> tuple[dict[str, Any], dict[str, str], list[Any]]:
    """(overhead, node selector, tolerations) the scheduler adds to every pod of ``runtime_class``
    (Kata: its VM's overhead and a node label); all empty for none or one that does not exist yet."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    if not runtime_class:
        return {}, {}, []
    try:
        rc = client.NodeV1Api(cluster.client).read_runtime_class(runtime_class)
    except ApiException as error:
        if error.status == 404:
            return {}, {}, []
        raise
    overhead = dict((rc.overhead.pod_fixed if rc.overhead else None) or {})
    if not rc.scheduling:
        return overhead, {}, []
    return (overhead, dict(rc.scheduling.node_selector or {}),
            [cluster.client.sanitize_for_serialization(t) for t in rc.scheduling.tolerations or []])


def scheduling_view(cluster: Cluster, own_namespace: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(nodes, other pods) as ``capacity`` takes them: every node, and the requests of every
    scheduled, non-terminal pod outside ``own_namespace`` (whose pods are the ones being sized)."""
    nodes = [{"name": node.metadata.name, "allocatable": dict(node.status.allocatable or {}),
              "labels": dict(node.metadata.labels or {}), "unschedulable": bool(node.spec.unschedulable),
              "taints": [{"key": t.key, "value": t.value, "effect": t.effect} for t in node.spec.taints or []]}
             for node in cluster.core.list_node().items]
    others = []
    for pod in cluster.core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed").items:
        if pod.metadata.namespace == own_namespace or not pod.spec.node_name:
            continue  # unscheduled pods take nothing yet
        spec = cluster.client.sanitize_for_serialization(pod.spec)
        others.append({"node": pod.spec.node_name, "requests": pod_requests(spec, spec.get("overhead"))})
    return nodes, others


def measure_capacity(cluster: Cluster, target: StackTarget) -> dict[str, Any]:
    """``capacity`` of the cluster for the pool's template (its pod spec, requests, node
    selector and tolerations, and its RuntimeClass's overhead and node selector)."""
    try:
        pool = cluster.warm_pool(target.namespace, target.warm_pool)
        template_name = ((pool.get("spec") or {}).get("sandboxTemplateRef") or {}).get("name")
        group, version = versions.EXTENSIONS_API_VERSION.split("/")
        template = cluster.custom.get_namespaced_custom_object(group, version, target.namespace,
                                                               "sandboxtemplates", template_name)
        pod_spec = ((template.get("spec") or {}).get("podTemplate") or {}).get("spec") or {}
        runtime_class = pod_spec.get("runtimeClassName")
        overhead, rc_selector, rc_tolerations = runtime_class_terms(cluster, runtime_class)
        selector = {**(pod_spec.get("nodeSelector") or {}), **rc_selector}
        tolerations = [*(pod_spec.get("tolerations") or []), *rc_tolerations]
        # the sandbox namespace is the bench's own
        nodes, others = scheduling_view(cluster, target.namespace)
        per_sandbox = pod_requests(pod_spec, overhead)
        result = capacity(nodes, others, per_sandbox, selector, tolerations)
        result.update(template=template_name, runtime_class=runtime_class, overhead=overhead, error=None)
        return result
    except Exception as error:  # noqa: BLE001 - without capacity the levels are just not capped
        return {"max_sandboxes": None, "limited_by": None, "per_sandbox": {}, "nodes": [],
                "error": f"{type(error).__name__}: {error}"[:300]}


def run_bench(target: StackTarget, cluster: Cluster, kube_args: Sequence[str], n: int,
              log: Callable[[str], None] = print, concurrency: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """Connect the official SDK to the router (tunnel, bearer token), watch the namespace, and
    measure both modes and the concurrency levels (``BENCH_CONCURRENCY`` by default)."""
    levels = tuple(concurrency) if concurrency else concurrency_from_env(os.environ)
    settle = settle_from_env(os.environ)  # a bad value stops here, before any claim
    started = time.time()
    capacity_info = measure_capacity(cluster, target)
    log(f"bench: capacity {capacity_info.get('max_sandboxes')} sandbox(es) at once "
        f"(limited by {capacity_info.get('limited_by')}; per sandbox {capacity_info.get('per_sandbox')})"
        + (f"; {capacity_info['error']}" if capacity_info.get("error") else ""))
    scraper = ControllerScraper(cluster.client)
    with sdk_session(target, cluster, kube_args) as session, \
            ObjectWatch(cluster.client, target.namespace) as observer:
        report = measure_modes(target, cluster, session.client, n, log, observer=observer, scraper=scraper,
                               levels=levels, capacity_info=capacity_info,
                               router_scraper=RouterScraper(session.tunnel.url, target.router_token),
                               settle=settle)
        report["watch_errors"] = observer.errors[:20]
    report["started_at"], report["finished_at"] = started, time.time()
    return report


# ============================================================================ output

def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def bench_summary(report: dict[str, Any]) -> str:
    lines = [f"bench {report['stack']} ({report.get('runtime')}), n={report['n']}:"]
    for mode in ("warm", "cold"):
        data = report.get(mode)
        if not data:
            continue
        ready, first = data["claim_ready"], data["first_exec"]
        lines.append(f"  {mode:4} (pool {data['pool_replicas']}): claim->Ready p50 {ready['p50']}s p95 {ready['p95']}s "
                     f"max {ready['max']}s | first exec p50 {first['p50']}s p95 {first['p95']}s max {first['max']}s | "
                     f"ok {data['ok']}/{data['ok'] + data['failed']}, adopted warm {data['warm_adopted']}")
        waits = route_waits(data.get("router"))
        if waits is not None:
            lines.append(f"        router: {waits['found']} of {data['ok']} first commands waited for the watch "
                         f"(mean {_fmt(waits['found_mean'])}s), {waits['not_found']} never found; "
                         f"{waits['connects']} upstream connections opened")
        phases = data.get("phases") or {}
        if phases:
            lines.append("        phases p50: " + ", ".join(f"{p} {_fmt(phases[p]['p50'])}s" for p in PHASES)
                         + f" | total p50 {_fmt((data.get('total') or {}).get('p50'))}s")
        split = data.get("first_command_split") or {}
        if split:
            lines.append("        first command p50 by Server-Timing: " + ", ".join(
                f"{part} " + ("-" if (split[part] or {}).get("p50") is None else f"{split[part]['p50'] * 1000:.1f}ms")
                for part in SPLIT_PARTS))
    curve = report.get("concurrency") or {}
    for mode in ("warm", "cold"):
        points = curve.get(mode) or []
        if len(points) > 1:
            lines.append(f"  {mode} vs concurrency: " + "; ".join(
                f"x{p['concurrency']} ready p50 {_fmt(p['claim_ready']['p50'])}s p95 {_fmt(p['claim_ready']['p95'])}s"
                f" (load {_fmt((p.get('load_before') or [None])[0])})" for p in points))
    if curve.get("reason"):
        lines.append(f"  {curve['reason']}")
    machine = report.get("machine") or {}
    if machine:
        lines.append(f"  load average before {machine.get('load_before')} after {machine.get('load_after')} "
                     f"on {machine.get('cpus')} CPUs")
    metrics = report.get("controller_metrics") or {}
    if metrics and not metrics.get("available"):
        lines.append(f"  controller metrics unavailable: {metrics.get('error')}")
    return "\n".join(lines)


def plot_bench(report: dict[str, Any], path: Path) -> Optional[Path]:
    """Four panels: box plots (with the samples) of claim→Ready and of the first exec, warm vs
    cold; a stacked bar of the median of each phase per mode and concurrency; claim latency vs
    concurrency (p50 solid, p95 dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("warm", "cold") if report.get(m)]
    if not modes:
        return None
    figure = plt.figure(figsize=(13, 9))
    grid = figure.add_gridspec(2, 4)
    boxes = (figure.add_subplot(grid[0, :2]), figure.add_subplot(grid[0, 2:]))
    for axis, (metric, title) in zip(boxes, (("claim_ready_seconds", "claim → Ready"),
                                             ("first_exec_seconds", "first exec"))):
        data = [[s[metric] for s in report[m]["samples"] if s["ok"]] for m in modes]
        axis.boxplot([d or [0.0] for d in data], tick_labels=modes, showfliers=False)
        for position, values in enumerate(data, start=1):
            axis.scatter([position + (i % 5 - 2) * 0.03 for i in range(len(values))], values, s=12, alpha=0.7)
        axis.set_title(f"{title} (n={report['n']}, sequential)")
        axis.set_ylabel("seconds")
        axis.grid(axis="y", alpha=0.3)

    # One stacked-bar panel per mode: warm and cold differ tenfold, a shared scale would hide
    # the warm phases.
    for column, mode in enumerate(modes):
        stacked = figure.add_subplot(grid[1, column])
        points = (report.get("concurrency") or {}).get(mode) or [{"concurrency": 1, **report[mode]}]
        bottoms = [0.0] * len(points)
        for phase in PHASES:
            heights = [((point.get("phases") or {}).get(phase) or {}).get("p50") or 0.0 for point in points]
            stacked.bar(range(len(points)), heights, bottom=bottoms, label=PHASE_TITLES[phase])
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        stacked.set_xticks(range(len(points)), [f"x{point['concurrency']}" for point in points])
        stacked.set_xlabel("claims at once")
        stacked.set_ylabel("seconds (median of each phase)")
        stacked.set_title(f"{mode}: where the time goes", fontsize=10)
        stacked.grid(axis="y", alpha=0.3)
        if column == 0:
            stacked.legend(fontsize=7)

    curve = figure.add_subplot(grid[1, 2:])
    ticks: set[int] = set()
    for mode in modes:
        points = (report.get("concurrency") or {}).get(mode) or []
        if not points:
            continue
        xs = [p["concurrency"] for p in points]
        line, = curve.plot(xs, [p["claim_ready"]["p50"] for p in points], marker="o", label=f"{mode} claim→Ready p50")
        curve.plot(xs, [p["claim_ready"]["p95"] for p in points], marker="x", linestyle="--", color=line.get_color(),
                   label=f"{mode} claim→Ready p95")
        curve.plot(xs, [(p.get("total") or {}).get("p50") for p in points], marker="s", linestyle=":",
                   color=line.get_color(), label=f"{mode} → first result p50")
        ticks.update(xs)
    if ticks:
        curve.set_xticks(sorted(ticks))
    reason = (report.get("concurrency") or {}).get("reason")
    curve.set_title("claim latency vs concurrency" + (" (capped by capacity)" if reason else ""))
    curve.set_xlabel("claims at once")
    curve.set_ylabel("seconds (log)")
    curve.set_yscale("log")  # warm and cold on one axis
    curve.grid(alpha=0.3, which="both")
    if ticks:
        curve.legend(fontsize=7)

    machine = report.get("machine") or {}
    load = f", load avg {(machine.get('load_before') or ['?'])[0]} → {(machine.get('load_after') or ['?'])[0]}" \
        if machine else ""
    figure.suptitle(f"agent-sandbox {report['stack']} ({report.get('runtime')}){load}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
