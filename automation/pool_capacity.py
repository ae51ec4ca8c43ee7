"""Before ``up``: does the warm pool the config asks for fit on the cluster's nodes?

A pool that cannot be scheduled would otherwise show as an ``up`` waiting for ``readyReplicas``
until the engine's timeout, and an autoscaler maximum beyond the nodes as sandboxes that stay
Pending. Here it is one line with the numbers: the sandboxes asked for, what one sandbox requests
(from the config, as the template will declare it), and what the nodes have free once the other
pods' requests are taken off their allocatable (``automation.bench.capacity``). The sandbox
namespace's own pods are not counted as used: they are the pool being resized.

Owns: ``PoolFit``, ``pool_fit`` (reads the cluster, as the bench's ``measure_capacity`` does) and
``check_pool_fit`` (decides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

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
