"""Pure builders of the sandbox pod template, its network policy and the warm pool spec (no Pulumi
here), so the components, the policy pack's tests and the docs agree on what a hardened sandbox
looks like. The keyword builders (``pod_template``, ``template_spec``, ``pool_spec``) take plain
values, as the components have them; the ``sandbox_*``/``warm_pool_spec`` forms take a validated
``StackConfig``."""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Mapping, Optional, Sequence

from agent_sandbox_pulumi.sandbox_iac import constants
from agent_sandbox_pulumi.sandbox_iac.config import StackConfig, minimal_networks

RUNTIME_CONTAINER_NAME = "python-runtime"
SANDBOX_POD_LABELS = {"app": "agent-sandbox-runtime"}
# The workspace volume's size when the resources name no ephemeral-storage limit.
WORKSPACE_SIZE_LIMIT = "1Gi"


def pod_template(image: str, *, port: int, image_pull_policy: str, resources: Mapping[str, Mapping[str, str]],
                 runtime_class_name: str, node_selector: Optional[Mapping[str, str]] = None,
                 tolerations: Optional[Sequence[Mapping[str, Any]]] = None) -> dict[str, Any]:
    """``spec.podTemplate`` of the SandboxTemplate from plain values: non-root, no capabilities,
    no token, read-only root filesystem with a writable workspace (sized by the
    ephemeral-storage limit), readiness on ``GET /``."""
    limits = dict(resources.get("limits") or {})
    placement: dict[str, Any] = {}
    if node_selector:
        placement["nodeSelector"] = dict(node_selector)
    if tolerations:
        placement["tolerations"] = [dict(t) for t in tolerations]
    return {
        "metadata": {"labels": dict(SANDBOX_POD_LABELS)},
        "spec": {
            "runtimeClassName": runtime_class_name,
            **placement,
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
                "imagePullPolicy": image_pull_policy,
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
                "resources": {part: dict(values) for part, values in resources.items()},
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
                {"name": "workspace", "emptyDir": {"sizeLimit": limits.get("ephemeral-storage", WORKSPACE_SIZE_LIMIT)}},
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            ],
        },
    }


def sandbox_pod_template(config: StackConfig, image: str) -> dict[str, Any]:
    """``spec.podTemplate`` for a validated stack config (see ``pod_template``)."""
    return pod_template(image, port=config.sandbox_port, image_pull_policy=config.image_pull_policy,
                        resources=config.sandbox_resources.as_dict(), runtime_class_name=config.runtime,
                        node_selector=dict(config.sandbox_node_selector),
                        tolerations=[dict(t) for t in config.sandbox_tolerations])


# Every TCP/UDP port but DNS: NetworkPolicy cannot say "all ports except 53", so two ranges.
ALL_PORTS_BUT_DNS = tuple(
    {"protocol": protocol, "port": low, "endPort": high}
    for protocol in ("TCP", "UDP")
    for low, high in ((1, constants.DNS_PORT - 1), (constants.DNS_PORT + 1, 65535))
)


def cluster_dns_egress_rule(dns_addresses: Iterable[str] = ()) -> dict[str, Any]:
    """Egress to the cluster's resolver on 53 only: the kube-dns pods, plus the addresses the
    cluster really resolves through when they are no kube-dns pod (NodeLocal DNSCache's
    169.254.20.10, or the kube-dns ClusterIP it intercepts on the node)."""
    peers: list[dict[str, Any]] = [{
        "namespaceSelector": {"matchLabels": {constants.NAMESPACE_NAME_LABEL: constants.KUBE_DNS_NAMESPACE}},
        "podSelector": {"matchLabels": dict(constants.KUBE_DNS_POD_LABELS)},
    }]
    peers += [{"ipBlock": {"cidr": str(ipaddress.ip_network(address))}} for address in dns_addresses]
    return {"to": peers, "ports": [{"protocol": "UDP", "port": constants.DNS_PORT},
                                   {"protocol": "TCP", "port": constants.DNS_PORT}]}


def _ip_block(cidr: str, denied: list[Any]) -> dict[str, Any]:
    """``ipBlock`` of ``cidr`` with every denied range inside it excepted (a denied range that
    contains ``cidr`` is refused by config validation before we get here)."""
    network = ipaddress.ip_network(cidr)
    excepted = [str(d) for d in minimal_networks(denied)
                if d.version == network.version and d.subnet_of(network)]  # type: ignore[arg-type]
    return {"cidr": cidr, "except": excepted} if excepted else {"cidr": cidr}


def sandbox_egress_rules(config: StackConfig) -> list[dict[str, Any]]:
    """The egress of ``config.sandbox_egress`` (before the DNS rule every mode has):

    - ``none``: nothing.
    - ``internet``: public unicast IPv4 and IPv6 on every TCP/UDP port but 53.
    - ``allowList``: each listed destination on its listed ports.

    The cluster's pod/Service/node ranges and every non-public range are excepted in all of them."""
    denied = [ipaddress.ip_network(c) for c in config.egress_denied_networks]
    if config.sandbox_egress == "none":
        return []
    if config.sandbox_egress == "internet":
        return [{"to": [{"ipBlock": _ip_block("0.0.0.0/0", denied)}, {"ipBlock": _ip_block("::/0", denied)}],
                 "ports": [dict(p) for p in ALL_PORTS_BUT_DNS]}]
    return [{"to": [{"ipBlock": _ip_block(rule.cidr, denied)}], "ports": [p.as_dict() for p in rule.ports]}
            for rule in config.sandbox_egress_allow]


def sandbox_network_policy(config: StackConfig) -> dict[str, Any]:
    """``spec.networkPolicy`` of the SandboxTemplate.

    Explicit on purpose: when it is omitted the controller installs its default policy *and*
    rewrites pod DNS to public resolvers, which breaks air-gapped clusters. Ingress comes only
    from router pods; egress follows ``sandboxEgress`` (see ``sandbox_egress_rules``), and DNS
    goes to the cluster resolver only, in every mode."""
    return {
        "ingress": [{
            "from": [{
                "namespaceSelector": {"matchLabels": {constants.NAMESPACE_NAME_LABEL: constants.ROUTER_NAMESPACE}},
                "podSelector": {"matchLabels": dict(constants.ROUTER_POD_LABELS)},
            }],
            "ports": [{"protocol": "TCP", "port": config.sandbox_port}],
        }],
        "egress": [*sandbox_egress_rules(config), cluster_dns_egress_rule(config.cluster_dns_addresses)],
    }


def template_spec(pod: dict[str, Any], network_policy: Mapping[str, Any]) -> dict[str, Any]:
    """Full ``spec`` of the v1beta1 SandboxTemplate from its pod template and network policy."""
    return {"podTemplate": pod, "networkPolicyManagement": "Managed", "networkPolicy": dict(network_policy)}


def sandbox_template_spec(config: StackConfig, image: str) -> dict[str, Any]:
    """Full ``spec`` of the v1beta1 SandboxTemplate for a validated stack config."""
    return template_spec(sandbox_pod_template(config, image), sandbox_network_policy(config))


def pool_spec(template_name: str, replicas: int) -> dict[str, Any]:
    """``spec`` of the SandboxWarmPool; ``Recreate`` so a new image or template rolls the pool."""
    return {
        "replicas": replicas,
        "sandboxTemplateRef": {"name": template_name},
        "updateStrategy": {"type": "Recreate"},
    }


def warm_pool_spec(config: StackConfig) -> dict[str, Any]:
    """``spec`` of the SandboxWarmPool for a validated stack config."""
    return pool_spec(config.template_name, config.warm_pool_replicas)
