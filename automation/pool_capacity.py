"""Before ``up``: does the warm pool the config asks for fit on the cluster's nodes?

A pool that cannot be scheduled would otherwise show as an ``up`` waiting for ``readyReplicas``
until the engine's timeout, and an autoscaler maximum beyond the nodes as sandboxes that stay
Pending. Here it is one line with the numbers: the sandboxes asked for, what one sandbox requests
(from the config, as the template will declare it), and what the nodes have free once the other
pods' requests are taken off their allocatable (``automation.bench.capacity``). The sandbox
namespace's own pods are not counted as used: they are the pool being resized.

A node that is still joining (a worker ``kind create`` just made carries the ``not-ready`` taint
for a few seconds after the control plane answers) is not a node without room: while the pool
does not fit and some node is ineligible only for such a passing taint, ``fit_when_settled``
reads again, with a progress line, for up to three minutes.

Owns: ``PoolFit``, ``pool_fit`` (reads the cluster, as the bench's ``measure_capacity`` does),
``fit_when_settled`` (waits out joining nodes) and ``check_pool_fit`` (decides)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from automation.bench import capacity, pod_requests, scheduling_view
from automation.errors import CapacityError
from agent_sandbox_pulumi.sandbox_iac import constants
from agent_sandbox_pulumi.sandbox_iac.config import StackConfig
from agent_sandbox_pulumi.sandbox_iac.sandbox_spec import sandbox_pod_template


@dataclass(frozen=True)
class PoolFit:
    """How many sandboxes of this config the nodes hold at once, and why not more."""

    fits: int
    per_sandbox: dict[str, float]
    limited_by: Optional[str]
    nodes: list[dict[str, Any]]


def pool_fit(cluster: Any, config: StackConfig, overhead: Optional[Mapping[str, Any]] = None) -> PoolFit:
    """``cluster``: ``automation.kube.Cluster``. Free = allocatable − requests of every scheduled,
    non-terminal pod outside the sandbox namespace; ``overhead``: the RuntimeClass's."""
    pod_spec = sandbox_pod_template(config, "unused:0")["spec"]
    nodes, others = scheduling_view(cluster, config.sandbox_namespace)
    per_sandbox = pod_requests(pod_spec, overhead)
    result = capacity(nodes, others, per_sandbox, dict(config.sandbox_node_selector),
                      [dict(t) for t in config.sandbox_tolerations])
    return PoolFit(fits=result["max_sandboxes"], per_sandbox=result["per_sandbox"], limited_by=result["limited_by"],
                   nodes=result["nodes"])


TRANSIENT_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable",
                    "node.cloudprovider.kubernetes.io/uninitialized", "node.kubernetes.io/network-unavailable")
"""Taints the node lifecycle puts on a node while it joins or its kubelet is not reporting."""
SETTLE_SECONDS = 180.0


def joining_nodes(fit: PoolFit) -> list[str]:
    """``name (taint)`` of each node ineligible only because of a passing taint."""
    return [f"{n['name']} ({n['ineligible']})" for n in fit.nodes
            if n.get("ineligible") and any(taint in n["ineligible"] for taint in TRANSIENT_TAINTS)]


def fit_when_settled(read: Callable[[], PoolFit], floor: int, wait_seconds: float = SETTLE_SECONDS,
                     log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> PoolFit:
    """``read()`` again while ``floor`` sandboxes do not fit and some node is still joining, for up
    to ``wait_seconds``; the last reading. A pool that fits, or nodes that are all settled, end it
    at once."""
    deadline = clock() + wait_seconds
    fit = read()
    next_report = 0.0
    while fit.fits < floor and (joining := joining_nodes(fit)) and (now := clock()) < deadline:
        if now >= next_report:
            log(f"capacity: waiting for {', '.join(joining)} to be Ready (up to {deadline - now:.0f} s more)")
            next_report = now + 10
        sleep(2.0)
        fit = read()
    return fit


def _numbers(fit: PoolFit) -> str:
    each = ", ".join(f"{name} {value:g}" if name == "cpu" else f"{name} {value / 2**20:.0f}Mi"
                     for name, value in sorted(fit.per_sandbox.items()) if name != "pods")
    nodes = "; ".join(
        f"{n['name']}: " + (f"not eligible ({n['ineligible']})" if n.get("ineligible") else
                            f"cpu {n['free'].get('cpu', 0):g} free of {n['allocatable'].get('cpu', 0):g}, "
                            f"memory {n['free'].get('memory', 0) / 2**30:.1f} GiB free of "
                            f"{n['allocatable'].get('memory', 0) / 2**30:.1f} GiB")
        for n in fit.nodes)
    limit = f", limited by {fit.limited_by}" if fit.limited_by else ""
    return f"each sandbox requests {each}; the nodes fit {fit.fits}{limit} ({nodes})"


def check_pool_fit(config: StackConfig, fit: PoolFit, strict: bool) -> Optional[str]:
    """Raise ``CapacityError`` when the pool's floor does not fit and ``strict`` (a cluster this
    driver made: no autoscaler will add nodes); otherwise return the warning to print, if any."""
    prefix = constants.PROJECT_NAME
    key = "warmPoolReplicas" if config.autoscaling is None else "warmPoolMinReplicas"
    floor = config.warm_pool_floor
    if floor > fit.fits:
        message = (f"{prefix}:{key} = {floor} does not fit on the cluster: {_numbers(fit)} "
                   f"(fix: pulumi config set {prefix}:{key} {fit.fits}, lower sandboxResources.requests, "
                   "or give the cluster more capacity)")
        if strict:
            raise CapacityError(message)
        return "WARNING: " + message + "; going on (a node autoscaler may add room)"
    if config.autoscaling is not None and config.autoscaling.max_replicas > fit.fits:
        return (f"WARNING: {prefix}:warmPoolMaxReplicas = {config.autoscaling.max_replicas} is more than the nodes "
                f"hold: {_numbers(fit)}; sandboxes beyond that stay Pending until room frees up")
    return None
