"""Policies of the Agent Sandbox pack: pure check functions plus the pulumi_policy objects.

Each ``check_*`` function takes a resource's engine properties (camelCase, as the engine
hands them to a policy: ``apiVersion``, ``spec.podTemplate.spec...``) and the policy's
config, and returns one message per problem. Every message says what is wrong, where, why it
is a risk and how to fix it. No ``PolicyPack`` is constructed here (that blocks forever), so
tests import this module freely; ``__main__.py`` builds the pack.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Iterable, Iterator, Optional

from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from agent_sandbox_pulumi.sandbox_iac import constants

POLICY_PACK_NAME = "agent-sandbox-guardrails"

# Resource types as the engine names them (token of pulumi-kubernetes / CustomResource).
SANDBOX_TEMPLATE_TYPE = re.compile(r"^kubernetes:extensions\.agents\.x-k8s\.io/[^:]+:SandboxTemplate$")
SANDBOX_TYPE = re.compile(r"^kubernetes:agents\.x-k8s\.io/[^:]+:Sandbox$")
WARM_POOL_TYPE = re.compile(r"^kubernetes:extensions\.agents\.x-k8s\.io/[^:]+:SandboxWarmPool$")
SCALED_OBJECT_TYPE = re.compile(r"^kubernetes:keda\.sh/[^:]+:ScaledObject$")
DEPLOYMENT_TYPE = "kubernetes:apps/v1:Deployment"
SERVICE_TYPE = "kubernetes:core/v1:Service"
NETWORK_POLICY_TYPE = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
# Workload kinds whose pod templates carry images (for the image pinning policy).
WORKLOAD_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}

DEFAULT_ALLOWED_RUNTIME_CLASSES = ("gvisor", "kata-*")
DEFAULT_MAX_WARM_POOL_REPLICAS = 20
# Tags that are moved on purpose by their publishers: a digest-less reference to them can run
# different code tomorrow.
DEFAULT_MUTABLE_TAGS = ("latest", "latest-*", "main", "master", "edge", "nightly", "dev", "stable", "*-latest")
METADATA_IP = ipaddress.ip_address(constants.METADATA_ADDRESS)
ROUTER_APP = constants.ROUTER_POD_LABELS["app"]
# Ranges a sandbox's egress must never reach, with the reason a message names.
DENIED_EGRESS = [(ipaddress.ip_network(cidr), reason) for cidr, reason in
                 {**constants.EGRESS_DENIED_IPV4, **constants.EGRESS_DENIED_IPV6}.items()]


# ----------------------------------------------------------------------------- helpers

def _dig(value: Any, *path: str) -> Any:
    """``value[path0][path1]...`` or None when a step is missing or not a mapping."""
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _items(value: Any) -> list[Any]:
    """A list property as a list (None and non-sequences give an empty list)."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return []


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _name_of(props: Mapping[str, Any]) -> str:
    metadata = props.get("metadata")
    name = _dig(metadata, "name") if isinstance(metadata, Mapping) else None
    return str(name) if name else "<unnamed>"


def _matches_type(resource_type: str, pattern: Any) -> bool:
    if isinstance(pattern, re.Pattern):
        return bool(pattern.match(resource_type))
    return resource_type == pattern


