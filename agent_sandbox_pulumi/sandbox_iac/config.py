"""Typed, validated stack configuration.

All keys live under the project namespace (``agent-sandbox:<key>``). Values are validated
before any resource is declared; every problem is reported in one ``ConfigError`` whose lines
each name the key, the bad value, the allowed values and the command that fixes it.

``parse_stack_config`` works on a plain mapping so the driver and the tests can use it without
a Pulumi engine; ``sandbox_iac.pulumi_config.read_stack_config`` feeds it from ``pulumi.Config``.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import yaml

from agent_sandbox_pulumi.sandbox_iac import constants, versions
from agent_sandbox_pulumi.sandbox_iac.kind_config import kind_cluster_config

CLUSTER_FLAVOURS = ("kind", "minikube", "existing")
SECURE_RUNTIMES = ("gvisor", "kata-qemu")
INSECURE_RUNTIME = "runc"
IMAGE_LOAD_STRATEGIES = ("kind", "minikube", "containerd", "registry", "preloaded")
IMAGE_BUILD_MODES = ("docker", "prebuilt")
IMAGE_VARIANTS = ("full", "minimal")
SANDBOX_EGRESS_MODES = ("internet", "none", "allowList")
EGRESS_PROTOCOLS = ("TCP", "UDP", "SCTP")
EGRESS_ALLOW_FIELDS = ("cidr", "ports", "protocol")
EGRESS_ALLOW_EXAMPLE = '[{"cidr": "151.101.0.0/16", "ports": [443]}]'
# `address:port`, `[v6-address]:port` or `cidr:port` (the last colon separates the port).
API_SERVER_ENDPOINT = re.compile(r"^\[?(?P<address>[0-9A-Fa-f.:/]+?)\]?:(?P<port>[0-9]{1,5})$")
PORT_RANGE = re.compile(r"^(?P<low>[0-9]{1,5})(-(?P<high>[0-9]{1,5}))?$")

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
CPU_QUANTITY = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
BYTES_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
# A tag or a digest is required: a bare name means ":latest", which is never reproducible.
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$")

RESOURCE_KEYS = ("cpu", "memory", "ephemeral-storage")
# Requests sized so a 2-core KIND node (control plane, CNI, controller, 2 routers: ~1.1 cores
# requested) still fits the warm pool, a claimed sandbox and its refill; the limits bound a burst.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "512Mi"},
    "limits": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
}
ROUTER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}


class ConfigError(ValueError):
    """One or more configuration values are invalid; ``problems`` has one line per key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


# Policy-pack limits users hit through these keys (policy/policies.py, docs/policy.md).
WARM_POOL_POLICY_CAP = 20


@dataclass(frozen=True)
class ConfigKey:
    """One configuration key: what the validator reads, and the one source of Pulumi.yaml's typed
    ``config:`` block and README's configuration table (``python -m agent_sandbox_pulumi.docs``)."""

    name: str
    """Key under the project namespace (``agent-sandbox:<name>``)."""
    default: Any
    """Value used when the key is unset; None: unset means "derived" (see ``default_doc``) or "none"."""
    description: str
    """One-paragraph explanation (Markdown), shown in README and Pulumi.yaml."""
    secret: bool = False
    """Set with ``pulumi config set --secret``; never printed."""
    schema_type: Optional[str] = None
    """Pulumi.yaml type (``string``/``integer``/``boolean``/``object``); None: inferred from the default.
    ``untyped`` leaves the engine's type check off for keys that take either a list or a string."""
    default_doc: Optional[str] = None
    """README's default cell when the default is derived from other keys."""
    policy: Optional[str] = None
    """The policy-pack limit a user meets with this key (README states it next to the key)."""

    @property
    def pulumi_type(self) -> Optional[str]:
        """The ``type`` of this key in Pulumi.yaml; None for ``untyped``."""
        if self.schema_type == "untyped":
            return None
        if self.schema_type:
            return self.schema_type
        if isinstance(self.default, bool):
            return "boolean"
        if isinstance(self.default, int):
            return "integer"
        if isinstance(self.default, dict):
            return "object"
        return "string"

    @property
    def project_default(self) -> Any:
        """The default Pulumi.yaml declares. The engine treats a project key without a default as
        required, so keys that are optional get "" -- which the validator reads as unset."""
        return "" if self.default is None else self.default


CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("clusterFlavour", "kind", "Where the stack runs: `kind` | `minikube` | `existing`."),
    ConfigKey("clusterName", "agent-sandbox", "KIND cluster name or minikube profile (also the node label target for Kata)."),
    ConfigKey("kindWorkers", 0, "Worker nodes of the KIND cluster `up` creates, next to its control plane (`1` = sandboxes run on a worker; 0 to 8)."),
    ConfigKey("kubeContext", None, "kubeconfig context.", default_doc="`kind-<clusterName>` (kind), `<clusterName>` (minikube), current context (existing)"),
    ConfigKey("kubeconfig", None, "Path to a kubeconfig file.", default_doc="`$KUBECONFIG` or `~/.kube/config`"),
    ConfigKey("runtime", "gvisor", "Sandbox runtime class: `gvisor` | `kata-qemu` (`runc` only with `allowInsecureRunc`).",
              policy="`sandbox-runtime-class` accepts `gvisor` and `kata-*` only (policy config `allowedRuntimeClasses`, `allowInsecureRunc`)"),
    ConfigKey("allowInsecureRunc", False, "Set `true` to allow `runtime: runc` (no isolation; local development only).",
              policy="`sandbox-runtime-class` still rejects `runc` unless its own `allowInsecureRunc` is true"),
    ConfigKey("manageRuntimeClass", True, "Declare the gVisor RuntimeClass (set `false` when the cluster already ships it)."),
    ConfigKey("sandboxNamespace", "agent-sandbox-demo", "Namespace of the SandboxTemplate, SandboxWarmPool and sandboxes."),
    ConfigKey("templateName", "python-sandbox-template", "Name of the SandboxTemplate."),
    ConfigKey("sandboxImage", None, "Runtime image ref (required with `imageBuild: prebuilt`; tag or digest, never `latest`).",
              default_doc="built from `images/runtime`", policy="`images-pinned` rejects a missing or mutable tag (`latest`, `main`, `nightly`, ...) without a digest"),
    ConfigKey("sandboxPort", constants.SANDBOX_PORT, "Port the runtime listens on."),
    ConfigKey("sandboxResources", DEFAULT_RESOURCES, "Object `{requests: {cpu, memory, ephemeral-storage}, limits: {...}}` for sandbox pods; "
              "given parts are merged with the defaults (set parts with `pulumi config set --path agent-sandbox:sandboxResources.limits.cpu 1`).",
              default_doc="requests 100m/256Mi/512Mi, limits 500m/1Gi/1Gi", policy="`sandbox-resource-limits` requires cpu and memory limits"),
    ConfigKey("warmPoolName", "python-sandbox-warmpool", "Name of the SandboxWarmPool."),
    ConfigKey("warmPoolReplicas", 2, "Pre-warmed sandboxes (`0` = cold starts only; the program accepts 0 to 1000).",
              policy=f"`warm-pool-max-replicas` caps it at {WARM_POOL_POLICY_CAP} (policy config `maxReplicas`)"),
    ConfigKey("routerReplicas", 2, "Router Deployment replicas (1 to 100)."),
    ConfigKey("routerAuthToken", None, "Router bearer token, at least 16 characters; generated once and kept if unset. Read with `get_secret`, "
              "never printed.", secret=True, schema_type="untyped", default_doc="generated"),
    ConfigKey("routerAllowedPodCidrs", None, "Comma-separated pod CIDRs the router may proxy to; must lie inside `clusterPodCidrs`.",
              default_doc="`clusterPodCidrs`"),
    ConfigKey("routerSandboxNamespaces", None, "Comma-separated namespaces whose sandbox pods the router watches and reaches (a pods "
              "get/list/watch Role + RoleBinding and an egress rule in each; other namespaces must exist).", default_doc="`sandboxNamespace`"),
    ConfigKey("apiServerEndpoints", None, "Comma-separated `address:port` (`[v6]:port`, `cidr:port`) the router's watch may reach.",
              default_doc="read from EndpointSlice `default/kubernetes` at deploy time"),
    ConfigKey("sandboxEgress", "internet", "Sandbox egress: `internet` = public unicast IPv4/IPv6 on every TCP/UDP port except 53; `none` = "
              "cluster DNS only; `allowList` = only `sandboxEgressAllow`. Every mode: cluster DNS on 53, and never the cluster's own ranges, "
              "private, link-local/metadata, loopback, CGNAT, NAT64/6to4, ULA, multicast or reserved ranges.",
              policy="`sandbox-network-policy` rejects egress that reaches the metadata address or a private/cluster range"),
    ConfigKey("sandboxEgressAllow", None, "With `allowList`: JSON list of public destinations, `[{\"cidr\": \"151.101.0.0/16\", \"ports\": [443, "
              "\"8000-8100\"], \"protocol\": \"TCP\"}]` (`protocol` TCP/UDP/SCTP, default TCP; port 53 and private/cluster ranges are "
              "refused). Untyped in Pulumi.yaml: a JSON string and a YAML list are both accepted.", schema_type="untyped"),
    ConfigKey("clusterPodCidrs", None, "Comma-separated pod CIDRs (IPv4 and IPv6) of the cluster: KIND's podSubnet, minikube's default; set it "
              "for an `existing` cluster.", default_doc="`10.244.0.0/16`"),
    ConfigKey("clusterServiceCidrs", None, "Comma-separated Service CIDRs, excluded from sandbox egress.",
              default_doc="`10.96.0.0/16` (kind), `10.96.0.0/12` (minikube, existing)"),
    ConfigKey("clusterNodeCidrs", None, "Comma-separated node address ranges: excluded from sandbox egress, allowed to call the router on 8080 "
              "(kubelet probes, hostNetwork clients)."),
    ConfigKey("clusterDnsAddresses", None, "Comma-separated resolvers besides the kube-dns pods, allowed on port 53 only, e.g. `169.254.20.10` "
              "(NodeLocal DNSCache; add the kube-dns ClusterIP when it intercepts that too)."),
    ConfigKey("routerImage", None, "Router image ref (required with `imageBuild: prebuilt`).", default_doc="built from `images/router`",
              policy="`images-pinned` rejects a missing or mutable tag without a digest"),
    ConfigKey("imageBuild", "docker", "`docker`: build images with pulumi-docker; `prebuilt`: use `sandboxImage`/`routerImage` (e.g. from "
              "`make images`)."),
    ConfigKey("imageVariant", "full", "Runtime image variant: `full` (pandas, scikit-learn, lightgbm) | `minimal`."),
    ConfigKey("baseImage", versions.DEFAULT_BASE_IMAGE, "BASE_IMAGE build argument of both Dockerfiles."),
    ConfigKey("imageLoadStrategy", None, "How images reach the nodes: `kind` | `minikube` | `containerd` | `registry` | `preloaded`.",
              default_doc="follows `clusterFlavour` (`registry` for existing)"),
    ConfigKey("containerdAddress", None, "containerd socket for `imageLoadStrategy: containerd`.",
              default_doc="ctr's default `/run/containerd/containerd.sock`"),
    ConfigKey("imageRegistry", None, "Registry prefix to push to with `imageLoadStrategy: registry` (e.g. `registry.example.com/team`)."),
    ConfigKey("controllerManifest", versions.AGENT_SANDBOX_MANIFEST_VENDORED, "Local path (relative to the project) or URL of the controller "
              "release manifest; the default is the pinned copy vendored in the package (offline). A URL must be the pinned release or end "
              "in `#sha256=<digest>`."),
    ConfigKey("controllerImage", versions.AGENT_SANDBOX_CONTROLLER_IMAGE, "Controller image (override for mirrors or local builds).",
              policy="`images-pinned` rejects a missing or mutable tag without a digest"),
    ConfigKey("kataChartVersion", versions.KATA_DEPLOY_CHART_VERSION, "kata-deploy Helm chart version (kata stack)."),
    ConfigKey("kataChartRepo", versions.KATA_DEPLOY_CHART_REPO, "kata-deploy Helm chart repository or local chart path (kata stack)."),
)
KNOWN_KEYS = {key.name: key for key in CONFIG_KEYS}


