"""The sandbox router: the HTTP entry the official SDK talks to (Service
``sandbox-router-svc:8080`` in ``agent-sandbox-system``), guarded by a bearer token, and what
confines it to sandboxes: its ServiceAccount with read access to sandbox pods only (for the
router's watch resolver), and its NetworkPolicy (sandbox pods, cluster DNS, the API server).

Owns: ``RouterArgs``, ``SandboxRouter`` and the router NetworkPolicy spec."""

import base64
import hashlib
import ipaddress
import secrets
from typing import Any, NotRequired, Optional, Sequence, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from agent_sandbox_pulumi.components.args import ContainerResources
from agent_sandbox_pulumi.components.options import child_options
from agent_sandbox_pulumi.sandbox_iac import constants
from agent_sandbox_pulumi.sandbox_iac.config import API_SERVER_ENDPOINT, ROUTER_RESOURCES, ApiServerEndpoint
from agent_sandbox_pulumi.sandbox_iac.quantity import parse_quantity
from agent_sandbox_pulumi.sandbox_iac.sandbox_spec import SANDBOX_POD_LABELS, cluster_dns_egress_rule


def gomaxprocs_for(cpu_limit: Any) -> Optional[str]:
    """GOMAXPROCS for the compiled router under a CPU limit (``"1"``, ``"1500m"``, ``2``): the
    whole cores of the quota, at least 1; None without a plain limit (none, or an Output).

    Go's own container-aware default never goes below 2, so under the default 1-CPU limit the
    router ran two threads of Go code inside one CPU of quota. Measured side by side on loopback
    (bench/proxy_floor.py, six passes): 2.6-10% more requests per second at 50 connections with
    1, and no loss at one. The Python router ignores the variable."""
    if isinstance(cpu_limit, bool) or not isinstance(cpu_limit, (int, float, str)):
        return None
    try:
        cores = parse_quantity(cpu_limit)
    except ValueError:
        return None
    return str(max(1, int(cores))) if cores > 0 else None


def _token_from_data(data: Optional[dict]) -> str:
    encoded = (data or {}).get(constants.ROUTER_TOKEN_SECRET_KEY)
    return base64.b64decode(encoded).decode() if encoded else ""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class RouterArgs(TypedDict):
    """Inputs of SandboxRouter."""

    image: pulumi.Input[str]
    """Router image ref (tag or digest)."""
    sandbox_namespaces: list[str]
    """Namespaces whose sandbox pods the router may reach: it watches their pods (a Role +
    RoleBinding in each) and may connect to them (its NetworkPolicy); nothing else. They must
    exist (depend on what creates them)."""
    allowed_pod_cidrs: list[str]
    """Pod CIDRs the router may proxy to (it refuses targets outside them): the cluster's pod ranges."""
    image_pull_policy: NotRequired[str]
    """``Never`` for images loaded onto the nodes, ``IfNotPresent`` (default) for pushed ones."""
    replicas: NotRequired[int]
    """Deployment replicas; default 2 (keeps the Service answering while a pod restarts)."""
    resources: NotRequired[ContainerResources]
    """Requests and limits of the router container; default requests 100m/128Mi, limits 1/1Gi."""
    sandbox_port: NotRequired[int]
    """The template's port: the only port the router proxies to; default 8888."""
    auth_token: NotRequired[pulumi.Input[str]]
    """Bearer token clients must send (kept secret); unset: one is generated once and then kept."""
    cluster_domain: NotRequired[str]
    """Cluster DNS domain used for ``<id>.<ns>.svc.<domain>`` targets; default ``cluster.local``."""
    api_server_endpoints: NotRequired[list[str]]
    """``address:port`` (``[v6]:port``, ``cidr:port``) where the router's watch reaches the API
    server; unset: read from EndpointSlice ``default/kubernetes`` (what the ``kubernetes``
    Service translates to)."""
    dns_addresses: NotRequired[list[str]]
    """Resolver addresses besides the kube-dns pods (NodeLocal DNSCache), port 53 only."""
    node_cidrs: NotRequired[list[str]]
    """Node address ranges allowed to call the router (kubelet probes, hostNetwork clients)."""


def parse_api_server_endpoints(items: Sequence[str]) -> tuple[ApiServerEndpoint, ...]:
    """``address:port`` strings as endpoints; raises ValueError naming a malformed one."""
    endpoints = []
    for item in items:
        match = API_SERVER_ENDPOINT.match(item)
        if match is None or not 1 <= int(match["port"]) <= 65535:
            raise ValueError(f"api_server_endpoints: {item!r} is not address:port (e.g. 172.18.0.2:6443)")
        endpoints.append(ApiServerEndpoint(str(ipaddress.ip_network(match["address"], strict=True)), int(match["port"])))
    return tuple(endpoints)