def sandbox_pod_spec(resource_type: str, props: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The pod spec of a SandboxTemplate or Sandbox (``spec.podTemplate.spec``), else None."""
    if SANDBOX_TEMPLATE_TYPE.match(resource_type) or SANDBOX_TYPE.match(resource_type):
        spec = _dig(props, "spec", "podTemplate", "spec")
        return spec if isinstance(spec, Mapping) else {}
    return None


def workload_pod_spec(resource_type: str, props: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The pod spec of any pod-bearing resource the pack knows (workloads and sandboxes)."""
    spec = sandbox_pod_spec(resource_type, props)
    if spec is not None:
        return spec
    path = WORKLOAD_POD_SPEC_PATHS.get(resource_type)
    if path is None:
        return None
    found = _dig(props, *path)
    return found if isinstance(found, Mapping) else {}


def all_containers(pod_spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(``containers[i]`` path label, container) for containers, init and ephemeral containers."""
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for index, container in enumerate(_items(pod_spec.get(field))):
            if isinstance(container, Mapping):
                label = f"{field}[{index}] ({container.get('name') or 'unnamed'})"
                yield label, container


def is_router_deployment(props: Mapping[str, Any]) -> bool:
    """A Deployment whose pods carry ``app: sandbox-router`` (the contract the SDK and the
    controller's network policy rely on) or that is named like ours."""
    pod_labels = _dig(props, "spec", "template", "metadata", "labels") or {}
    labels = _dig(props, "metadata", "labels") or {}
    return (pod_labels.get("app") == ROUTER_APP or labels.get("app") == ROUTER_APP
            or _dig(props, "metadata", "name") == constants.ROUTER_DEPLOYMENT_NAME)


def is_router_service(props: Mapping[str, Any]) -> bool:
    """A Service selecting router pods or named ``sandbox-router-svc``."""
    selector = _dig(props, "spec", "selector") or {}
    return selector.get("app") == ROUTER_APP or _dig(props, "metadata", "name") == constants.ROUTER_SERVICE_NAME


def _config_list(config: Mapping[str, Any], key: str, default: Iterable[str]) -> list[str]:
    value = config.get(key)
    return [str(v) for v in value] if isinstance(value, Sequence) and not isinstance(value, str) else list(default)


# ----------------------------------------------------------------------------- checks: sandbox pods

def check_runtime_class(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The sandbox pod must run under an isolating RuntimeClass (gVisor or Kata)."""
    spec = sandbox_pod_spec(resource_type, props)
    if spec is None:
        return []
    allowed = _config_list(config, "allowedRuntimeClasses", DEFAULT_ALLOWED_RUNTIME_CLASSES)
    allow_runc = _is_true(config.get("allowInsecureRunc"))
    name = spec.get("runtimeClassName")
    where = f"{_name_of(props)}: spec.podTemplate.spec.runtimeClassName"
    if not name:
        return [f"{where} is not set: the sandbox would run untrusted code under the node's default runtime "
                f"(runc), sharing the host kernel. Fix: set runtimeClassName to one of {allowed} "
                f"(agent-sandbox:runtime gvisor or kata-qemu)."]
    if name == "runc":
        if allow_runc:
            return []
        return [f"{where} is 'runc': no isolation, a kernel exploit in a sandbox owns the node. Fix: use one of "
                f"{allowed}; for local development only, set the policy config allowInsecureRunc=true."]
    if not any(fnmatch.fnmatchcase(str(name), pattern) for pattern in allowed):
        return [f"{where} is {name!r}, which is not an allowed isolating runtime: sandboxes may share the host "
                f"kernel. Fix: use one of {allowed} (or add it to the policy config allowedRuntimeClasses)."]
    return []


def check_privileged(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """No privileged sandbox containers and no privilege escalation."""
    spec = sandbox_pod_spec(resource_type, props)
    if spec is None:
        return []
    problems = []
    for label, container in all_containers(spec):
        context = container.get("securityContext") or {}
        if _is_true(context.get("privileged")):
            problems.append(f"{_name_of(props)}: {label} is privileged: it gets every device and capability of the "
                            "node and escapes any runtime isolation. Fix: remove securityContext.privileged "
                            "(or set it to false).")
        if _is_true(context.get("allowPrivilegeEscalation")):
            problems.append(f"{_name_of(props)}: {label} sets allowPrivilegeEscalation: true, so setuid binaries can "
                            "regain root inside the sandbox. Fix: set securityContext.allowPrivilegeEscalation: false.")
    return problems


def check_host_namespaces(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """No hostNetwork / hostPID / hostIPC on sandbox pods."""
    spec = sandbox_pod_spec(resource_type, props)
    if spec is None:
        return []
    return [
        f"{_name_of(props)}: spec.podTemplate.spec.{field} is true: the sandbox joins the node's {what} and can "
        f"{risk}. Fix: remove {field} (or set it to false)."
        for field, what, risk in (
            ("hostNetwork", "network namespace", "reach node-local services and bypass NetworkPolicy"),
            ("hostPID", "process namespace", "see and signal every process on the node"),
            ("hostIPC", "IPC namespace", "read shared memory of other workloads"),
        )
        if _is_true(spec.get(field))
    ]


def check_host_ports(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """No hostPort on sandbox containers."""
    spec = sandbox_pod_spec(resource_type, props)
    if spec is None:
        return []
    return [
        f"{_name_of(props)}: {label} maps hostPort {port.get('hostPort')}: the sandbox becomes reachable on the "
        "node's address, bypassing the authenticated router. Fix: remove hostPort; clients go through the router."
        for label, container in all_containers(spec)
        for port in _items(container.get("ports"))
        if isinstance(port, Mapping) and port.get("hostPort")
    ]


def check_host_paths(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """No hostPath volumes on sandbox pods."""
    spec = sandbox_pod_spec(resource_type, props)
    if spec is None:
        return []
    return [
        f"{_name_of(props)}: volume {volume.get('name')!r} is a hostPath ({_dig(volume, 'hostPath', 'path')}): "
        "untrusted code can read or write the node's filesystem. Fix: use emptyDir or a PersistentVolumeClaim."
        for volume in _items(spec.get("volumes"))
        if isinstance(volume, Mapping) and volume.get("hostPath") is not None
    ]


def check_capabilities(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Sandbox containers add no capabilities and drop ALL."""
    spec = sandbox_pod_spec(resource_type, props)
    if spec is None:
        return []
    problems = []
    for label, container in all_containers(spec):
        capabilities = _dig(container, "securityContext", "capabilities") or {}
        added = _items(capabilities.get("add"))
        if added:
            problems.append(f"{_name_of(props)}: {label} adds capabilities {[str(a) for a in added]}: each one widens "
                            "the kernel attack surface of untrusted code. Fix: remove securityContext.capabilities.add.")
        dropped = {str(c).upper() for c in _items(capabilities.get("drop"))}
        if "ALL" not in dropped:
            problems.append(f"{_name_of(props)}: {label} does not drop ALL capabilities: it keeps the runtime's default "
                            "set (e.g. NET_RAW, CHOWN). Fix: set securityContext.capabilities.drop: [\"ALL\"].")
    return problems


def check_service_account_token(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Sandbox pods never get a Kubernetes API credential."""
    spec = sandbox_pod_spec(resource_type, props)
    if spec is None:
        return []
    problems = []
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{_name_of(props)}: spec.podTemplate.spec.automountServiceAccountToken is not false: code in "
                        "the sandbox could read a service-account token and call the Kubernetes API. "
                        "Fix: set automountServiceAccountToken: false explicitly.")
    for volume in _items(spec.get("volumes")):
        sources = _items(_dig(volume, "projected", "sources"))
        if any(isinstance(s, Mapping) and s.get("serviceAccountToken") is not None for s in sources):
            problems.append(f"{_name_of(props)}: volume {_dig(volume, 'name')!r} projects a serviceAccountToken into "
                            "the sandbox, handing it an API credential. Fix: remove the serviceAccountToken source.")
    return problems


def check_resource_limits(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Every sandbox container has cpu and memory limits."""
    spec = sandbox_pod_spec(resource_type, props)
    if spec is None:
        return []
    problems = []
    for label, container in all_containers(spec):
        limits = _dig(container, "resources", "limits") or {}
        missing = [r for r in ("cpu", "memory") if not limits.get(r)]
        if missing:
            problems.append(f"{_name_of(props)}: {label} has no {' and '.join(missing)} limit: one sandbox can starve "
                            "the node and every other sandbox on it. Fix: set resources.limits."
                            f"{missing[0]} (agent-sandbox:sandboxResources).")
    return problems


def check_run_as_non_root(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Sandbox containers run as a non-root user."""
    spec = sandbox_pod_spec(resource_type, props)
    if spec is None:
        return []
    return _non_root_problems(_name_of(props), spec, "sandbox code runs as root")


def _non_root_problems(name: str, spec: Mapping[str, Any], risk: str) -> list[str]:
    pod_context = spec.get("securityContext") or {}
    problems = []
    for label, container in all_containers(spec):
        context = container.get("securityContext") or {}
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        user = context.get("runAsUser", pod_context.get("runAsUser"))
        if non_root is not True:
            problems.append(f"{name}: {label} does not set runAsNonRoot: true: {risk} if the image's user is root, "
                            "one step closer to a container escape. Fix: set securityContext.runAsNonRoot: true "
                            "(pod or container) with a non-zero runAsUser.")
        elif user is not None and int(float(user)) == 0:
            problems.append(f"{name}: {label} sets runAsUser: 0 together with runAsNonRoot: the pod never starts and "
                            "the intent is root. Fix: use a non-zero runAsUser such as 1000.")
    return problems


# ----------------------------------------------------------------------------- checks: network

def _network_covers_metadata(cidr: str) -> bool:
    try:
        return METADATA_IP in ipaddress.ip_network(str(cidr), strict=False)
    except ValueError:
        return False


def egress_metadata_problems(egress: Any, where: str) -> list[str]:
    """Problems of a NetworkPolicy ``egress`` list that lets traffic reach the metadata address."""
    problems = []
    for index, rule in enumerate(_items(egress)):
        if not isinstance(rule, Mapping):
            continue
        peers = _items(rule.get("to"))
        if not peers:
            problems.append(f"{where}: egress[{index}] has no 'to', so it allows every destination including the "
                            f"cloud metadata address {constants.METADATA_ADDRESS} (node credentials). Fix: list "
                            "destinations explicitly, e.g. ipBlock 0.0.0.0/0 with except 169.254.0.0/16.")
            continue
        for peer_index, peer in enumerate(peers):
            block = peer.get("ipBlock") if isinstance(peer, Mapping) else None
            if not isinstance(block, Mapping) or not _network_covers_metadata(block.get("cidr", "")):
                continue
            excepted = any(_network_covers_metadata(e) for e in _items(block.get("except")))
            if not excepted:
                problems.append(f"{where}: egress[{index}].to[{peer_index}] ipBlock {block.get('cidr')} includes the "
                                f"metadata address {constants.METADATA_ADDRESS}: a sandbox could fetch node or cloud "
                                "credentials. Fix: add 169.254.0.0/16 (or 169.254.169.254/32) to ipBlock.except.")
    return problems


def _ip_network(value: Any) -> Any:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return None


def _left_after_excepts(region: Any, excepts: list[Any]) -> bool:
    """Whether part of ``region`` survives removing every ``except`` network from it."""
    remaining = [region]
    for excepted in excepts:
        kept = []
        for part in remaining:
            if part.version != excepted.version or not part.overlaps(excepted):
                kept.append(part)
            elif not part.subnet_of(excepted):
                kept.extend(part.address_exclude(excepted))
        remaining = kept
    return bool(remaining)


def _ports_open(ports: Any, port: int) -> bool:
    """Whether a rule's ``ports`` admit ``port`` (no ports: every port; named ports never
    match an ipBlock destination)."""
    entries = [e for e in _items(ports) if isinstance(e, Mapping)]
    if not _items(ports):
        return True
    for entry in entries:
        if entry.get("port") is None:
            return True
        low = _port_number(entry["port"])
        if low is not None and low <= port <= (_port_number(entry.get("endPort")) or low):
            return True
    return False


def _port_number(value: Any) -> Optional[int]:
    """A numeric port (the engine hands numbers over as floats); None for names and gaps."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _dns_only(ports: Any) -> bool:
    """Whether a rule's ports are exactly port 53 (of any protocol)."""
    entries = _items(ports)
    return bool(entries) and all(
        isinstance(e, Mapping) and _port_number(e.get("port")) == constants.DNS_PORT
        and _port_number(e.get("endPort")) in (None, constants.DNS_PORT)
        for e in entries)


def _selects_kube_dns(peer: Mapping[str, Any]) -> bool:
    labels = _dig(peer, "podSelector", "matchLabels") or {}
    return all(labels.get(k) == v for k, v in constants.KUBE_DNS_POD_LABELS.items())


def egress_range_problems(egress: Any, where: str, cluster_cidrs: Iterable[str] = ()) -> list[str]:
    """Problems of a sandbox's egress that reach cluster, private or reserved ranges, cluster
    pods, or DNS other than the cluster resolver (rules without ``to`` and the metadata
    address are reported by ``egress_metadata_problems``)."""
    everything = list(DENIED_EGRESS)
    for cidr in cluster_cidrs:
        network = _ip_network(cidr)
        if network is not None and not any(network.version == d.version and network.subnet_of(d) for d, _ in everything):
            everything.append((network, "a cluster range from the policy config clusterCidrs"))
    # Ranges holding the metadata address are judged by egress_metadata_problems (one message each).
    denied = [(net, reason) for net, reason in everything if METADATA_IP not in net]
    problems = []
    for index, rule in enumerate(_items(egress)):
        if not isinstance(rule, Mapping) or not _items(rule.get("to")):
            continue
        ports, dns_only = rule.get("ports"), _dns_only(rule.get("ports"))
        for peer_index, peer in enumerate(_items(rule.get("to"))):
            if not isinstance(peer, Mapping):
                continue
            at = f"{where}: egress[{index}].to[{peer_index}]"
            block = peer.get("ipBlock")
            if not isinstance(block, Mapping):
                if not (dns_only and _selects_kube_dns(peer)):
                    problems.append(f"{at} selects pods: sandboxes could reach cluster workloads (the router, the "
                                    "controller, other tenants' services). Fix: the only pod peer of a sandbox is "
                                    "kube-dns on port 53; reach anything else through its public address.")
                continue
            network = _ip_network(block.get("cidr"))
            if network is None:
                problems.append(f"{at} ipBlock {block.get('cidr')!r} is not a CIDR. Fix: use a network such as 0.0.0.0/0.")
                continue
            internal = any(network.version == d.version and network.subnet_of(d) for d, _ in everything)
            if dns_only and network.num_addresses == 1 and internal and METADATA_IP not in network:
                continue  # the cluster's own resolver (NodeLocal DNSCache, the kube-dns ClusterIP)
            excepts = [n for n in (_ip_network(e) for e in _items(block.get("except"))) if n is not None]
            for denied_network, reason in denied:
                if denied_network.version != network.version or not denied_network.overlaps(network):
                    continue
                region = denied_network if denied_network.subnet_of(network) else network
                if not _left_after_excepts(region, excepts):
                    continue
                shown = f"{region} ({reason})" if region == denied_network else f"{region} (inside {denied_network}, {reason})"
                problems.append(f"{at} ipBlock {block.get('cidr')} allows {shown}: sandboxes run hostile code and must "
                                "not reach the cluster's pods, Services or nodes, private networks or special-purpose "
                                f"addresses. Fix: add {denied_network} to ipBlock.except (agent-sandbox:sandboxEgress "
                                "renders every exclusion).")
            if not dns_only and _ports_open(ports, constants.DNS_PORT) or dns_only and not internal:
                problems.append(f"{where}: egress[{index}] opens port 53 to {block.get('cidr')}: sandboxes could query "
                                "resolvers outside the cluster directly (DNS tunnelling past the cluster resolver). "
                                "Fix: leave 53 out of the ports (e.g. ranges 1-52 and 54-65535); DNS goes to kube-dns.")
    return problems


def check_template_network_policy(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """A SandboxTemplate keeps a network policy whose egress excludes the metadata address, the
    cluster's and every private or reserved range, and sends DNS to the cluster resolver only."""
    if not SANDBOX_TEMPLATE_TYPE.match(resource_type):
        return []
    spec = props.get("spec") or {}
    management = spec.get("networkPolicyManagement") or "Managed"
    policy = spec.get("networkPolicy")
    name = _name_of(props)
    if management == "Unmanaged":
        # Whether an explicit NetworkPolicy covers it is a stack-wide question (see the stack policy).
        return []
    if management != "Managed":
        return [f"{name}: spec.networkPolicyManagement is {management!r}, not 'Managed' or 'Unmanaged'. "
                "Fix: use 'Managed' (the controller then installs the template's policy)."]
    if policy is None:
        return []  # the controller's default policy excludes 169.254.0.0/16 and private ranges
    if not isinstance(policy, Mapping):
        return [f"{name}: spec.networkPolicy is not an object. Fix: give ingress/egress rules or omit it."]
    where = f"{name}: spec.networkPolicy"
    return [*egress_metadata_problems(policy.get("egress"), where),
            *egress_range_problems(policy.get("egress"), where, _config_list(config, "clusterCidrs", ()))]


def check_network_policy_egress(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """An explicit NetworkPolicy that restricts egress excludes the metadata address."""
    if resource_type != NETWORK_POLICY_TYPE:
        return []
    spec = props.get("spec") or {}
    types = [str(t) for t in _items(spec.get("policyTypes"))]
    if "Egress" not in types and spec.get("egress") is None:
        return []
    return egress_metadata_problems(spec.get("egress"), f"NetworkPolicy {_name_of(props)}: spec")


# ----------------------------------------------------------------------------- checks: router

def check_router_non_root(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The router runs as a non-root user."""
    if resource_type != DEPLOYMENT_TYPE or not is_router_deployment(props):
        return []
    spec = _dig(props, "spec", "template", "spec") or {}
    return _non_root_problems(f"router Deployment {_name_of(props)}", spec,
                              "the router holds the auth token and reaches every sandbox; it would do so as root")


def check_router_probes(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Router containers have readiness and liveness probes."""
    if resource_type != DEPLOYMENT_TYPE or not is_router_deployment(props):
        return []
    spec = _dig(props, "spec", "template", "spec") or {}
    problems = []
    for label, container in all_containers(spec):
        if label.startswith("initContainers"):
            continue
        missing = [p for p in ("readinessProbe", "livenessProbe") if not container.get(p)]
        if missing:
            problems.append(f"router Deployment {_name_of(props)}: {label} has no {' or '.join(missing)}: the Service "
                            "sends traffic to routers that are not serving, and a hung router is never restarted. "
                            "Fix: add httpGet probes on /healthz.")
    return problems


def _router_container_envs(resource_type: str, props: Mapping[str, Any]) -> Iterator[tuple[str, str, dict]]:
    """(what, container label, env by name) of each main container of a router Deployment."""
    if resource_type != DEPLOYMENT_TYPE or not is_router_deployment(props):
        return
    spec = _dig(props, "spec", "template", "spec") or {}
    name = f"router Deployment {_name_of(props)}"
    for label, container in all_containers(spec):
        if not label.startswith("initContainers"):
            yield name, label, {str(e.get("name")): e for e in _items(container.get("env")) if isinstance(e, Mapping)}


def check_router_auth_token(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The router container gets its bearer token and unauthenticated mode is off."""
    problems = []
    for name, label, env in _router_container_envs(resource_type, props):
        token = env.get(constants.ROUTER_TOKEN_ENV)
        has_token = token is not None and (bool(token.get("value")) or token.get("valueFrom") is not None)
        if not has_token:
            problems.append(f"{name}: {label} has no {constants.ROUTER_TOKEN_ENV}: anyone who reaches the router can run "
                            "code in every sandbox. Fix: set env ROUTER_AUTH_TOKEN from a Secret (valueFrom.secretKeyRef).")
        insecure = env.get("ALLOW_UNAUTHENTICATED_ROUTER")
        if insecure is not None and _is_true(insecure.get("value")):
            problems.append(f"{name}: {label} sets ALLOW_UNAUTHENTICATED_ROUTER=true, which turns authentication off. "
                            "Fix: remove it; clients send 'Authorization: Bearer <routerAuthToken>'.")
    return problems


def check_router_sandbox_only(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The router resolves targets from its watch of sandbox pods and knows the pod ranges."""
    problems = []
    for name, label, env in _router_container_envs(resource_type, props):
        resolver = _dig(env, constants.ROUTER_RESOLVER_ENV, "value")
        if resolver != constants.ROUTER_RESOLVER_WATCH:
            problems.append(f"{name}: {label} does not set {constants.ROUTER_RESOLVER_ENV}=watch: the router then proxies "
                            "to whatever address a token holder names (the Kubernetes API, kubelets, any Service) "
                            "instead of the sandbox pods its watch knows. Fix: set ROUTER_RESOLVER=watch and "
                            "ROUTER_SANDBOX_NAMESPACES (the SandboxRouter component does).")
        if not _dig(env, constants.ROUTER_ALLOWED_POD_CIDRS_ENV, "value"):
            problems.append(f"{name}: {label} has no {constants.ROUTER_ALLOWED_POD_CIDRS_ENV}: the router accepts any "
                            "unicast address as a pod IP. Fix: set it to the cluster's pod CIDRs "
                            "(agent-sandbox:clusterPodCidrs).")
    return problems


def is_router_network_policy(props: Mapping[str, Any]) -> bool:
    """A NetworkPolicy selecting router pods or named like ours."""
    labels = _dig(props, "spec", "podSelector", "matchLabels") or {}
    return labels.get("app") == ROUTER_APP or _dig(props, "metadata", "name") == constants.ROUTER_NETWORK_POLICY


def _restricts(selector: Any) -> bool:
    """A label selector that selects less than everything."""
    return isinstance(selector, Mapping) and bool(_items(selector.get("matchExpressions")) or selector.get("matchLabels"))


def check_router_network_policy(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The router's NetworkPolicy restricts both directions and egress reaches only labelled
    pods of named namespaces and single addresses (the API server), on listed ports."""
    if resource_type != NETWORK_POLICY_TYPE or not is_router_network_policy(props):
        return []
    name = f"NetworkPolicy {_name_of(props)}"
    spec = props.get("spec") or {}
    types = [str(t) for t in _items(spec.get("policyTypes"))]
    problems = []
    if "Egress" not in types:
        problems.append(f"{name}: spec.policyTypes {types} does not restrict Egress: the router holds the token and "
                        "relays replies, so it could fetch any Service, kubelet or address for a caller. Fix: "
                        "policyTypes [Ingress, Egress] with egress to sandbox pods, kube-dns and the API server only.")
    if "Ingress" not in types:
        problems.append(f"{name}: spec.policyTypes {types} does not restrict Ingress: every port of the router is open "
                        "to every pod, sandboxes included. Fix: add Ingress with port 8080 from client namespaces.")
    for index, rule in enumerate(_items(spec.get("egress"))):
        if not isinstance(rule, Mapping):
            continue
        at = f"{name}: spec.egress[{index}]"
        if not _items(rule.get("to")):
            problems.append(f"{at} has no 'to', so it allows every destination. Fix: name the sandbox namespaces, "
                            "kube-dns or the API server's addresses.")
        if not _items(rule.get("ports")):
            problems.append(f"{at} opens every port of its destinations (kubelet, metrics, debug ports). Fix: list the "
                            "sandbox port, 53 or the API server port.")
        for peer_index, peer in enumerate(_items(rule.get("to"))):
            if not isinstance(peer, Mapping):
                continue
            block = peer.get("ipBlock")
            if isinstance(block, Mapping):
                network = _ip_network(block.get("cidr"))
                if network is None or network.num_addresses != 1:
                    problems.append(f"{at.replace(f'[{index}]', f'[{index}].to[{peer_index}]')} ipBlock "
                                    f"{block.get('cidr')} is a range: only single API server addresses (/32, /128) "
                                    "belong in the router's policy; sandboxes are selected by namespace and pod labels. "
                                    "Fix: replace it with the API server's addresses (agent-sandbox:apiServerEndpoints).")
                continue
            where = f"{name}: spec.egress[{index}].to[{peer_index}]"
            if "namespaceSelector" not in peer:
                problems.append(f"{where} selects pods of the router's own namespace ({constants.ROUTER_NAMESPACE}, where "
                                "the controller and its webhook run). Fix: add a namespaceSelector naming the sandbox "
                                "namespace.")
            elif not _restricts(peer.get("namespaceSelector")):
                problems.append(f"{where} selects pods of every namespace. Fix: select the sandbox namespaces by "
                                f"{constants.NAMESPACE_NAME_LABEL}.")
            elif not _restricts(peer.get("podSelector")):
                problems.append(f"{where} selects every pod of its namespaces, not only sandboxes. Fix: add a podSelector "
                                "with the sandbox pod labels.")
    return problems


def check_router_exposure(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The router Service stays cluster-internal unless exposure is explicitly allowed."""
    if resource_type != SERVICE_TYPE or not is_router_service(props):
        return []
    service_type = _dig(props, "spec", "type") or "ClusterIP"
    if service_type in ("LoadBalancer", "NodePort") and not _is_true(config.get("allowRouterExposure")):
        return [f"router Service {_name_of(props)} is of type {service_type}: the code-execution endpoint becomes "
                "reachable from outside the cluster, where a leaked token is enough to run anything. Fix: use "
                "type ClusterIP (clients tunnel with kubectl port-forward), or set the policy config "
                "allowRouterExposure=true behind a gateway you trust."]
    return []


# ----------------------------------------------------------------------------- checks: images, pool

def image_tag(image: str) -> tuple[Optional[str], Optional[str]]:
    """(tag, digest) of an image reference; a registry port is not mistaken for a tag."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    return tag, digest


def check_image_pinning(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Images carry a digest or an immutable tag (never ``latest``, never tagless)."""
    spec = workload_pod_spec(resource_type, props)
    if spec is None:
        return []
    mutable = _config_list(config, "mutableTags", DEFAULT_MUTABLE_TAGS)
    problems = []
    for label, container in all_containers(spec):
        image = str(container.get("image") or "")
        tag, digest = image_tag(image)
        if digest:
            continue
        where = f"{_name_of(props)}: {label} image {image!r}"
        if not image:
            problems.append(f"{_name_of(props)}: {label} has no image. Fix: set an image with a content tag or digest.")
        elif tag is None:
            problems.append(f"{where} has no tag, which means ':latest': nodes may run different code than was "
                            "reviewed and rollbacks are impossible. Fix: use a content-derived tag "
                            "(`make images` prints them) or an @sha256 digest.")
        elif any(fnmatch.fnmatchcase(tag, pattern) for pattern in mutable):
            problems.append(f"{where} uses the mutable tag {tag!r} without a digest: the image behind it can change "
                            "without any change in this stack. Fix: use a content-derived tag or pin @sha256:<digest>.")
    return problems


def check_warm_pool_replicas(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """A SandboxWarmPool stays within the configured replica budget, and so does the most an
    autoscaler (a KEDA ScaledObject on a warm pool) may ask for."""
    maximum = int(config.get("maxReplicas", DEFAULT_MAX_WARM_POOL_REPLICAS))
    if SCALED_OBJECT_TYPE.match(resource_type):
        if _dig(props, "spec", "scaleTargetRef", "kind") != "SandboxWarmPool":
            return []
        most = _dig(props, "spec", "maxReplicaCount")
        if most is not None and int(float(most)) > maximum:
            return [f"ScaledObject {_name_of(props)}: maxReplicaCount {int(float(most))} exceeds the maximum {maximum}: "
                    "the autoscaler could hold that many warm sandboxes' requests at once. "
                    f"Fix: set agent-sandbox:warmPoolMaxReplicas <= {maximum}, or raise the policy config maxReplicas."]
        return []
    if not WARM_POOL_TYPE.match(resource_type):
        return []
    replicas = _dig(props, "spec", "replicas")
    if replicas is None:
        return []
    if int(float(replicas)) > maximum:
        return [f"SandboxWarmPool {_name_of(props)}: spec.replicas {int(float(replicas))} exceeds the maximum {maximum}: "
                "every warm sandbox holds its cpu/memory requests all the time, so the pool can exhaust the cluster. "
                f"Fix: set agent-sandbox:warmPoolReplicas <= {maximum}, or raise the policy config maxReplicas."]
    return []


# ----------------------------------------------------------------------------- checks: stack

def _safe(getter: Callable[[], Any]) -> Any:
    """A property that may be unknown during preview; None when it is."""
    try:
        return getter()
    except UnknownValueError:
        return None


def check_stack(resources: Sequence[Any], config: Mapping[str, Any]) -> list[tuple[str, Optional[str]]]:
    """Whole-stack rules: every template is used by a warm pool, every pool names a declared
    template, a router Deployment, Service and NetworkPolicy exist, and Unmanaged templates are
    covered by an explicit NetworkPolicy that blocks the metadata address. Returns (message, urn) pairs."""
    templates, pools, policies = [], [], []
    router_deployments, router_services = [], []
    for resource in resources:
        rtype, props = resource.resource_type, resource.props
        if SANDBOX_TEMPLATE_TYPE.match(rtype):
            templates.append(resource)
        elif WARM_POOL_TYPE.match(rtype):
            pools.append(resource)
        elif rtype == NETWORK_POLICY_TYPE:
            policies.append(resource)
        elif rtype == DEPLOYMENT_TYPE and _safe(lambda p=props: is_router_deployment(p)):
            router_deployments.append(resource)
        elif rtype == SERVICE_TYPE and _safe(lambda p=props: is_router_service(p)):
            router_services.append(resource)

    def ident(resource: Any) -> tuple[Optional[str], Optional[str]]:
        return (_safe(lambda: _dig(resource.props, "metadata", "name")),
                _safe(lambda: _dig(resource.props, "metadata", "namespace")))

    problems: list[tuple[str, Optional[str]]] = []
    referenced = {(_safe(lambda p=p: _dig(p.props, "spec", "sandboxTemplateRef", "name")), ident(p)[1]) for p in pools}
    declared = {ident(t) for t in templates}
    for template in templates:
        name, namespace = ident(template)
        if name is None:
            continue  # unknown during preview: cannot tell yet
        if not any(ref == name and (ns is None or namespace is None or ns == namespace) for ref, ns in referenced):
            problems.append((f"SandboxTemplate {name} is not referenced by any SandboxWarmPool: claims through the SDK "
                             "need a warm pool, so the template is unusable (or forgotten and unreviewed). "
                             "Fix: add a SandboxWarmPool with spec.sandboxTemplateRef.name "
                             f"{name!r}, or remove the template.", template.urn))
    for pool in pools:
        ref = _safe(lambda p=pool: _dig(p.props, "spec", "sandboxTemplateRef", "name"))
        name, namespace = ident(pool)
        if ref is None and name is not None:
            problems.append((f"SandboxWarmPool {name} has no spec.sandboxTemplateRef.name: it cannot create sandboxes. "
                             "Fix: reference the stack's SandboxTemplate.", pool.urn))
        elif ref is not None and declared and not any(
                t == ref and (ns is None or namespace is None or ns == namespace) for t, ns in declared):
            problems.append((f"SandboxWarmPool {name} references SandboxTemplate {ref!r}, which this stack does not "
                             "declare: its sandboxes would use an unreviewed pod template. Fix: point it at a "
                             "template of this stack.", pool.urn))
    if not router_deployments:
        problems.append(("The stack has no router Deployment (pods labelled app: sandbox-router): the SDK cannot reach "
                         "any sandbox, and the controller's network policy only admits that label. "
                         "Fix: keep the SandboxRouter component in the program.", None))
    if not router_services:
        problems.append((f"The stack has no router Service ({constants.ROUTER_SERVICE_NAME} in "
                         f"{constants.ROUTER_NAMESPACE}): the SDK's tunnel and direct modes look for exactly that "
                         "Service. Fix: keep the SandboxRouter component in the program.", None))
    router_policies = [
        p for p in policies
        if _safe(lambda p=p: is_router_network_policy(p.props)) and ident(p)[1] in (None, constants.ROUTER_NAMESPACE)
        and "Egress" in [str(t) for t in _items(_safe(lambda p=p: _dig(p.props, "spec", "policyTypes")))]
    ]
    if router_deployments and not router_policies:
        problems.append((f"The stack has no NetworkPolicy for the router pods (podSelector app: {ROUTER_APP}, with "
                         f"Egress, in {constants.ROUTER_NAMESPACE}): a token holder could make the router fetch any "
                         "Service, pod, node or address in and outside the cluster. Fix: keep the SandboxRouter "
                         f"component (it declares NetworkPolicy {constants.ROUTER_NETWORK_POLICY}).", None))
    for template in templates:
        management = _safe(lambda t=template: _dig(t.props, "spec", "networkPolicyManagement"))
        if management != "Unmanaged":
            continue
        name, namespace = ident(template)
        covering = [p for p in policies if ident(p)[1] in (None, namespace)
                    and "Egress" in [str(t) for t in _items(_safe(lambda p=p: _dig(p.props, "spec", "policyTypes")))]]
        if not covering:
            problems.append((f"SandboxTemplate {name} sets networkPolicyManagement: Unmanaged but the stack declares no "
                             f"NetworkPolicy with Egress in namespace {namespace}: sandboxes get unrestricted network "
                             f"access, including the metadata address {constants.METADATA_ADDRESS}. Fix: use "
                             "'Managed', or add a NetworkPolicy whose egress excludes 169.254.0.0/16.", template.urn))
    return problems


# ----------------------------------------------------------------------------- policy objects

ResourceCheck = Callable[[str, Mapping[str, Any], Mapping[str, Any]], list[str]]


def resource_policy(name: str, description: str, check: ResourceCheck,
                    config_schema: Optional[PolicyConfigSchema] = None) -> ResourceValidationPolicy:
    """A ResourceValidationPolicy reporting every message ``check`` returns."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(args.resource_type, args.props, args.get_config() or {}):
            report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    config_schema=config_schema)


def _validate_stack(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for message, urn in check_stack(args.resources, args.get_config() or {}):
        report_violation(message, urn)


RUNTIME_CLASS_SCHEMA = PolicyConfigSchema(properties={
    "allowedRuntimeClasses": {"type": "array", "items": {"type": "string"},
                              "default": list(DEFAULT_ALLOWED_RUNTIME_CLASSES)},
    "allowInsecureRunc": {"type": "boolean", "default": False},
})
TEMPLATE_NETWORK_SCHEMA = PolicyConfigSchema(properties={
    "clusterCidrs": {"type": "array", "items": {"type": "string"}, "default": []},
})
ROUTER_EXPOSURE_SCHEMA = PolicyConfigSchema(properties={"allowRouterExposure": {"type": "boolean", "default": False}})
IMAGE_SCHEMA = PolicyConfigSchema(properties={
    "mutableTags": {"type": "array", "items": {"type": "string"}, "default": list(DEFAULT_MUTABLE_TAGS)},
})
WARM_POOL_SCHEMA = PolicyConfigSchema(properties={
    "maxReplicas": {"type": "integer", "minimum": 0, "default": DEFAULT_MAX_WARM_POOL_REPLICAS},
})

RESOURCE_POLICIES: list[ResourceValidationPolicy] = [
    resource_policy("sandbox-runtime-class", "Sandbox pods run under gVisor or Kata (runc only when explicitly allowed).",
                    check_runtime_class, RUNTIME_CLASS_SCHEMA),
    resource_policy("sandbox-no-privileged", "Sandbox containers are not privileged and cannot escalate privileges.",
                    check_privileged),
    resource_policy("sandbox-no-host-namespaces", "Sandbox pods do not share the node's network, PID or IPC namespace.",
                    check_host_namespaces),
    resource_policy("sandbox-no-host-ports", "Sandbox containers expose no hostPort.", check_host_ports),
    resource_policy("sandbox-no-host-paths", "Sandbox pods mount no hostPath volume.", check_host_paths),
    resource_policy("sandbox-capabilities", "Sandbox containers add no capabilities and drop ALL.", check_capabilities),
    resource_policy("sandbox-no-service-account-token", "Sandbox pods get no service-account token.",
                    check_service_account_token),
    resource_policy("sandbox-resource-limits", "Sandbox containers have cpu and memory limits.", check_resource_limits),
    resource_policy("sandbox-run-as-non-root", "Sandbox containers run as a non-root user.", check_run_as_non_root),
    resource_policy("sandbox-network-policy", "Sandbox templates keep a network policy whose egress excludes the "
                    "metadata address, cluster, private and reserved ranges, and sends DNS to the cluster resolver "
                    "only.", check_template_network_policy, TEMPLATE_NETWORK_SCHEMA),
    resource_policy("network-policy-metadata-egress", "NetworkPolicies that restrict egress exclude the metadata "
                    "address.", check_network_policy_egress),
    resource_policy("router-non-root", "The sandbox router runs as a non-root user.", check_router_non_root),
    resource_policy("router-probes", "The sandbox router has readiness and liveness probes.", check_router_probes),
    resource_policy("router-auth-token", "The sandbox router requires a bearer token.", check_router_auth_token),
    resource_policy("router-sandbox-only", "The router resolves targets from its watch of sandbox pods "
                    "(ROUTER_RESOLVER=watch) within the pod CIDRs.", check_router_sandbox_only),
    resource_policy("router-network-policy", "The router's NetworkPolicy restricts ingress and egress; egress reaches "
                    "only labelled pods of named namespaces and single API server addresses, on listed ports.",
                    check_router_network_policy),
    resource_policy("router-not-exposed", "The router Service is not a LoadBalancer/NodePort unless allowed.",
                    check_router_exposure, ROUTER_EXPOSURE_SCHEMA),
    resource_policy("images-pinned", "Images use a digest or an immutable tag, never latest or no tag.",
                    check_image_pinning, IMAGE_SCHEMA),
    resource_policy("warm-pool-max-replicas", "Warm pools stay within a configurable replica maximum.",
                    check_warm_pool_replicas, WARM_POOL_SCHEMA),
]

STACK_POLICY = StackValidationPolicy(
    name="sandbox-stack-consistency",
    description="Each SandboxTemplate is used by a warm pool, pools reference declared templates, a router "
                "and its NetworkPolicy exist, and Unmanaged templates are covered by an explicit egress NetworkPolicy.",
    validate=_validate_stack,
)

ALL_POLICIES = [*RESOURCE_POLICIES, STACK_POLICY]