@dataclass(frozen=True)
class Resources:
    """Kubernetes resource requests and limits (quantities as strings)."""

    requests: dict[str, str]
    limits: dict[str, str]

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {"requests": dict(self.requests), "limits": dict(self.limits)}


@dataclass(frozen=True)
class PortRange:
    """One port entry of a NetworkPolicy rule."""

    protocol: str
    """``TCP``, ``UDP`` or ``SCTP``."""
    port: int
    """The port, or the first port of the range."""
    end_port: Optional[int] = None
    """Last port of the range (inclusive); None for a single port."""

    def as_text(self) -> str:
        """``"443"`` or ``"8000-8100"``: the form ``sandboxEgressAllow`` ports take."""
        return str(self.port) if self.end_port is None else f"{self.port}-{self.end_port}"

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"protocol": self.protocol, "port": self.port}
        if self.end_port is not None:
            entry["endPort"] = self.end_port
        return entry


@dataclass(frozen=True)
class EgressAllowRule:
    """One destination of ``sandboxEgress: allowList``."""

    cidr: str
    """Public destination network (normalised); denied ranges inside it are excepted."""
    ports: tuple[PortRange, ...]
    """Ports opened to it (never 53: DNS goes to the cluster resolver)."""


@dataclass(frozen=True)
class ApiServerEndpoint:
    """An address (or range) and port the router's watch talks to."""

    cidr: str
    """``/32``/``/128`` for one address, or a range (managed control planes)."""
    port: int
    """The API server's port as seen by pods after Service translation (e.g. 6443)."""

    def as_input(self) -> str:
        """The ``address:port`` form the config key and the component inputs take."""
        return f"[{self.cidr}]:{self.port}" if ":" in self.cidr else f"{self.cidr}:{self.port}"


def _network(text: str) -> IPNetwork:
    return ipaddress.ip_network(text, strict=True)


def minimal_networks(networks: Iterable[IPNetwork]) -> list[IPNetwork]:
    """``networks`` without duplicates and without those inside another one, sorted (IPv4
    first). Unlike ``ipaddress.collapse_addresses`` siblings are not merged, so each entry
    still reads as the range it was listed for."""
    unique = sorted(set(networks), key=lambda n: (n.version, n.network_address, n.prefixlen))
    return [n for n in unique
            if not any(o != n and o.version == n.version and n.subnet_of(o) for o in unique)]  # type: ignore[arg-type]