def _field(value: Any, name: str) -> Any:
    """A field of an EndpointSlice output object (typed output or plain dict under mocks)."""
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def api_server_endpoints_from_slice(endpoints: Any, ports: Any) -> tuple[ApiServerEndpoint, ...]:
    """The API server's addresses and ports from EndpointSlice ``default/kubernetes``.

    NetworkPolicy is enforced after Service translation, so the router's watch (which dials
    the ``kubernetes`` ClusterIP) must be allowed to these endpoints, not the ClusterIP."""
    addresses = [str(a) for e in endpoints or [] for a in (_field(e, "addresses") or [])]
    port_numbers = [int(_field(p, "port")) for p in ports or [] if _field(p, "port") is not None]
    if not addresses or not port_numbers:
        raise ValueError(f"EndpointSlice {constants.API_SERVER_ENDPOINT_SLICE} lists no API server address/port, so the "
                         "router's NetworkPolicy cannot allow its watch. Fix: pulumi config set "
                         f"{constants.PROJECT_NAME}:apiServerEndpoints <address>:<port>")
    return tuple(ApiServerEndpoint(str(ipaddress.ip_network(a)), port) for port in port_numbers for a in addresses)


def router_network_policy_spec(args: RouterArgs, api_server: Sequence[ApiServerEndpoint]) -> dict[str, Any]:
    """``spec`` of the router's NetworkPolicy.

    Egress: sandbox pods of the allowed namespaces on the template's port, cluster DNS, and the
    API server for the watch -- so neither a bug in the resolver nor a forged target reaches
    any other Service, pod, node or the internet. Ingress: 8080 from pods of every namespace
    except the sandbox namespaces (sandboxes never call the router), and from the node ranges.
    ``kubectl port-forward`` needs no rule: the kubelet dials the port on loopback inside the
    pod's network namespace, which NetworkPolicy does not filter."""
    by_port: dict[int, list[str]] = {}
    for endpoint in api_server:
        cidrs = by_port.setdefault(endpoint.port, [])
        if endpoint.cidr not in cidrs:
            cidrs.append(endpoint.cidr)
    sandbox_peers = [{
        "namespaceSelector": {"matchLabels": {constants.NAMESPACE_NAME_LABEL: namespace}},
        "podSelector": {"matchLabels": dict(SANDBOX_POD_LABELS)},
    } for namespace in args["sandbox_namespaces"]]
    client_peers: list[dict[str, Any]] = [{"namespaceSelector": {"matchExpressions": [{
        "key": constants.NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": list(args["sandbox_namespaces"])}]}}]
    client_peers += [{"ipBlock": {"cidr": cidr}} for cidr in args.get("node_cidrs") or ()]
    return {
        "podSelector": {"matchLabels": dict(constants.ROUTER_POD_LABELS)},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": client_peers, "ports": [{"protocol": "TCP", "port": constants.ROUTER_PORT}]}],
        "egress": [
            {"to": sandbox_peers, "ports": [{"protocol": "TCP", "port": args.get("sandbox_port", constants.SANDBOX_PORT)}]},
            cluster_dns_egress_rule(args.get("dns_addresses") or ()),
            *({"to": [{"ipBlock": {"cidr": cidr}} for cidr in cidrs], "ports": [{"protocol": "TCP", "port": port}]}
              for port, cidrs in by_port.items()),
        ],
    }


class SandboxRouter(pulumi.ComponentResource):
    """Secret, ServiceAccount, per-namespace pod-reader Role + RoleBinding, NetworkPolicy,
    Deployment and Service of the router.

    Outputs (registered camelCase):
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
        configured = args.get("auth_token")
        generated = configured is None
        token = configured if configured is not None else secrets.token_urlsafe(32)
        sandbox_namespaces = list(args["sandbox_namespaces"])
        sandbox_port = args.get("sandbox_port", constants.SANDBOX_PORT)
        allowed_pod_cidrs = list(args.get("allowed_pod_cidrs") or ())
        given = args.get("resources") or {}
        resources = {part: {**ROUTER_RESOURCES[part], **(given.get(part) or {})} for part in ROUTER_RESOURCES}
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
        if not sandbox_namespaces:
            raise ValueError("SandboxRouter needs at least one sandbox namespace")
        # The router's identity for its watch: it may read pods of the sandbox namespaces and
        # nothing else (no ClusterRole, no Sandbox/Secret access).
        account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=constants.ROUTER_SERVICE_ACCOUNT, namespace=constants.ROUTER_NAMESPACE, labels=labels,
            ),
            opts=child_options(self, opts),
        )
        bindings = []
        for namespace in sandbox_namespaces:
            in_namespace = k8s.meta.v1.ObjectMetaArgs(
                name=constants.ROUTER_POD_READER_ROLE, namespace=namespace, labels=dict(constants.MANAGED_BY_LABEL),
            )
            role = k8s.rbac.v1.Role(
                f"{name}-pods-{namespace}",
                metadata=in_namespace,
                rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
                opts=child_options(self, opts),
            )
            bindings.append(k8s.rbac.v1.RoleBinding(
                f"{name}-pods-{namespace}",
                metadata=in_namespace,
                role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                          "name": constants.ROUTER_POD_READER_ROLE},
                subjects=[{"kind": "ServiceAccount", "name": constants.ROUTER_SERVICE_ACCOUNT,
                           "namespace": constants.ROUTER_NAMESPACE}],
                opts=child_options(self, opts, depends_on=[role, account]),
            ))
        if args.get("api_server_endpoints"):
            configured_endpoints = parse_api_server_endpoints(args["api_server_endpoints"])
            policy_spec: pulumi.Input[dict] = router_network_policy_spec(args, configured_endpoints)
        else:
            # Read, not configured: KIND's and minikube's API server address is only known once
            # the cluster exists, and it follows control-plane changes on the next `up`.
            api_slice = k8s.discovery.v1.EndpointSlice.get(
                f"{name}-api-server", constants.API_SERVER_ENDPOINT_SLICE, opts=child_options(self, opts),
            )
            policy_spec = pulumi.Output.all(api_slice.endpoints, api_slice.ports).apply(
                lambda values: router_network_policy_spec(args, api_server_endpoints_from_slice(values[0], values[1])))
        network_policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=constants.ROUTER_NETWORK_POLICY, namespace=constants.ROUTER_NAMESPACE, labels=labels,
            ),
            spec=policy_spec,
            opts=child_options(self, opts),
        )
        container = {
            "name": "router",
            "image": args["image"],
            "imagePullPolicy": args.get("image_pull_policy") or "IfNotPresent",
            "ports": [{"name": "http", "containerPort": constants.ROUTER_PORT, "protocol": "TCP"}],
            "env": [
                {"name": constants.ROUTER_TOKEN_ENV, "valueFrom": {"secretKeyRef": {
                    "name": constants.ROUTER_SECRET_NAME, "key": constants.ROUTER_TOKEN_SECRET_KEY}}},
                {"name": "CLUSTER_DOMAIN", "value": args.get("cluster_domain") or "cluster.local"},
                # The router refuses to proxy to its own address.
                {"name": "ROUTER_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                # Targets are sandbox pods the router's watch knows, never caller-supplied addresses.
                {"name": constants.ROUTER_RESOLVER_ENV, "value": constants.ROUTER_RESOLVER_WATCH},
                {"name": "ROUTER_SANDBOX_NAMESPACES", "value": ",".join(sandbox_namespaces)},
                {"name": "ROUTER_SANDBOX_PORTS", "value": str(sandbox_port)},
                *([{"name": constants.ROUTER_ALLOWED_POD_CIDRS_ENV, "value": ",".join(allowed_pod_cidrs)}]
                  if allowed_pod_cidrs else []),
                *([{"name": "GOMAXPROCS", "value": gomaxprocs}]
                  if (gomaxprocs := gomaxprocs_for((resources.get("limits") or {}).get("cpu"))) else []),
            ],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": constants.ROUTER_PORT}, "periodSeconds": 2},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": constants.ROUTER_PORT}, "periodSeconds": 10},
            "resources": resources,
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
                "replicas": args.get("replicas", 2),
                "selector": {"matchLabels": dict(constants.ROUTER_POD_LABELS)},
                "template": {
                    "metadata": {"labels": labels, "annotations": token_checksum},
                    "spec": {
                        # The watch needs the API credential of the pod-reader account above.
                        "serviceAccountName": constants.ROUTER_SERVICE_ACCOUNT,
                        "automountServiceAccountToken": True,
                        "securityContext": {"runAsNonRoot": True, "runAsUser": constants.SANDBOX_USER_ID,
                                            "runAsGroup": constants.SANDBOX_USER_ID},
                        "containers": [container],
                    },
                },
            },
            # The policy first, so no router pod ever runs unfenced; the RBAC first, so the
            # watch works from the first start.
            opts=child_options(self, opts, depends_on=[secret, account, network_policy, *bindings]),
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
        self.service_account = account
        self.network_policy = network_policy
        self.service_name = service.metadata.name
        self.namespace = service.metadata.namespace
        self.port = pulumi.Output.from_input(constants.ROUTER_PORT)
        # From the stored `data` the pods read, not from `stringData`: the provider does not echo
        # stringData back, so on a later `up` that output is this run's freshly generated (and
        # ignored) value, not the token the Secret holds.
        self.auth_token = pulumi.Output.secret(secret.data.apply(_token_from_data))
        self.register_outputs({
            "serviceName": self.service_name,
            "namespace": self.namespace,
            "port": self.port,
            "authToken": self.auth_token,
        })
