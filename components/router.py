"""The sandbox router: the HTTP entry the official SDK talks to (Service
``sandbox-router-svc:8080`` in ``agent-sandbox-system``), guarded by a bearer token."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.options import child_options
from sandbox_iac import constants
from sandbox_iac.config import Resources


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class RouterArgs:
    """Inputs of SandboxRouter."""

    image: pulumi.Input[str]
    """Router image ref."""
    image_pull_policy: str
    """``Never`` for images loaded onto the nodes, ``IfNotPresent`` for pushed ones."""
    replicas: int
    """Deployment replicas (2 keeps the Service answering while a pod restarts)."""
    resources: Resources
    """Requests and limits of the router container."""
    auth_token: Optional[pulumi.Input[str]] = None
    """Bearer token clients must send; when None one is generated once and then kept."""
    allowed_pod_cidrs: tuple[str, ...] = ()
    """Pod CIDRs the router may proxy to; empty allows any non-restricted unicast address."""
    cluster_domain: str = "cluster.local"
    """Cluster DNS domain used for ``<id>.<ns>.svc.<domain>`` targets."""


class SandboxRouter(pulumi.ComponentResource):
    """Secret + Deployment + Service of the router.

    Outputs:
      service_name: ``sandbox-router-svc``.
      namespace: ``agent-sandbox-system``.
      port: 8080.
      auth_token: the bearer token (secret).
    """

    service_name: pulumi.Output[str]
    namespace: pulumi.Output[str]
    port: pulumi.Output[int]
    auth_token: pulumi.Output[str]

    def __init__(self, name: str, args: RouterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("agent-sandbox:index:SandboxRouter", name, None, opts)
        labels = {**constants.ROUTER_POD_LABELS, **constants.MANAGED_BY_LABEL}
        generated = args.auth_token is None
        token = args.auth_token if not generated else secrets.token_urlsafe(32)
        secret = k8s.core.v1.Secret(
            f"{name}-auth",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=constants.ROUTER_SECRET_NAME, namespace=constants.ROUTER_NAMESPACE, labels=labels,
            ),
            string_data={constants.ROUTER_TOKEN_SECRET_KEY: pulumi.Output.secret(token)},
            # A generated token is made once: later runs keep the stored value instead of
            # rotating it (and restarting the router) on every `up`. The provider also diffs the
            # derived `data`, and a Secret data change is a replacement, so both are ignored.
            opts=child_options(self, opts, ignore_changes=["stringData", "data"] if generated else None),
        )
        # Pods read the token at start: a changed configured token must roll them. A generated
        # token never changes, so it gets no checksum.
        token_checksum = (
            pulumi.Output.from_input(token).apply(lambda t: {"agent-sandbox/token-sha256": _sha256(t)[:16]})
            if not generated else {}
        )
        container = {
            "name": "router",
            "image": args.image,
            "imagePullPolicy": args.image_pull_policy,
            "ports": [{"name": "http", "containerPort": constants.ROUTER_PORT, "protocol": "TCP"}],
            "env": [
                {"name": constants.ROUTER_TOKEN_ENV, "valueFrom": {"secretKeyRef": {
                    "name": constants.ROUTER_SECRET_NAME, "key": constants.ROUTER_TOKEN_SECRET_KEY}}},
                {"name": "CLUSTER_DOMAIN", "value": args.cluster_domain},
                # The router refuses to proxy to its own address.
                {"name": "ROUTER_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                *([{"name": "ROUTER_ALLOWED_POD_CIDRS", "value": ",".join(args.allowed_pod_cidrs)}]
                  if args.allowed_pod_cidrs else []),
            ],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": constants.ROUTER_PORT}, "periodSeconds": 2},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": constants.ROUTER_PORT}, "periodSeconds": 10},
            "resources": args.resources.as_dict(),
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": constants.SANDBOX_USER_ID,
                "runAsGroup": constants.SANDBOX_USER_ID,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=constants.ROUTER_DEPLOYMENT_NAME, namespace=constants.ROUTER_NAMESPACE, labels=labels,
            ),
            spec={
                "replicas": args.replicas,
                "selector": {"matchLabels": dict(constants.ROUTER_POD_LABELS)},
                "template": {
                    "metadata": {"labels": labels, "annotations": token_checksum},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {"runAsNonRoot": True, "runAsUser": constants.SANDBOX_USER_ID,
                                            "runAsGroup": constants.SANDBOX_USER_ID},
                        "containers": [container],
                    },
                },
            },
            opts=child_options(self, opts, depends_on=[secret]),
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=constants.ROUTER_SERVICE_NAME, namespace=constants.ROUTER_NAMESPACE, labels=labels,
            ),
            spec={
                "type": "ClusterIP",
                "selector": dict(constants.ROUTER_POD_LABELS),
                "ports": [{"name": "http", "port": constants.ROUTER_PORT,
                           "targetPort": constants.ROUTER_PORT, "protocol": "TCP"}],
            },
            opts=child_options(self, opts, depends_on=[deployment]),
        )
        self.deployment = deployment
        self.service = service
        self.secret = secret
        self.service_name = service.metadata.name
        self.namespace = service.metadata.namespace
        self.port = pulumi.Output.from_input(constants.ROUTER_PORT)
        self.auth_token = pulumi.Output.secret(secret.string_data.apply(
            lambda data: (data or {}).get(constants.ROUTER_TOKEN_SECRET_KEY, "")))
        self.register_outputs({
            "service_name": self.service_name,
            "namespace": self.namespace,
            "port": self.port,
            "auth_token": self.auth_token,
        })