def denied_egress_networks(cluster_cidrs: Iterable[str] = ()) -> list[IPNetwork]:
    """Every range a sandbox never reaches: the fixed non-public ranges plus the cluster's own."""
    fixed = [*constants.EGRESS_DENIED_IPV4, *constants.EGRESS_DENIED_IPV6]
    return minimal_networks(_network(c) for c in [*fixed, *cluster_cidrs])


def _kind_subnets(cluster_name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(podSubnet, serviceSubnet) of the KIND cluster `make up` creates: what our cluster config
    sets, else KIND's defaults (it sets none today). Both may be comma-separated (dual stack)."""
    networking = (yaml.safe_load(kind_cluster_config(cluster_name)) or {}).get("networking") or {}
    pods = networking.get("podSubnet") or constants.KIND_DEFAULT_POD_SUBNET
    services = networking.get("serviceSubnet") or constants.KIND_DEFAULT_SERVICE_SUBNET
    return (tuple(c.strip() for c in str(pods).split(",")), tuple(c.strip() for c in str(services).split(",")))


@dataclass(frozen=True)
class StackConfig:
    """The validated configuration of one stack; field docs are in ``CONFIG_KEYS``."""

    stack: str
    cluster_flavour: str
    cluster_name: str
    kube_context: Optional[str]
    kubeconfig: Optional[str]
    runtime: str
    manage_runtime_class: bool
    sandbox_namespace: str
    template_name: str
    sandbox_image: Optional[str]
    sandbox_port: int
    sandbox_resources: Resources
    warm_pool_name: str
    warm_pool_replicas: int
    router_replicas: int
    # Never in repr: a printed StackConfig (logs, tracebacks, test output) must not leak the token.
    router_auth_token: Optional[str] = field(repr=False)
    router_allowed_pod_cidrs: tuple[str, ...]
    router_sandbox_namespaces: tuple[str, ...]
    api_server_endpoints: tuple[ApiServerEndpoint, ...]
    sandbox_egress: str
    sandbox_egress_allow: tuple[EgressAllowRule, ...]
    cluster_pod_cidrs: tuple[str, ...]
    cluster_service_cidrs: tuple[str, ...]
    cluster_node_cidrs: tuple[str, ...]
    cluster_dns_addresses: tuple[str, ...]
    router_image: Optional[str]
    image_build: str
    image_variant: str
    base_image: str
    image_load_strategy: str
    image_registry: Optional[str]
    containerd_address: Optional[str]
    controller_manifest: str
    controller_image: str
    kata_chart_version: str
    kata_chart_repo: str
    kind_workers: int = 0
    router_resources: Resources = field(default_factory=lambda: Resources(**ROUTER_RESOURCES))

    @property
    def runtime_handler(self) -> str:
        """The CRI handler behind the runtime class (``runsc`` for gVisor)."""
        return constants.RUNTIME_CLASS_HANDLERS[self.runtime]

    @property
    def image_pull_policy(self) -> str:
        """Images loaded onto the node are never pulled; pushed ones are pulled once."""
        return "IfNotPresent" if self.image_load_strategy == "registry" else "Never"

    @property
    def cluster_cidrs(self) -> tuple[str, ...]:
        """The cluster's own pod, Service and node ranges (excluded from sandbox egress)."""
        return (*self.cluster_pod_cidrs, *self.cluster_service_cidrs, *self.cluster_node_cidrs)

    @property
    def egress_denied_networks(self) -> tuple[str, ...]:
        """Every range sandboxes never reach in this cluster, minimal and sorted."""
        return tuple(str(n) for n in denied_egress_networks(self.cluster_cidrs))


def _fix(key: str, example: str) -> str:
    return f"fix: pulumi config set {constants.PROJECT_NAME}:{key} {example}"


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


class _Validator:
    """Reads raw values one key at a time and collects every problem before failing."""

    def __init__(self, raw: Mapping[str, Any]):
        self.raw = raw
        self.problems: list[str] = []

    def value(self, key: str) -> Any:
        value = self.raw.get(key)
        return KNOWN_KEYS[key].default if value is None or value == "" else value

    def fail(self, key: str, value: Any, allowed: str, example: str) -> None:
        shown = "<secret>" if KNOWN_KEYS[key].secret else _show(value)
        state = "is not set" if value is None else f"= {shown} is invalid"
        self.problems.append(f"{constants.PROJECT_NAME}:{key} {state}: {allowed} ({_fix(key, example)})")

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = None) -> str:
        value = self.value(key)
        if value is None:
            value = default
        if value not in allowed:
            self.fail(key, value, "allowed values are " + ", ".join(f"'{a}'" for a in allowed), allowed[0])
            return allowed[0]
        return value

    def boolean(self, key: str) -> bool:
        value = self.value(key)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.fail(key, value, "allowed values are 'true', 'false'", "true")
        return bool(KNOWN_KEYS[key].default)

    def integer(self, key: str, minimum: int, maximum: int) -> int:
        value = self.value(key)
        try:
            number = int(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or str(value).strip() != str(number) or not minimum <= number <= maximum:
            self.fail(key, value, f"allowed values are integers from {minimum} to {maximum}", str(KNOWN_KEYS[key].default))
            return int(KNOWN_KEYS[key].default)
        return number

    def name(self, key: str, pattern: re.Pattern[str] = DNS_1123_LABEL) -> str:
        value = self.value(key)
        if not isinstance(value, str) or not pattern.match(value):
            self.fail(
                key, value,
                "allowed values are DNS-1123 names (lower-case letters, digits and '-', at most 63 characters)",
                str(KNOWN_KEYS[key].default or "my-name"),
            )
            return str(KNOWN_KEYS[key].default or "invalid")
        return value

    def optional_text(self, key: str) -> Optional[str]:
        value = self.value(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(key, value, "expected a non-empty string", "<value>")
            return None
        return value

    def image_ref(self, key: str) -> Optional[str]:
        value = self.optional_text(key)
        if value is not None and (not IMAGE_REF.match(value) or value.endswith(":latest")):
            self.fail(key, value, "expected an image reference with a tag or digest other than 'latest'", "example.org/img:1.0")
            return None
        return value

    def _list(self, key: str) -> Optional[list[str]]:
        """A list-valued key: a YAML/JSON list, a JSON list in a string, or comma-separated."""
        value = self.value(key)
        if value is None:
            return None
        if isinstance(value, str) and value.strip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        items = value if isinstance(value, list) else str(value).split(",")
        return [str(i).strip() for i in items if str(i).strip()]

    def cidrs(self, key: str, example: str = "10.244.0.0/16", default: tuple[str, ...] = ()) -> tuple[str, ...]:
        items = self._list(key)
        if items is None:
            return default
        cidrs: list[str] = []
        for item in items:
            try:
                cidrs.append(str(_network(item)))
            except ValueError:
                self.fail(key, self.value(key), f"{item!r} is not a CIDR network (e.g. {example})", example)
                return default
        return tuple(cidrs)

    def addresses(self, key: str, example: str, purpose: str) -> tuple[str, ...]:
        """Single IP addresses (resolvers): never the cloud metadata address."""
        addresses: list[str] = []
        for item in self._list(key) or []:
            try:
                address = ipaddress.ip_address(item)
            except ValueError:
                self.fail(key, self.value(key), f"{item!r} is not an IP address (e.g. {example} for {purpose})", example)
                return ()
            if str(address) == constants.METADATA_ADDRESS:
                self.fail(key, self.value(key),
                          f"{address} is the cloud metadata address, not the cluster's resolver", example)
                return ()
            addresses.append(str(address))
        return tuple(addresses)

    def names(self, key: str, default: tuple[str, ...], example: str) -> tuple[str, ...]:
        items = self._list(key)
        if items is None:
            return default
        for item in items:
            if not DNS_1123_LABEL.match(item):
                self.fail(key, self.value(key), f"{item!r} is not a DNS-1123 namespace name (lower-case letters, "
                          "digits and '-', at most 63 characters)", example)
                return default
        return tuple(dict.fromkeys(items))

    def api_endpoints(self, key: str) -> tuple[ApiServerEndpoint, ...]:
        endpoints: list[ApiServerEndpoint] = []
        for item in self._list(key) or []:
            match = API_SERVER_ENDPOINT.match(item)
            try:
                if match is None or not 1 <= int(match["port"]) <= 65535:
                    raise ValueError(item)
                network = ipaddress.ip_network(match["address"], strict=True)
            except ValueError:
                self.fail(key, self.value(key), f"{item!r} is not address:port (e.g. 172.18.0.2:6443, "
                          "[fd00::2]:6443 or 10.0.0.0/28:443)", "172.18.0.2:6443")
                return ()
            endpoints.append(ApiServerEndpoint(str(network), int(match["port"])))
        return tuple(endpoints)

    def egress_allow(self, key: str, mode: str, denied: list[IPNetwork]) -> tuple[EgressAllowRule, ...]:
        """The allow-list of ``sandboxEgress: allowList``: public destinations and explicit ports."""
        project = constants.PROJECT_NAME
        value = self.value(key)
        whole_fix = f"fix: pulumi config set {project}:{key} '{EGRESS_ALLOW_EXAMPLE}'"
        if value is None:
            if mode == "allowList":
                self.problems.append(f"{project}:{key} is not set: sandboxEgress 'allowList' needs at least one "
                                     f"{{cidr, ports}} entry ({whole_fix})")
            return ()
        if mode != "allowList":
            self.problems.append(f"{project}:{key} is only read with sandboxEgress 'allowList' (now {mode!r}), so the "
                                 f"list would be ignored ({_fix('sandboxEgress', 'allowList')})")
            return ()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if not isinstance(value, list) or not value:
            self.problems.append(f"{project}:{key} = {_show(self.value(key))} is invalid: expected a JSON list of "
                                 f"{{cidr, ports, protocol}} objects ({whole_fix})")
            return ()
        rules: list[EgressAllowRule] = []
        for index, entry in enumerate(value):
            path = f"{project}:{key}[{index}]"

            def path_fix(field: str, example: str) -> str:
                return f"fix: pulumi config set --path '{path}.{field}' {example}"

            if not isinstance(entry, dict):
                self.problems.append(f"{path} = {_show(entry)} is invalid: expected an object {{cidr, ports, protocol}} "
                                     f"({whole_fix})")
                continue
            unknown = [f for f in entry if f not in EGRESS_ALLOW_FIELDS]
            for field_name in unknown:
                self.problems.append(f"{path}.{field_name} is not a known field: allowed are "
                                     f"{', '.join(EGRESS_ALLOW_FIELDS)} (fix: pulumi config rm --path '{path}.{field_name}')")
            cidr = self._allowed_cidr(path, entry.get("cidr"), denied, path_fix("cidr", "151.101.0.0/16"))
            protocol = entry.get("protocol", "TCP")
            if protocol not in EGRESS_PROTOCOLS:
                self.problems.append(f"{path}.protocol = {_show(protocol)} is invalid: allowed values are "
                                     + ", ".join(f"'{p}'" for p in EGRESS_PROTOCOLS) + f" ({path_fix('protocol', 'TCP')})")
                protocol = "TCP"
            ports = self._ports(path, entry.get("ports"), str(protocol), path_fix("ports[0]", "443"))
            if cidr is not None and ports and not unknown:
                rules.append(EgressAllowRule(cidr, ports))
        return tuple(rules)

    def _allowed_cidr(self, path: str, value: Any, denied: list[IPNetwork], fix: str) -> Optional[str]:
        try:
            network = _network(str(value)) if isinstance(value, str) else None
        except ValueError:
            network = None
        if network is None:
            state = "is not set" if value is None else f"= {_show(value)} is invalid"
            self.problems.append(f"{path}.cidr {state}: expected a CIDR network such as 151.101.0.0/16 ({fix})")
            return None
        inside = next((d for d in denied if d.version == network.version and network.subnet_of(d)), None)  # type: ignore[arg-type]
        if inside is not None:
            self.problems.append(f"{path}.cidr = {_show(value)} is invalid: it lies inside {inside}, a cluster, private, "
                                 "metadata or reserved range that sandboxes never reach; only public unicast "
                                 f"destinations can be allowed ({fix})")
            return None
        return str(network)

    def _ports(self, path: str, value: Any, protocol: str, fix: str) -> tuple[PortRange, ...]:
        if value is None or value == []:
            self.problems.append(f"{path}.ports is not set: list the ports to open, e.g. [443] or [\"8000-8100\"] ({fix})")
            return ()
        items = value if isinstance(value, list) else [value]
        ports: list[PortRange] = []
        for item in items:
            match = PORT_RANGE.match(str(item).strip()) if isinstance(item, (int, str)) and not isinstance(item, bool) else None
            low = int(match["low"]) if match else 0
            high = int(match["high"]) if match and match["high"] else low
            if not match or not 1 <= low <= high <= 65535 or low <= constants.DNS_PORT <= high:
                self.problems.append(f"{path}.ports = {_show(value)} is invalid: {_show(item)} is not a port 1-65535 or a "
                                     "range 'low-high' that leaves out 53 (DNS goes to the cluster resolver only) "
                                     f"({fix})")
                return ()
            ports.append(PortRange(protocol, low, high if high != low else None))
        return tuple(ports)

    def resources(self, key: str) -> Resources:
        value = self.value(key)
        project = constants.PROJECT_NAME
        example_fix = f"fix: pulumi config set --path {project}:{key}.limits.cpu 500m"
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = None
        if not isinstance(value, dict) or set(value) - {"requests", "limits"}:
            self.problems.append(
                f"{project}:{key} = {_show(self.value(key))} is invalid: expected a JSON object "
                f"{{requests: {{...}}, limits: {{...}}}} ({example_fix})"
            )
            return Resources(**DEFAULT_RESOURCES)
        merged = {part: {**DEFAULT_RESOURCES[part], **(value.get(part) or {})} for part in DEFAULT_RESOURCES}
        for part, quantities in merged.items():
            for resource, quantity in quantities.items():
                path = f"{project}:{key}.{part}.{resource}"
                example = "500m" if resource == "cpu" else "1Gi"
                if resource not in RESOURCE_KEYS:
                    self.problems.append(
                        f"{path} is not a known resource: allowed are {', '.join(RESOURCE_KEYS)} "
                        f"(fix: pulumi config rm --path {path})"
                    )
                elif not isinstance(quantity, str) or not (CPU_QUANTITY if resource == "cpu" else BYTES_QUANTITY).match(quantity):
                    self.problems.append(
                        f"{path} = {_show(quantity)} is invalid: expected a Kubernetes quantity such as {example} "
                        f"(fix: pulumi config set --path {path} {example})"
                    )
        return Resources(**merged)


def parse_stack_config(raw: Mapping[str, Any], stack: str) -> StackConfig:
    """Validate raw config values (strings or parsed JSON) of ``stack`` into a StackConfig.

    Raises ``ConfigError`` listing every invalid or unknown key."""
    check = _Validator(raw)
    for key in raw:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            check.problems.append(
                f"{constants.PROJECT_NAME}:{key} is not a known key: {hint}"
                f"see the configuration table in README.md (fix: pulumi config rm {constants.PROJECT_NAME}:{key})"
            )

    flavour = check.choice("clusterFlavour", CLUSTER_FLAVOURS)
    cluster_name = check.name("clusterName")
    allow_runc = check.boolean("allowInsecureRunc")
    runtime_value = check.value("runtime")
    if runtime_value == INSECURE_RUNTIME and allow_runc:
        runtime = INSECURE_RUNTIME
    elif runtime_value == INSECURE_RUNTIME:
        check.fail("runtime", runtime_value,
                   "'runc' gives no isolation and needs agent-sandbox:allowInsecureRunc=true (development only); "
                   "allowed values are 'gvisor', 'kata-qemu'", "gvisor")
        runtime = "gvisor"
    else:
        runtime = check.choice("runtime", SECURE_RUNTIMES)
    if runtime == "kata-qemu" and flavour == "kind":
        check.fail("runtime", runtime_value,
                   "'kata-qemu' needs a VM-capable node: use clusterFlavour 'minikube' or 'existing'", "gvisor")

    default_strategy = {"kind": "kind", "minikube": "minikube", "existing": "registry"}[flavour]
    strategy = check.choice("imageLoadStrategy", IMAGE_LOAD_STRATEGIES, default=default_strategy)
    if strategy in ("kind", "minikube") and strategy != flavour:
        check.fail("imageLoadStrategy", strategy,
                   f"'{strategy}' only works with clusterFlavour '{strategy}'; "
                   f"for '{flavour}' use '{default_strategy}', 'containerd', 'registry' or 'preloaded'",
                   default_strategy)
    image_build = check.choice("imageBuild", IMAGE_BUILD_MODES)
    registry = check.optional_text("imageRegistry")
    if strategy == "registry" and image_build == "docker" and registry is None:
        check.fail("imageRegistry", None,
                   "imageLoadStrategy 'registry' needs a registry prefix to push to "
                   "(or use imageLoadStrategy 'containerd' / 'preloaded')", "registry.example.com/team")
    sandbox_image = check.image_ref("sandboxImage")
    router_image = check.image_ref("routerImage")
    if image_build == "prebuilt":
        for key, ref in (("sandboxImage", sandbox_image), ("routerImage", router_image)):
            if ref is None and not any(key in p for p in check.problems):
                check.fail(key, None, "imageBuild 'prebuilt' needs both image refs (`make images` prints them)",
                           "agent-sandbox/runtime:<tag>")

    if flavour == "kind":
        default_pods, default_services = _kind_subnets(cluster_name)
    else:
        default_pods, default_services = ((constants.KUBEADM_DEFAULT_POD_SUBNET,),
                                          (constants.KUBEADM_DEFAULT_SERVICE_SUBNET,))
    cluster_pod_cidrs = check.cidrs("clusterPodCidrs", "10.244.0.0/16", default_pods)
    cluster_service_cidrs = check.cidrs("clusterServiceCidrs", "10.96.0.0/16", default_services)
    cluster_node_cidrs = check.cidrs("clusterNodeCidrs", "172.18.0.0/16")
    denied = denied_egress_networks((*cluster_pod_cidrs, *cluster_service_cidrs, *cluster_node_cidrs))
    sandbox_egress = check.choice("sandboxEgress", SANDBOX_EGRESS_MODES)
    sandbox_egress_allow = check.egress_allow("sandboxEgressAllow", sandbox_egress, denied)
    # The router proxies to pod IPs only: by default exactly the cluster's pod ranges, and never
    # wider (a range beyond them would reach nodes or Services again).
    router_pod_cidrs = check.cidrs("routerAllowedPodCidrs", "10.244.0.0/16", cluster_pod_cidrs)
    pod_networks = [_network(c) for c in cluster_pod_cidrs]
    for cidr in router_pod_cidrs:
        network = _network(cidr)
        if not any(network.version == p.version and network.subnet_of(p) for p in pod_networks):  # type: ignore[arg-type]
            check.fail("routerAllowedPodCidrs", check.value("routerAllowedPodCidrs"),
                       f"{cidr!r} is not inside {constants.PROJECT_NAME}:clusterPodCidrs "
                       f"({','.join(cluster_pod_cidrs)}), so the router could reach nodes or Services in it; "
                       "narrow it, or set clusterPodCidrs to the cluster's pod ranges", ",".join(cluster_pod_cidrs))
            break
    sandbox_namespace = check.name("sandboxNamespace")

    kube_context = check.optional_text("kubeContext")
    if kube_context is None and flavour == "kind":
        kube_context = f"kind-{cluster_name}"
    elif kube_context is None and flavour == "minikube":
        kube_context = cluster_name

    config = StackConfig(
        stack=stack,
        cluster_flavour=flavour,
        cluster_name=cluster_name,
        kube_context=kube_context,
        kubeconfig=check.optional_text("kubeconfig"),
        runtime=runtime,
        manage_runtime_class=check.boolean("manageRuntimeClass"),
        sandbox_namespace=sandbox_namespace,
        template_name=check.name("templateName"),
        sandbox_image=sandbox_image,
        sandbox_port=check.integer("sandboxPort", 1, 65535),
        sandbox_resources=check.resources("sandboxResources"),
        warm_pool_name=check.name("warmPoolName"),
        warm_pool_replicas=check.integer("warmPoolReplicas", 0, 1000),
        router_replicas=check.integer("routerReplicas", 1, 100),
        router_auth_token=check.optional_text("routerAuthToken"),
        router_allowed_pod_cidrs=router_pod_cidrs,
        router_sandbox_namespaces=check.names("routerSandboxNamespaces", (sandbox_namespace,), sandbox_namespace),
        api_server_endpoints=check.api_endpoints("apiServerEndpoints"),
        sandbox_egress=sandbox_egress,
        sandbox_egress_allow=sandbox_egress_allow,
        cluster_pod_cidrs=cluster_pod_cidrs,
        cluster_service_cidrs=cluster_service_cidrs,
        cluster_node_cidrs=cluster_node_cidrs,
        cluster_dns_addresses=check.addresses("clusterDnsAddresses", "169.254.20.10", "NodeLocal DNSCache"),
        router_image=router_image,
        image_build=image_build,
        image_variant=check.choice("imageVariant", IMAGE_VARIANTS),
        base_image=check.optional_text("baseImage") or versions.DEFAULT_BASE_IMAGE,
        image_load_strategy=strategy,
        image_registry=registry,
        containerd_address=check.optional_text("containerdAddress"),
        controller_manifest=check.optional_text("controllerManifest") or versions.AGENT_SANDBOX_MANIFEST_VENDORED,
        controller_image=check.image_ref("controllerImage") or versions.AGENT_SANDBOX_CONTROLLER_IMAGE,
        kata_chart_version=check.optional_text("kataChartVersion") or versions.KATA_DEPLOY_CHART_VERSION,
        kata_chart_repo=check.optional_text("kataChartRepo") or versions.KATA_DEPLOY_CHART_REPO,
        kind_workers=check.integer("kindWorkers", 0, 8),
    )
    if config.router_auth_token is not None and len(config.router_auth_token) < 16:
        check.fail("routerAuthToken", config.router_auth_token,
                   "the token must be at least 16 characters (or unset to generate one)",
                   "--secret \"$(openssl rand -hex 24)\"")
    if check.problems:
        raise ConfigError(check.problems)
    return config


# What component validation fills in for the keys a component does not take (images can be
# Outputs, the cluster flavour is the driver's business): valid values that change nothing else.
COMPONENT_FIXED_KEYS: dict[str, str] = {
    "clusterFlavour": "existing", "imageBuild": "prebuilt", "imageLoadStrategy": "preloaded",
    "sandboxImage": "agent-sandbox/component-input:unused", "routerImage": "agent-sandbox/component-input:unused",
}
_FIX_SUFFIX = re.compile(r"\s*\((fix|see): .*\)$")


class ComponentInputError(ValueError):
    """A component's inputs break the rules the stack config is validated with; one line each."""

    def __init__(self, component: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"Invalid {component} inputs:\n" + "\n".join(f"  - {p}" for p in problems))


def parse_component_inputs(values: Mapping[str, Any], component: str = "AgentSandbox") -> StackConfig:
    """Validate a component's plain inputs, named like the config keys (``sandboxEgressAllow``,
    ``warmPoolReplicas``, ...), with exactly the stack config's rules, so a program in any
    language gets the same guarantees (public-only egress, no DNS bypass, bounded replicas) as
    this project's stacks. Problems name the input instead of ``agent-sandbox:<key>`` and carry no
    ``pulumi config`` fix (the caller sets inputs, not config). Raises ``ComponentInputError``."""
    try:
        return parse_stack_config({**COMPONENT_FIXED_KEYS, **values}, component)
    except ConfigError as error:
        prefix = f"{constants.PROJECT_NAME}:"
        problems = [_FIX_SUFFIX.sub("", problem).replace(prefix, "") for problem in error.problems]
        raise ComponentInputError(component, problems) from None


def read_project_config(
    get: Callable[[str], Optional[str]], present_keys: Optional[list[str]] = None
) -> dict[str, Any]:
    """Collect the raw values of every known key (plus any unknown ``present_keys``)."""
    raw: dict[str, Any] = {}
    for key in list(KNOWN_KEYS) + [k for k in (present_keys or []) if k not in KNOWN_KEYS]:
        value = get(key)
        if value is not None:
            raw[key] = value
    return raw
