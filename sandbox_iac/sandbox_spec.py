"""Pure builders of the sandbox pod template and its network policy (no Pulumi here), so the
program, the policy pack's tests and the docs agree on what a hardened sandbox looks like."""

from __future__ import annotations

from typing import Any

from sandbox_iac import constants
from sandbox_iac.config import StackConfig

RUNTIME_CONTAINER_NAME = "python-runtime"
SANDBOX_POD_LABELS = {"app": "agent-sandbox-runtime"}


def sandbox_pod_template(config: StackConfig, image: str) -> dict[str, Any]:
    """``spec.podTemplate`` of the SandboxTemplate: non-root, no capabilities, no token,
    read-only root filesystem with a writable workspace, readiness on ``GET /``."""
    port = config.sandbox_port
    return {
        "metadata": {"labels": dict(SANDBOX_POD_LABELS)},
        "spec": {
            "runtimeClassName": config.runtime,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "hostNetwork": False,
            "hostPID": False,
            "hostIPC": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": constants.SANDBOX_USER_ID,
                "runAsGroup": constants.SANDBOX_USER_ID,
                "fsGroup": constants.SANDBOX_USER_ID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": RUNTIME_CONTAINER_NAME,
                "image": image,
                "imagePullPolicy": config.image_pull_policy,
                "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                "env": [
                    {"name": "SANDBOX_PORT", "value": str(port)},
                    {"name": "SANDBOX_BASE_DIR", "value": constants.SANDBOX_BASE_DIR},
                ],
                "readinessProbe": {
                    "httpGet": {"path": "/", "port": port},
                    "periodSeconds": 1,
                    "failureThreshold": 3,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/", "port": port},
                    "periodSeconds": 10,
                    "failureThreshold": 3,
                },
                "resources": config.sandbox_resources.as_dict(),
                "securityContext": {
                    "privileged": False,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [
                    {"name": "workspace", "mountPath": constants.SANDBOX_BASE_DIR},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }],
            "volumes": [
                {"name": "workspace", "emptyDir": {"sizeLimit": config.sandbox_resources.limits["ephemeral-storage"]}},
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            ],
        },
    }


def sandbox_network_policy(config: StackConfig) -> dict[str, Any]:
    """``spec.networkPolicy`` of the SandboxTemplate.

    Explicit on purpose: when it is omitted the controller installs its default policy *and*
    rewrites pod DNS to public resolvers, which breaks air-gapped clusters. Ingress comes only
    from router pods; egress reaches the internet but no cluster, private, link-local
    (metadata) or loopback range; DNS is allowed to the cluster resolver only."""
    return {
        "ingress": [{
            "from": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": constants.ROUTER_NAMESPACE}},
                "podSelector": {"matchLabels": dict(constants.ROUTER_POD_LABELS)},
            }],
            "ports": [{"protocol": "TCP", "port": config.sandbox_port}],
        }],
        "egress": [
            {"to": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(constants.EGRESS_DENIED_IPV4)}},
                {"ipBlock": {"cidr": "::/0", "except": list(constants.EGRESS_DENIED_IPV6)}},
            ]},
            {
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            },
        ],
    }


def sandbox_template_spec(config: StackConfig, image: str) -> dict[str, Any]:
    """Full ``spec`` of the v1beta1 SandboxTemplate."""
    return {
        "podTemplate": sandbox_pod_template(config, image),
        "networkPolicyManagement": "Managed",
        "networkPolicy": sandbox_network_policy(config),
    }


def warm_pool_spec(config: StackConfig) -> dict[str, Any]:
    """``spec`` of the SandboxWarmPool; ``Recreate`` so a new image or template rolls the pool."""
    return {
        "replicas": config.warm_pool_replicas,
        "sandboxTemplateRef": {"name": config.template_name},
        "updateStrategy": {"type": "Recreate"},
    }
