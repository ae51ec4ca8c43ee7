"""sandbox_iac.autoscaling: the ScaledObject that sizes the warm pool, and its signal."""

from __future__ import annotations

from agent_sandbox_pulumi.sandbox_iac.autoscaling import (
    WARM_POOL_LABEL,
    Autoscaling,
    claimed_pods_selector,
    scaled_object_spec,
)

KNOBS = Autoscaling(min_replicas=0, max_replicas=8, in_use_per_warm=2, scale_down_seconds=90)


def test_the_signal_is_the_templates_claimed_pods() -> None:
    assert claimed_pods_selector({"b": "2", "app": "agent-sandbox-runtime"}) == \
        f"app=agent-sandbox-runtime,b=2,!{WARM_POOL_LABEL}"


def test_the_scaled_object_targets_the_pools_scale_subresource_with_the_knobs() -> None:
    spec = scaled_object_spec(KNOBS, pool_api_version="extensions.agents.x-k8s.io/v1beta1", pool_name="pool",
                              pod_labels={"app": "agent-sandbox-runtime"})
    assert spec["scaleTargetRef"] == {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
                                      "name": "pool"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (0, 8, 90)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"] == {"stabilizationWindowSeconds": 90}
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    (trigger,) = spec["triggers"]
    assert trigger == {"type": "kubernetes-workload", "metadata": {
        "podSelector": f"app=agent-sandbox-runtime,!{WARM_POOL_LABEL}", "value": "2", "activationValue": "0"}}


def test_the_pool_label_is_the_one_the_controller_sets_and_removes() -> None:
    # agent-sandbox v0.5.6: api/v1beta1 SandboxWarmPoolLabel, taken off the pod at adoption
    assert WARM_POOL_LABEL == "agents.x-k8s.io/warm-pool-sandbox"
