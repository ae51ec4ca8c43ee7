"""automation.pool_capacity: a warm pool that cannot fit is one line with the numbers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from automation.errors import CapacityError
from automation.pool_capacity import PoolFit, check_pool_fit, pool_fit
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
