"""The demand-driven warm pool: the KEDA ScaledObject that sizes a SandboxWarmPool through its
``/scale`` subresource, as a pure builder (no Pulumi here) so the component, the policy pack and
the tests agree on it.

The signal is how many sandboxes are *in use*: pods of this template that no warm pool holds any
more (the controller takes the pool label ``agents.x-k8s.io/warm-pool-sandbox`` off the pod of a
sandbox it hands to a claim; cold-started sandboxes never had it). KEDA's built-in ``kubernetes-workload`` scaler counts those pods, and the HPA KEDA
makes keeps ``ceil(in use / inUsePerWarm)`` warm sandboxes, clamped to ``[min, max]``: a burst
that drains the pool raises the count at once, so the pool refills larger than before, and it
shrinks again ``scaleDownSeconds`` after the demand is gone. With ``min = 0`` KEDA itself takes
the pool to zero when nothing has been in use for ``scaleDownSeconds`` (and back to one at the
next claim; that claim starts cold).

Owns: ``Autoscaling`` (the validated knobs), ``claimed_pods_selector`` and ``scaled_object_spec``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

AUTOSCALERS = ("off", "keda")
# On every pod a warm pool holds; removed from the pod when a claim adopts its sandbox (v0.5.6).
WARM_POOL_LABEL = "agents.x-k8s.io/warm-pool-sandbox"
# How often KEDA itself looks at the signal (activation 0 <-> 1 and its metrics cache); the HPA
# between polls asks the metrics API server on its own period (kube-controller-manager's
# --horizontal-pod-autoscaler-sync-period, 15 s by default).
POLLING_SECONDS = 5
# Scale-up as fast as the HPA allows: double, or add 4, every 15 s -- whichever is more.
SCALE_UP_POLICIES = [{"type": "Percent", "value": 100, "periodSeconds": 15},
                     {"type": "Pods", "value": 4, "periodSeconds": 15}]


@dataclass(frozen=True)
class Autoscaling:
    """How the warm pool follows demand (``warmPoolAutoscaling: keda``)."""

    min_replicas: int
    """Fewest warm sandboxes (0 = scale to zero when nothing is in use)."""
    max_replicas: int
    """Most warm sandboxes the autoscaler may ask for."""
    in_use_per_warm: int
    """One warm sandbox is kept for every this many sandboxes in use (1 = as many warm as in use)."""
    scale_down_seconds: int
    """How long demand must stay lower before the pool shrinks (HPA stabilization, KEDA cooldown)."""


def claimed_pods_selector(pod_labels: Mapping[str, str]) -> str:
    """Label selector of the template's sandbox pods in use: its pod labels, without the pool label."""
    return ",".join([*(f"{key}={value}" for key, value in sorted(pod_labels.items())), f"!{WARM_POOL_LABEL}"])


def scaled_object_spec(autoscaling: Autoscaling, *, pool_api_version: str, pool_name: str,
                       pod_labels: Mapping[str, str]) -> dict[str, Any]:
    """``spec`` of the ScaledObject that sizes the SandboxWarmPool ``pool_name``."""
    return {
        "scaleTargetRef": {"apiVersion": pool_api_version, "kind": "SandboxWarmPool", "name": pool_name},
        "pollingInterval": POLLING_SECONDS,
        "cooldownPeriod": autoscaling.scale_down_seconds,
        "minReplicaCount": autoscaling.min_replicas,
        "maxReplicaCount": autoscaling.max_replicas,
        "advanced": {
            # Deleting the ScaledObject (warmPoolAutoscaling back to off, or `down`) leaves the
            # pool at its last size; the next `up` sets the declared warmPoolReplicas again.
            "restoreToOriginalReplicaCount": False,
            "horizontalPodAutoscalerConfig": {"behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                            "policies": [dict(p) for p in SCALE_UP_POLICIES]},
                "scaleDown": {"stabilizationWindowSeconds": autoscaling.scale_down_seconds},
            }},
        },
        "triggers": [{
            "type": "kubernetes-workload",
            "metadata": {
                "podSelector": claimed_pods_selector(pod_labels),
                "value": str(autoscaling.in_use_per_warm),
                # active (KEDA keeps at least one warm sandbox) while anything is in use
                "activationValue": "0",
            },
        }],
    }
