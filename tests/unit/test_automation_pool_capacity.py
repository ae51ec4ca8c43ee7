"""automation.pool_capacity: a warm pool that cannot fit is one line with the numbers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from automation.errors import CapacityError
from automation.pool_capacity import PoolFit, check_pool_fit, fit_when_settled, joining_nodes, pool_fit
from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config

NODE = {"name": "node-a", "fits": 9, "limited_by": "cpu", "ineligible": None,
        "free": {"cpu": 0.9, "memory": 20 * 2**30}, "allocatable": {"cpu": 2.0, "memory": 23 * 2**30}}
FIT = PoolFit(fits=9, per_sandbox={"cpu": 0.1, "memory": 256 * 2**20, "pods": 1.0}, limited_by="cpu", nodes=[NODE])


def test_a_pool_that_fits_says_nothing() -> None:
    assert check_pool_fit(parse_stack_config({"warmPoolReplicas": "9"}, "s"), FIT, strict=True) is None


def test_a_pool_too_large_for_a_cluster_we_made_stops_with_the_numbers() -> None:
    with pytest.raises(CapacityError) as caught:
        check_pool_fit(parse_stack_config({"warmPoolReplicas": "12"}, "s"), FIT, strict=True)
    assert str(caught.value) == (
        "agent-sandbox:warmPoolReplicas = 12 does not fit on the cluster: each sandbox requests cpu 0.1, "
        "memory 256Mi; the nodes fit 9, limited by cpu (node-a: cpu 0.9 free of 2, memory 20.0 GiB free of "
        "23.0 GiB) (fix: pulumi config set agent-sandbox:warmPoolReplicas 9, lower sandboxResources.requests, or "
        "give the cluster more capacity)")


def test_elsewhere_it_is_a_warning_and_an_autoscaler_maximum_beyond_the_nodes_too() -> None:
    warning = check_pool_fit(parse_stack_config({"warmPoolReplicas": "12"}, "s"), FIT, strict=False)
    assert warning and warning.startswith("WARNING: agent-sandbox:warmPoolReplicas = 12 does not fit")
    scaled = parse_stack_config({"warmPoolAutoscaling": "keda", "warmPoolMinReplicas": "2",
                                 "warmPoolMaxReplicas": "20"}, "s")
    warning = check_pool_fit(scaled, FIT, strict=True)
    assert warning and warning.startswith("WARNING: agent-sandbox:warmPoolMaxReplicas = 20 is more than the nodes hold")
    with pytest.raises(CapacityError, match="warmPoolMinReplicas = 10 does not fit"):
        check_pool_fit(parse_stack_config({"warmPoolAutoscaling": "keda", "warmPoolMinReplicas": "10",
                                           "warmPoolMaxReplicas": "20"}, "s"), FIT, strict=True)


def _pod(namespace: str, node: str, cpu: str) -> SimpleNamespace:
    spec = {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}
    return SimpleNamespace(metadata=SimpleNamespace(namespace=namespace), spec=SimpleNamespace(node_name=node, raw=spec))


def test_the_fit_counts_other_pods_but_not_the_pool_being_resized() -> None:
    node = SimpleNamespace(metadata=SimpleNamespace(name="node-a", labels={}),
                           status=SimpleNamespace(allocatable={"cpu": "2", "memory": "8Gi", "pods": "110"}),
                           spec=SimpleNamespace(unschedulable=False, taints=[]))
    pods = [_pod("kube-system", "node-a", "1"), _pod("agent-sandbox-demo", "node-a", "500m")]
    cluster = SimpleNamespace(
        core=SimpleNamespace(list_node=lambda: SimpleNamespace(items=[node]),
                             list_pod_for_all_namespaces=lambda field_selector: SimpleNamespace(items=pods)),
        client=SimpleNamespace(sanitize_for_serialization=lambda spec: spec.raw))
    fit = pool_fit(cluster, parse_stack_config({}, "s"))
    # 1 core free (the sandbox namespace's 500m is the pool itself), 100m per sandbox
    assert fit.fits == 10 and fit.limited_by == "cpu"


JOINING = {"name": "w", "ineligible": "taint node.kubernetes.io/not-ready:NoSchedule"}
CONTROL = {"name": "cp", "ineligible": "taint node-role.kubernetes.io/control-plane:NoSchedule"}
READY = {"name": "w", "free": {"cpu": 2.0}, "allocatable": {"cpu": 2.0}}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_worker_still_joining_is_waited_for_then_counted() -> None:
    readings = iter([PoolFit(0, {}, None, [CONTROL, JOINING]), PoolFit(0, {}, None, [CONTROL, JOINING]),
                     PoolFit(4, {}, None, [CONTROL, READY])])
    clock, lines = Clock(), []
    fit = fit_when_settled(lambda: next(readings), 2, log=lines.append, sleep=clock.sleep, clock=clock)
    assert fit.fits == 4 and clock.now == 104.0
    assert lines == ["capacity: waiting for w (taint node.kubernetes.io/not-ready:NoSchedule) to be Ready "
                     "(up to 180 s more)"]


def test_no_wait_when_the_pool_fits_or_no_node_is_joining_and_a_bounded_wait_otherwise() -> None:
    clock = Clock()
    reads = []

    def read(fit: PoolFit):  # type: ignore[no-untyped-def]
        def again() -> PoolFit:
            reads.append(1)
            return fit
        return again

    assert fit_when_settled(read(PoolFit(0, {}, None, [CONTROL])), 2, sleep=clock.sleep, clock=clock).fits == 0
    assert fit_when_settled(read(PoolFit(3, {}, None, [CONTROL, JOINING])), 2, sleep=clock.sleep, clock=clock).fits == 3
    assert len(reads) == 2 and clock.now == 100.0  # neither waited
    fit_when_settled(read(PoolFit(0, {}, None, [JOINING])), 2, wait_seconds=10, log=lambda _: None,
                     sleep=clock.sleep, clock=clock)
    assert clock.now == 110.0  # gave up after the wait, the last reading decides
    assert joining_nodes(PoolFit(0, {}, None, [CONTROL, JOINING])) == [
        "w (taint node.kubernetes.io/not-ready:NoSchedule)"]
