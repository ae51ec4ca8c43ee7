"""The stack's kubectl flags, and pool waits of the driver's Kubernetes helper with the API calls
replaced by scripted states."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from automation import kube
from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config


def pod(ready: bool, terminating: bool = False, pooled: bool = True):
    condition = SimpleNamespace(type="Ready", status="True" if ready else "False")
    labels = {"agents.x-k8s.io/warm-pool-sandbox": "pool-hash"} if pooled else {}
    return SimpleNamespace(status=SimpleNamespace(conditions=[condition]),
                           metadata=SimpleNamespace(deletion_timestamp="t" if terminating else None, labels=labels))


class ScriptedCluster(kube.Cluster):
    """Each poll returns the next (pool pods, reported readyReplicas) state; the last one repeats."""

    def __init__(self, states):
        super().__init__(client=None)
        self.states, self.polls = list(states), 0

    def _state(self):
        state = self.states[min(self.polls, len(self.states) - 1)]
        return state

    def pool_pods(self, namespace):
        return self._state()[0]

    def pods(self, namespace, selector=None):
        state = self._state()
        return {**state[0], **(state[2] if len(state) > 2 else {})}  # the third element: pods outside the pool

    def warm_pool(self, namespace, name):
        state = self._state()
        self.polls += 1
        return {"status": {"readyReplicas": state[1]}}


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(kube.time, "sleep", lambda seconds: None)


def test_pod_readiness():
    assert kube.pod_is_ready(pod(True)) and not kube.pod_is_ready(pod(False))
    assert not kube.pod_is_ready(SimpleNamespace(status=None))


def test_refill_waits_for_ready_pods_besides_the_claimed_one():
    cluster = ScriptedCluster([
        ({"claimed": pod(True), "a": pod(True)}, 2),            # status not updated yet: not a refill
        ({"claimed": pod(True), "a": pod(True), "b": pod(False)}, 1),
        ({"a": pod(True), "b": pod(True)}, 2),                  # refilled
    ])
    cluster.wait_pool_refilled("ns", "pool", 2, claimed_pod="claimed", timeout=60)
    assert cluster.polls == 3


def test_refill_times_out_with_what_it_saw(monkeypatch):
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(kube.time, "monotonic", lambda: next(clock))
    cluster = ScriptedCluster([({"claimed": pod(True), "a": pod(True)}, 2)])
    with pytest.raises(TimeoutError, match=r"not refilled to 2 ready pods.*\['a'\]"):
        cluster.wait_pool_refilled("ns", "pool", 2, claimed_pod="claimed", timeout=30)


def test_pool_of_zero_is_ready_when_no_warm_pod_is_left():
    cluster = ScriptedCluster([({"x": pod(True)}, 1), ({}, 0)])
    cluster.wait_pool_ready("ns", "pool", 0, timeout=60)
    assert cluster.polls == 2


def test_settled_means_exactly_the_pools_ready_members_and_nothing_terminating():
    cluster = ScriptedCluster([
        ({"a": pod(True)}, 1, {"claimed": pod(True, terminating=True, pooled=False)}),  # the last claim's teardown
        ({"a": pod(True), "b": pod(False)}, 1),                           # the refill still booting
        ({"a": pod(True), "b": pod(True)}, 1),                            # status not updated yet
        ({"a": pod(True), "b": pod(True)}, 2),
    ])
    cluster.wait_settled("ns", "pool", 2, timeout=60, pad=0)
    assert cluster.polls == 4
    cold = ScriptedCluster([({}, 0, {"gone-soon": pod(True, terminating=True, pooled=False)}), ({}, 0)])
    cold.wait_settled("ns", "pool", 0, timeout=60, pad=0)
    assert cold.polls == 2
    # a sandbox someone is using (claimed, Ready) does not keep the namespace from settling
    in_use = ScriptedCluster([({"a": pod(True)}, 1, {"users-sandbox": pod(True, pooled=False)})])
    in_use.wait_settled("ns", "pool", 1, timeout=60, pad=0)
    assert in_use.polls == 1


def test_settling_times_out_with_the_pods_it_saw(monkeypatch):
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(kube.time, "monotonic", lambda: next(clock))
    cluster = ScriptedCluster([({"stuck": pod(False)}, 0)])
    with pytest.raises(TimeoutError, match=r"did not settle to 1 ready pool sandbox.*starting or terminating: \['stuck'\]"):
        cluster.wait_settled("ns", "pool", 1, timeout=30, pad=0)


def unschedulable_pod():
    condition = SimpleNamespace(type="PodScheduled", status="False", reason="Unschedulable",
                                message="0/1 nodes are available: 1 Insufficient cpu.")
    return SimpleNamespace(status=SimpleNamespace(conditions=[condition]))


def test_a_pool_that_cannot_fit_fails_fast_with_the_scheduler_reason(monkeypatch):
    clock = iter(range(0, 10000, 5))
    monkeypatch.setattr(kube.time, "monotonic", lambda: next(clock))
    cluster = ScriptedCluster([({"a": pod(True), "b": unschedulable_pod()}, 1)])
    with pytest.raises(kube.CapacityError, match=r"cannot reach 2 ready replicas: 1 pod\(s\) unschedulable "
                                                 r"\(b: 0/1 nodes are available: 1 Insufficient cpu.\)"):
        cluster.wait_pool_ready("ns", "pool", 2, timeout=600)
    assert cluster.polls < 20  # well before the timeout


@pytest.mark.parametrize("raw,expected", [
    ({"clusterFlavour": "kind", "clusterName": "x"}, ["--context", "kind-x"]),
    ({"clusterFlavour": "existing", "kubeconfig": "/k", "kubeContext": "c", "imageRegistry": "r/x"},
     ["--kubeconfig", "/k", "--context", "c"]),
    ({"clusterFlavour": "existing", "imageRegistry": "r/x"}, []),
])
def test_kube_args_follow_the_stack_config(raw, expected):
    assert kube.kube_args(parse_stack_config(raw, "s")) == expected


def test_autoscaling_with_keda_elsewhere_needs_its_crd_in_the_cluster() -> None:
    from automation.errors import MissingPrerequisite
    from automation.kube import KEDA_CRD, require_autoscaler
    from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config

    asked: list[str] = []
    keda = parse_stack_config({"warmPoolAutoscaling": "keda"}, "s")
    require_autoscaler(keda, lambda name: asked.append(name) or True)
    assert asked == [KEDA_CRD]
    with pytest.raises(MissingPrerequisite, match=r"CRD scaledobjects.keda.sh is not there \(fix: pulumi config set "
                                                  r"agent-sandbox:installKeda true"):
        require_autoscaler(keda, lambda name: False)
    # installed by the stack, or no autoscaling: nothing to ask
    for raw in ({"warmPoolAutoscaling": "keda", "installKeda": "true"}, {}):
        require_autoscaler(parse_stack_config(raw, "s"), lambda name: pytest.fail("asked the cluster"))
