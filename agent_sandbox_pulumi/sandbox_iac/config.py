"""Typed, validated stack configuration.

All keys live under the project namespace (``agent-sandbox:<key>``). Values are validated
before any resource is declared; every problem is reported in one ``ConfigError`` whose lines
each name the key, the bad value, the allowed values and the command that fixes it.

Each key is declared once, in ``CONFIG_KEYS``: its kind (how the value is read and checked,
with its ``choices`` or ``bounds``), default, documentation and the StackConfig field it fills, e.g.

    ConfigKey("routerReplicas", 2, "Router Deployment replicas.", kind="integer", bounds=(1, 100)),

``parse_stack_config`` reads every key by its kind and adds the ``CROSS_KEY_RULES`` (runtime vs
allowInsecureRunc, load strategy vs flavour, derived defaults, ...); README's table and
Pulumi.yaml are generated from the same declarations (``agent_sandbox_pulumi.docs``).

``parse_stack_config`` works on a plain mapping so the driver and the tests can use it without
a Pulumi engine; ``sandbox_iac.pulumi_config.read_stack_config`` feeds it from ``pulumi.Config``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import yaml

from agent_sandbox_pulumi.sandbox_iac import constants, controller_flags, versions
from agent_sandbox_pulumi.sandbox_iac.autoscaling import AUTOSCALERS, Autoscaling
from agent_sandbox_pulumi.sandbox_iac.kind_config import kind_cluster_config

CLUSTER_FLAVOURS = ("kind", "minikube", "existing")
SECURE_RUNTIMES = ("gvisor", "kata-qemu")
INSECURE_RUNTIME = "runc"
IMAGE_LOAD_STRATEGIES = ("kind", "minikube", "containerd", "registry", "preloaded")
IMAGE_BUILD_MODES = ("docker", "prebuilt")
IMAGE_VARIANTS = ("full", "minimal")
# compiled: images/router-go (the default: a static binary, a third of the Python router's CPU per
# request); python: images/router. Same contract, same environment, same conformance tests.
ROUTER_IMPLEMENTATIONS = ("compiled", "python")
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
# A label key ([prefix/]name) and value, as the API server checks them.
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)$")
TOLERATION_FIELDS = ("key", "operator", "value", "effect", "tolerationSeconds")
TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
CPU_QUANTITY = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
BYTES_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
# A tag or a digest is required: a bare name means ":latest", which is never reproducible.
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$")

RESOURCE_KEYS = ("cpu", "memory", "ephemeral-storage")
# Requests sized so a 2-core KIND node (control plane, CNI, controller, 2 routers: ~1.1 cores
# requested) still fits the warm pool, a claimed sandbox and its refill; the limits bound a burst.
# The CPU limit is 2 cores, not less: a gVisor sandbox's start (runsc, the runtime's imports) and a
# command's Python start are short bursts on several threads, and a CFS quota of 500m throttled
# them in 50 ms steps (measured: runtime imports 1.0-2.0 s at 500m vs 0.4-1.0 s without a quota;
# cold claim->Ready p50 2.48 s vs 2.02 s at 2 cores, bench/config_compare.py, docs/sandbox-cpu-limit.json).
# The requests still share a busy node fairly (cpu.shares); the limit only caps one sandbox.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "512Mi"},
    "limits": {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "1Gi"},
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


# How a key's value is read and checked: each kind is the ``_Validator`` method of that name.
KINDS = ("choice", "boolean", "integer", "name", "text", "image", "cidrs", "resolvers", "names", "endpoints",
         "egress_allow", "resources", "controller_flags", "node_selector", "tolerations")


@dataclass(frozen=True)
class ConfigKey:
    """One configuration key, declared once: how the validator reads it (``kind`` with its
    ``choices``/``bounds``), the StackConfig field it fills, and the one source of Pulumi.yaml's
    typed ``config:`` block and README's configuration table (``python -m agent_sandbox_pulumi.docs``)."""

    name: str
    """Key under the project namespace (``agent-sandbox:<name>``)."""
    default: Any
    """Value used when the key is unset; None: unset means "derived" (see ``default_doc``) or "none"."""
    description: str
    """One-paragraph explanation (Markdown), shown in README and Pulumi.yaml."""
    kind: str = "text"
    """How the value is read and checked: one of ``KINDS`` (the ``_Validator`` method of that name)."""
    choices: tuple[str, ...] = ()
    """``choice`` keys: the allowed values; the first is the one a fix suggests."""
    bounds: Optional[tuple[int, int]] = None
    """``integer`` keys: the smallest and the largest allowed value."""
    example: Optional[str] = None
    """``cidrs`` and ``resolvers`` keys: the value an error message shows and its fix suggests."""
    fills: Optional[str] = ""
    """The StackConfig field the value fills: "" for the name in snake_case, None for none (the key
    is only read by a rule of ``parse_stack_config``)."""
    secret: bool = False
    """Set with ``pulumi config set --secret``; never printed."""
    schema_type: Optional[str] = None
    """Pulumi.yaml type (``string``/``integer``/``boolean``/``object``); None: inferred from the default.
    ``untyped`` leaves the engine's type check off for keys that take either a list or a string."""
    default_doc: Optional[str] = None
    """README's default cell when the default is derived from other keys."""
    policy: Optional[str] = None
    """The policy-pack limit a user meets with this key (README states it next to the key)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"config key {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if (self.kind == "choice") != bool(self.choices) or (self.kind == "integer") != (self.bounds is not None):
            raise ValueError(f"config key {self.name}: choices go with kind 'choice', bounds with kind 'integer'")

    @property
    def field_name(self) -> Optional[str]:
        """The StackConfig field this key fills (None: none)."""
        if self.fills is None:
            return None
        return self.fills or re.sub(r"(?<!^)(?=[A-Z])", "_", self.name).lower()

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
    ConfigKey("clusterFlavour", "kind", "Where the stack runs.", kind="choice", choices=CLUSTER_FLAVOURS),
    ConfigKey("clusterName", "agent-sandbox", "KIND cluster name or minikube profile (also the node label target for Kata).",
              kind="name"),
    ConfigKey("kindWorkers", 0, "Worker nodes of the KIND cluster `up` creates, next to its control plane (`1` = sandboxes run on a worker).",
              kind="integer", bounds=(0, 8)),
    ConfigKey("kubeContext", None, "kubeconfig context.", default_doc="`kind-<clusterName>` (kind), `<clusterName>` (minikube), current context (existing)"),
    ConfigKey("kubeconfig", None, "Path to a kubeconfig file.", default_doc="`$KUBECONFIG` or `~/.kube/config`"),
    ConfigKey("runtime", "gvisor", "Sandbox runtime class (`runc` only with `allowInsecureRunc`).", kind="choice", choices=SECURE_RUNTIMES,
              policy="`sandbox-runtime-class` accepts `gvisor` and `kata-*` only (policy config `allowedRuntimeClasses`, `allowInsecureRunc`)"),
    ConfigKey("allowInsecureRunc", False, "Set `true` to allow `runtime: runc` (no isolation; local development only).",
              kind="boolean", fills=None,
              policy="`sandbox-runtime-class` still rejects `runc` unless its own `allowInsecureRunc` is true"),
    ConfigKey("manageRuntimeClass", True, "Declare the gVisor RuntimeClass (set `false` when the cluster already ships it).",
              kind="boolean"),
    ConfigKey("sandboxNamespace", "agent-sandbox-demo", "Namespace of the SandboxTemplate, SandboxWarmPool and sandboxes.", kind="name"),
    ConfigKey("templateName", "python-sandbox-template", "Name of the SandboxTemplate.", kind="name"),
    ConfigKey("sandboxImage", None, "Runtime image ref (required with `imageBuild: prebuilt`; tag or digest, never `latest`).",
              kind="image", default_doc="built from `images/runtime`",
              policy="`images-pinned` rejects a missing or mutable tag (`latest`, `main`, `nightly`, ...) without a digest"),
    ConfigKey("sandboxPort", constants.SANDBOX_PORT, "Port the runtime listens on.", kind="integer", bounds=(1, 65535)),
    ConfigKey("sandboxResources", DEFAULT_RESOURCES, "Object `{requests: {cpu, memory, ephemeral-storage}, limits: {...}}` for sandbox pods; "
              "given parts are merged with the defaults (set parts with `pulumi config set --path agent-sandbox:sandboxResources.limits.cpu 1`).",
              kind="resources", default_doc="requests 100m/256Mi/512Mi, limits 2/1Gi/1Gi",
              policy="`sandbox-resource-limits` requires cpu and memory limits"),
    ConfigKey("sandboxNodeSelector", None, "Object of node labels sandbox pods must run on, e.g. `{\"pool\": \"sandboxes\"}` "
              "(a node pool dedicated to sandboxes). Untyped in Pulumi.yaml: a JSON string and a YAML object are both accepted.",
              kind="node_selector", schema_type="untyped", default_doc="none (any node with the RuntimeClass)"),
    ConfigKey("sandboxTolerations", None, "JSON list of tolerations of sandbox pods, e.g. `[{\"key\": \"sandboxes\", "
              "\"operator\": \"Exists\", \"effect\": \"NoSchedule\"}]` (fields key, operator Equal/Exists, value, effect, "
              "tolerationSeconds), to let them onto tainted sandbox nodes. Untyped in Pulumi.yaml.",
              kind="tolerations", schema_type="untyped", default_doc="none"),
    ConfigKey("warmPoolName", "python-sandbox-warmpool", "Name of the SandboxWarmPool.", kind="name"),
    ConfigKey("warmPoolReplicas", 2, "Pre-warmed sandboxes (`0` = cold starts only).", kind="integer", bounds=(0, 1000),
              policy=f"`warm-pool-max-replicas` caps it at {WARM_POOL_POLICY_CAP} (policy config `maxReplicas`)"),
    ConfigKey("warmPoolAutoscaling", "off", "`keda`: the pool follows demand -- a KEDA ScaledObject on the SandboxWarmPool's "
              "`/scale` keeps one warm sandbox per `warmPoolInUsePerWarm` sandboxes in use (claimed pods of the template), "
              "between `warmPoolMinReplicas` and `warmPoolMaxReplicas` (then `warmPoolReplicas` must be unset). Needs KEDA in "
              "the cluster, or `installKeda: true`.", kind="choice", choices=AUTOSCALERS),
    ConfigKey("warmPoolMinReplicas", 1, "With `warmPoolAutoscaling: keda`: fewest warm sandboxes (`0` = scale to zero "
              "`warmPoolScaleDownSeconds` after the last sandbox in use is gone; the next claim starts cold).",
              kind="integer", bounds=(0, 1000)),
    ConfigKey("warmPoolMaxReplicas", 10, "With `warmPoolAutoscaling: keda`: most warm sandboxes the autoscaler asks for "
              "(keep it within what the nodes can run).", kind="integer", bounds=(1, 1000),
              policy=f"`warm-pool-max-replicas` caps it at {WARM_POOL_POLICY_CAP} (policy config `maxReplicas`)"),
    ConfigKey("warmPoolInUsePerWarm", 1, "With `warmPoolAutoscaling: keda`: one warm sandbox is kept for every this many "
              "sandboxes in use (`1` = as many warm as in use, `4` = a quarter).", kind="integer", bounds=(1, 100)),
    ConfigKey("warmPoolScaleDownSeconds", 300, "With `warmPoolAutoscaling: keda`: how long demand must stay lower before "
              "the pool shrinks (HPA scale-down stabilization and KEDA's cooldown).", kind="integer", bounds=(0, 3600)),
    ConfigKey("installKeda", False, f"Install KEDA {versions.KEDA_VERSION} (operator and external-metrics API server, no "
              "admission webhooks; namespace `keda`) from the manifest vendored in the package; `false` when the cluster "
              "has KEDA already. Offline on KIND, `make up` builds its images from KEDA's Go module.", kind="boolean"),
    ConfigKey("kedaOperatorImage", versions.KEDA_OPERATOR_IMAGE, "KEDA operator image (with `installKeda`).", kind="image",
              policy="`images-pinned` rejects a missing or mutable tag without a digest"),
    ConfigKey("kedaMetricsImage", versions.KEDA_METRICS_IMAGE, "KEDA metrics API server image (with `installKeda`).",
              kind="image", policy="`images-pinned` rejects a missing or mutable tag without a digest"),
    ConfigKey("routerReplicas", 2, "Router Deployment replicas.", kind="integer", bounds=(1, 100)),
    ConfigKey("routerAuthToken", None, "Router bearer token, at least 16 characters; generated once and kept if unset. Read with `get_secret`, "
              "never printed.", secret=True, schema_type="untyped", default_doc="generated"),
    ConfigKey("routerAllowedPodCidrs", None, "Comma-separated pod CIDRs the router may proxy to; must lie inside `clusterPodCidrs`.",
              kind="cidrs", example="10.244.0.0/16", default_doc="`clusterPodCidrs`"),
    ConfigKey("routerSandboxNamespaces", None, "Comma-separated namespaces whose sandbox pods the router watches and reaches (a pods "
              "get/list/watch Role + RoleBinding and an egress rule in each; other namespaces must exist).",
              kind="names", default_doc="`sandboxNamespace`"),
    ConfigKey("apiServerEndpoints", None, "Comma-separated `address:port` (`[v6]:port`, `cidr:port`) the router's watch may reach.",
              kind="endpoints", default_doc="read from EndpointSlice `default/kubernetes` at deploy time"),
    ConfigKey("sandboxEgress", "internet", "Sandbox egress: `internet` = public unicast IPv4/IPv6 on every TCP/UDP port except 53; `none` = "
              "cluster DNS only; `allowList` = only `sandboxEgressAllow`. Every mode: cluster DNS on 53, and never the cluster's own ranges, "
              "private, link-local/metadata, loopback, CGNAT, NAT64/6to4, ULA, multicast or reserved ranges.",
              kind="choice", choices=SANDBOX_EGRESS_MODES,
              policy="`sandbox-network-policy` rejects egress that reaches the metadata address or a private/cluster range"),
    ConfigKey("sandboxEgressAllow", None, "With `allowList`: JSON list of public destinations, `[{\"cidr\": \"151.101.0.0/16\", \"ports\": [443, "
              "\"8000-8100\"], \"protocol\": \"TCP\"}]` (`protocol` TCP/UDP/SCTP, default TCP; port 53 and private/cluster ranges are "
              "refused). Untyped in Pulumi.yaml: a JSON string and a YAML list are both accepted.", kind="egress_allow", schema_type="untyped"),
    ConfigKey("clusterPodCidrs", None, "Comma-separated pod CIDRs (IPv4 and IPv6) of the cluster: KIND's podSubnet, minikube's default; set it "
              "for an `existing` cluster.", kind="cidrs", example="10.244.0.0/16", default_doc="`10.244.0.0/16`"),
    ConfigKey("clusterServiceCidrs", None, "Comma-separated Service CIDRs, excluded from sandbox egress.", kind="cidrs", example="10.96.0.0/16",
              default_doc="`10.96.0.0/16` (kind), `10.96.0.0/12` (minikube, existing)"),
    ConfigKey("clusterNodeCidrs", None, "Comma-separated node address ranges: excluded from sandbox egress, allowed to call the router on 8080 "
              "(kubelet probes, hostNetwork clients).", kind="cidrs", example="172.18.0.0/16"),
    ConfigKey("clusterDnsAddresses", None, "Comma-separated resolvers besides the kube-dns pods, allowed on port 53 only, e.g. `169.254.20.10` "
              "(NodeLocal DNSCache; add the kube-dns ClusterIP when it intercepts that too).", kind="resolvers", example="169.254.20.10"),
    ConfigKey("routerImage", None, "Router image ref (required with `imageBuild: prebuilt`).", kind="image", default_doc="built from `images/router`",
              policy="`images-pinned` rejects a missing or mutable tag without a digest"),
    ConfigKey("routerImplementation", "compiled", "Which router image is built: `compiled` (images/router-go, a static Go binary on an "
              "empty base) or `python` (images/router). Same routing contract and settings; the compiled one spends about a "
              "third of the CPU per request.", kind="choice", choices=ROUTER_IMPLEMENTATIONS),
    ConfigKey("imageBuild", "docker", "`docker`: build images with pulumi-docker; `prebuilt`: use `sandboxImage`/`routerImage` (e.g. from "
              "`make images`).", kind="choice", choices=IMAGE_BUILD_MODES),
    ConfigKey("imageVariant", "full", "Runtime image variant (`full` adds pandas, scikit-learn, lightgbm).", kind="choice", choices=IMAGE_VARIANTS),
    ConfigKey("baseImage", versions.DEFAULT_BASE_IMAGE, "BASE_IMAGE build argument of both Dockerfiles."),
    ConfigKey("imageLoadStrategy", None, "How images reach the nodes.", kind="choice", choices=IMAGE_LOAD_STRATEGIES,
              default_doc="follows `clusterFlavour` (`registry` for existing)"),
    ConfigKey("containerdAddress", None, "containerd socket for `imageLoadStrategy: containerd`.",
              default_doc="ctr's default `/run/containerd/containerd.sock`"),
    ConfigKey("imageRegistry", None, "Registry prefix to push to with `imageLoadStrategy: registry` (e.g. `registry.example.com/team`)."),
    ConfigKey("controllerManifest", versions.AGENT_SANDBOX_MANIFEST_VENDORED, "Local path (relative to the project) or URL of the controller "
              "release manifest; the default is the pinned copy vendored in the package (offline). A URL must be the pinned release or end "
              "in `#sha256=<digest>`."),
    ConfigKey("controllerImage", versions.AGENT_SANDBOX_CONTROLLER_IMAGE, "Controller image (override for mirrors or local builds).",
              kind="image", policy="`images-pinned` rejects a missing or mutable tag without a digest"),
    ConfigKey("kataChartVersion", versions.KATA_DEPLOY_CHART_VERSION, "kata-deploy Helm chart version (kata stack)."),
    ConfigKey("controllerProfile", controller_flags.DEFAULT_PROFILE, "Controller tuning profile: `interactive` = "
              + ", ".join(f"`--{k}={v}`" for k, v in controller_flags.PROFILES["interactive"].items())
              + " (a claim's first commands do not share the node with the pool's refill); `release` = the release's own "
              "flag defaults; `latency` = " + ", ".join(f"`--{k}={v}`" for k, v in controller_flags.PROFILES["latency"].items())
              + " (see docs/results.md for what each changes). `controllerFlags` entries override the profile's.",
              kind="choice", choices=tuple(controller_flags.PROFILES)),
    ConfigKey("controllerFlags", None, "Object of controller tuning flags and values, e.g. `{\"sandbox-write-behind-window\": "
              "\"250ms\", \"kube-api-qps\": 200}`; only the tuning flags are accepted (workers, API client limits and "
              "connections, write coalescing, events, annotations, warm-pool refill): " + ", ".join(
                  f"`{name}`" for name in controller_flags.TUNABLE_FLAGS) + ". Untyped in Pulumi.yaml: a JSON string "
              "and a YAML object are both accepted.", kind="controller_flags", schema_type="untyped"),
    ConfigKey("serveLegacyApiVersions", False, "Also serve the controller release's older API versions (v1alpha1 of v0.5.6) "
              "through its conversion webhook, for clients that still use them. Off (default): the CRDs serve their storage "
              "version (v1beta1, what the SDK, the controller and this stack use) and no conversion webhook runs; on v0.5.6 "
              "the API server otherwise calls the webhook on reads and writes of v1beta1 objects too (docs/results.md).",
              kind="boolean"),
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
    sandbox_node_selector: tuple[tuple[str, str], ...] = ()
    sandbox_tolerations: tuple[tuple[tuple[str, Any], ...], ...] = ()
    """Each toleration as its (field, value) pairs, in field order (hashable, like every field)."""
    controller_profile: str = controller_flags.DEFAULT_PROFILE
    controller_flags: tuple[tuple[str, str], ...] = ()
    """Explicit ``controllerFlags`` (name, value), checked; the profile's flags are not in it."""
    serve_legacy_api_versions: bool = False
    router_resources: Resources = field(default_factory=lambda: Resources(**ROUTER_RESOURCES))
    router_implementation: str = "compiled"
    warm_pool_autoscaling: str = "off"
    warm_pool_min_replicas: int = 1
    warm_pool_max_replicas: int = 10
    warm_pool_in_use_per_warm: int = 1
    warm_pool_scale_down_seconds: int = 300
    install_keda: bool = False
    keda_operator_image: str = versions.KEDA_OPERATOR_IMAGE
    keda_metrics_image: str = versions.KEDA_METRICS_IMAGE

    @property
    def autoscaling(self) -> Optional[Autoscaling]:
        """How the warm pool follows demand; None: it keeps ``warm_pool_replicas``."""
        if self.warm_pool_autoscaling == "off":
            return None
        return Autoscaling(min_replicas=self.warm_pool_min_replicas, max_replicas=self.warm_pool_max_replicas,
                           in_use_per_warm=self.warm_pool_in_use_per_warm,
                           scale_down_seconds=self.warm_pool_scale_down_seconds)

    @property
    def warm_pool_floor(self) -> int:
        """Warm sandboxes the pool always has: the fixed size, or the autoscaler's minimum."""
        return self.warm_pool_replicas if self.autoscaling is None else self.warm_pool_min_replicas

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
    """Reads raw values one key at a time, each by its kind (the method named like it), and
    collects every problem before failing. A key is parsed the first time it is read (``get``),
    so problems are listed in the order the rules and then the StackConfig fields read the keys."""

    def __init__(self, raw: Mapping[str, Any]):
        self.raw = raw
        self.problems: list[str] = []
        self.parsed: dict[str, Any] = {}
        self.derived: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        """The checked value of ``key`` (parsed by its kind on first use)."""
        if key not in self.parsed:
            declared = KNOWN_KEYS[key]
            self.parsed[key] = getattr(self, declared.kind)(declared)
        return self.parsed[key]

    def set(self, key: str, value: Any) -> None:
        """Decide ``key``'s value in a rule (before or instead of its kind's parsing)."""
        self.parsed[key] = value

    def derive(self, key: str, default: Any) -> None:
        """The default of ``key`` when it is unset, derived from other keys (read before ``key`` is)."""
        self.derived[key] = default

    def value(self, key: str) -> Any:
        value = self.raw.get(key)
        return KNOWN_KEYS[key].default if value is None or value == "" else value

    def _fallback(self, key: ConfigKey) -> Any:
        """What an unset (or, after its problem is reported, an invalid) optional value stands for."""
        return self.derived.get(key.name, key.default)

    def fail(self, key: str, value: Any, allowed: str, example: str) -> None:
        shown = "<secret>" if KNOWN_KEYS[key].secret else _show(value)
        state = "is not set" if value is None else f"= {shown} is invalid"
        self.problems.append(f"{constants.PROJECT_NAME}:{key} {state}: {allowed} ({_fix(key, example)})")

    def choice(self, key: ConfigKey) -> str:
        value = self.value(key.name)
        if value is None:
            value = self._fallback(key)
        if value not in key.choices:
            self.fail(key.name, value, "allowed values are " + ", ".join(f"'{a}'" for a in key.choices), key.choices[0])
            return key.choices[0]
        return value

    def boolean(self, key: ConfigKey) -> bool:
        value = self.value(key.name)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.fail(key.name, value, "allowed values are 'true', 'false'", "true")
        return bool(key.default)

    def integer(self, key: ConfigKey) -> int:
        assert key.bounds is not None
        minimum, maximum = key.bounds
        value = self.value(key.name)
        try:
            number = int(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or str(value).strip() != str(number) or not minimum <= number <= maximum:
            self.fail(key.name, value, f"allowed values are integers from {minimum} to {maximum}", str(key.default))
            return int(key.default)
        return number

    def name(self, key: ConfigKey) -> str:
        value = self.value(key.name)
        if not isinstance(value, str) or not DNS_1123_LABEL.match(value):
            self.fail(
                key.name, value,
                "allowed values are DNS-1123 names (lower-case letters, digits and '-', at most 63 characters)",
                str(key.default or "my-name"),
            )
            return str(key.default or "invalid")
        return value

    def text(self, key: ConfigKey) -> Optional[str]:
        value = self.value(key.name)
        if value is None:
            return self._fallback(key)
        if not isinstance(value, str) or not value.strip():
            self.fail(key.name, value, "expected a non-empty string", "<value>")
            return self._fallback(key)
        return value

    def image(self, key: ConfigKey) -> Optional[str]:
        value = self.text(key)
        if value is not None and (not IMAGE_REF.match(value) or value.endswith(":latest")):
            self.fail(key.name, value, "expected an image reference with a tag or digest other than 'latest'", "example.org/img:1.0")
            return key.default
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

    def cidrs(self, key: ConfigKey) -> tuple[str, ...]:
        default = self.derived.get(key.name, ())
        items = self._list(key.name)
        if items is None:
            return default
        cidrs: list[str] = []
        for item in items:
            try:
                cidrs.append(str(_network(item)))
            except ValueError:
                self.fail(key.name, self.value(key.name), f"{item!r} is not a CIDR network (e.g. {key.example})", str(key.example))
                return default
        return tuple(cidrs)

    def resolvers(self, key: ConfigKey) -> tuple[str, ...]:
        """Single IP addresses of resolvers (NodeLocal DNSCache): never the cloud metadata address."""
        example = str(key.example)
        addresses: list[str] = []
        for item in self._list(key.name) or []:
            try:
                address = ipaddress.ip_address(item)
            except ValueError:
                self.fail(key.name, self.value(key.name), f"{item!r} is not an IP address (e.g. {example} for NodeLocal DNSCache)",
                          example)
                return ()
            if str(address) == constants.METADATA_ADDRESS:
                self.fail(key.name, self.value(key.name),
                          f"{address} is the cloud metadata address, not the cluster's resolver", example)
                return ()
            addresses.append(str(address))
        return tuple(addresses)

    def names(self, key: ConfigKey) -> tuple[str, ...]:
        default = self.derived.get(key.name, ())
        items = self._list(key.name)
        if items is None:
            return default
        for item in items:
            if not DNS_1123_LABEL.match(item):
                self.fail(key.name, self.value(key.name), f"{item!r} is not a DNS-1123 namespace name (lower-case letters, "
                          "digits and '-', at most 63 characters)", ",".join(default))
                return default
        return tuple(dict.fromkeys(items))

    def endpoints(self, key: ConfigKey) -> tuple[ApiServerEndpoint, ...]:
        endpoints: list[ApiServerEndpoint] = []
        for item in self._list(key.name) or []:
            match = API_SERVER_ENDPOINT.match(item)
            try:
                if match is None or not 1 <= int(match["port"]) <= 65535:
                    raise ValueError(item)
                network = ipaddress.ip_network(match["address"], strict=True)
            except ValueError:
                self.fail(key.name, self.value(key.name), f"{item!r} is not address:port (e.g. 172.18.0.2:6443, "
                          "[fd00::2]:6443 or 10.0.0.0/28:443)", "172.18.0.2:6443")
                return ()
            endpoints.append(ApiServerEndpoint(str(network), int(match["port"])))
        return tuple(endpoints)

    def egress_allow(self, declared: ConfigKey) -> tuple[EgressAllowRule, ...]:
        """The allow-list of ``sandboxEgress: allowList``: public destinations and explicit ports,
        outside the cluster's own ranges (so it reads those keys and ``sandboxEgress`` first)."""
        cluster_cidrs = [c for name in ("clusterPodCidrs", "clusterServiceCidrs", "clusterNodeCidrs") for c in self.get(name)]
        denied = denied_egress_networks(cluster_cidrs)
        mode = self.get("sandboxEgress")
        project, key = constants.PROJECT_NAME, declared.name
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
        value = self._json_value(key)
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

    def _json_value(self, key: str) -> Any:
        value = self.value(key)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value

    def _json_object(self, key: str, what: str, example: str) -> Optional[dict[str, Any]]:
        """The key's value as an object (a YAML/JSON object or one in a JSON string); None when it
        is unset, or (problem recorded) when it is something else."""
        value = self._json_value(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            project = constants.PROJECT_NAME
            self.problems.append(f"{project}:{key} = {_show(self.value(key))} is invalid: expected a JSON object of "
                                 f"{what} (fix: pulumi config set {project}:{key} {example})")
            return None
        return value

    def node_selector(self, declared: ConfigKey) -> tuple[tuple[str, str], ...]:
        """Node labels sandbox pods must match: label keys ([prefix/]name) and values as Kubernetes checks them."""
        key, project = declared.name, constants.PROJECT_NAME
        value = self._json_object(key, "node labels", "'{\"pool\": \"sandboxes\"}'")
        if value is None:
            return ()
        labels: list[tuple[str, str]] = []
        for name in sorted(value):
            label = value[name]
            prefix, _, bare = str(name).rpartition("/")
            good_name = bool(LABEL_NAME.match(bare)) and (not prefix or bool(DNS_1123_SUBDOMAIN.match(prefix)))
            if not good_name or not isinstance(label, str) or not LABEL_VALUE.match(label):
                self.problems.append(f"{project}:{key}.{name} = {_show(label)} is invalid: expected a label key "
                                     "([prefix/]name, at most 63 characters of letters, digits, '-', '_', '.') and a string "
                                     f"value of the same characters (fix: pulumi config set --path '{project}:{key}.{name}' <value>)")
                continue
            labels.append((str(name), label))
        return tuple(labels)

    def tolerations(self, declared: ConfigKey) -> tuple[tuple[tuple[str, Any], ...], ...]:
        """Tolerations of sandbox pods: known fields only, operator and effect from the API's choices."""
        key, project = declared.name, constants.PROJECT_NAME
        value = self._json_value(key)
        if value is None:
            return ()
        example = '\'[{"key": "sandboxes", "operator": "Exists", "effect": "NoSchedule"}]\''
        if not isinstance(value, list):
            self.problems.append(f"{project}:{key} = {_show(self.value(key))} is invalid: expected a JSON list of "
                                 f"tolerations (fix: pulumi config set {project}:{key} {example})")
            return ()
        result = []
        for index, entry in enumerate(value):
            path = f"{project}:{key}[{index}]"
            if not isinstance(entry, dict) or not entry:
                self.problems.append(f"{path} = {_show(entry)} is invalid: expected an object with "
                                     f"{', '.join(TOLERATION_FIELDS)} (fix: pulumi config set {project}:{key} {example})")
                continue
            problems = [f"{path}.{f} is not a toleration field: allowed are {', '.join(TOLERATION_FIELDS)}"
                        for f in entry if f not in TOLERATION_FIELDS]
            operator = entry.get("operator", "Equal")
            if operator not in TOLERATION_OPERATORS:
                problems.append(f"{path}.operator = {_show(operator)} is invalid: allowed values are 'Equal', 'Exists'")
            if "effect" in entry and entry["effect"] not in TAINT_EFFECTS:
                problems.append(f"{path}.effect = {_show(entry['effect'])} is invalid: allowed values are "
                                + ", ".join(f"'{e}'" for e in TAINT_EFFECTS))
            if operator == "Exists" and entry.get("value"):
                problems.append(f"{path}.value must be empty with operator 'Exists'")
            if "tolerationSeconds" in entry and (not isinstance(entry["tolerationSeconds"], int)
                                                 or isinstance(entry["tolerationSeconds"], bool)):
                problems.append(f"{path}.tolerationSeconds = {_show(entry['tolerationSeconds'])} is invalid: expected an integer")
            for field_name in ("key", "value"):
                if field_name in entry and not isinstance(entry[field_name], str):
                    problems.append(f"{path}.{field_name} = {_show(entry[field_name])} is invalid: expected a string")
            if problems:
                self.problems += [f"{p} (fix: pulumi config set {project}:{key} {example})" for p in problems]
                continue
            result.append(tuple((f, entry[f]) for f in TOLERATION_FIELDS if f in entry))
        return tuple(result)

    def controller_flags(self, declared: ConfigKey) -> tuple[tuple[str, str], ...]:
        """Tuning flags of the controller: known names only, each value of its flag's kind."""
        key, project = declared.name, constants.PROJECT_NAME
        value = self._json_object(key, "flag names and values", "'{\"sandbox-write-behind-window\": \"250ms\"}'")
        if value is None:
            return ()
        flags: list[tuple[str, str]] = []
        for name in sorted(value):
            path = f"{project}:{key}.{name}"
            bare = str(name).lstrip("-")
            if bare not in controller_flags.TUNABLE_FLAGS:
                close = difflib.get_close_matches(bare, controller_flags.TUNABLE_FLAGS, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.problems.append(f"{path} is not a tunable controller flag: {hint}allowed are "
                                     + ", ".join(controller_flags.TUNABLE_FLAGS)
                                     + f" (fix: pulumi config rm --path '{path}')")
                continue
            normalised, problem = controller_flags.check_value(bare, value[name])
            if problem:
                self.problems.append(f"{path} = {_show(value[name])} is invalid: {problem} "
                                     f"(fix: pulumi config set --path '{path}' <value>)")
                continue
            flags.append((bare, str(normalised)))
        return tuple(flags)

    def resources(self, declared: ConfigKey) -> Resources:
        key = declared.name
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


def _unknown_keys(check: _Validator) -> None:
    """One problem per key the table does not declare, with the closest known name."""
    for key in check.raw:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            check.problems.append(
                f"{constants.PROJECT_NAME}:{key} is not a known key: {hint}"
                f"see the configuration table in README.md (fix: pulumi config rm {constants.PROJECT_NAME}:{key})"
            )


# The image load strategy each cluster flavour defaults to.
DEFAULT_LOAD_STRATEGIES = {"kind": "kind", "minikube": "minikube", "existing": "registry"}


def _cluster_defaults(check: _Validator) -> None:
    """The defaults that follow where the stack runs: context, image load strategy, cluster ranges."""
    flavour = check.get("clusterFlavour")
    cluster_name = check.get("clusterName")
    if flavour == "kind":
        check.derive("kubeContext", f"kind-{cluster_name}")
        pods, services = _kind_subnets(cluster_name)
    else:
        if flavour == "minikube":
            check.derive("kubeContext", cluster_name)
        pods, services = (constants.KUBEADM_DEFAULT_POD_SUBNET,), (constants.KUBEADM_DEFAULT_SERVICE_SUBNET,)
    check.derive("imageLoadStrategy", DEFAULT_LOAD_STRATEGIES[flavour])
    check.derive("clusterPodCidrs", pods)
    check.derive("clusterServiceCidrs", services)


def _runtime_rules(check: _Validator) -> None:
    """``runc`` only with allowInsecureRunc; Kata only where nodes can run VMs."""
    allow_runc = check.get("allowInsecureRunc")
    runtime_value = check.value("runtime")
    if runtime_value == INSECURE_RUNTIME and allow_runc:
        check.set("runtime", INSECURE_RUNTIME)
    elif runtime_value == INSECURE_RUNTIME:
        check.fail("runtime", runtime_value,
                   "'runc' gives no isolation and needs agent-sandbox:allowInsecureRunc=true (development only); "
                   "allowed values are 'gvisor', 'kata-qemu'", "gvisor")
        check.set("runtime", "gvisor")
    if check.get("runtime") == "kata-qemu" and check.get("clusterFlavour") == "kind":
        check.fail("runtime", runtime_value,
                   "'kata-qemu' needs a VM-capable node: use clusterFlavour 'minikube' or 'existing'", "gvisor")


def _image_rules(check: _Validator) -> None:
    """The load strategy fits the flavour; a registry to push to; prebuilt needs both refs."""
    flavour = check.get("clusterFlavour")
    default_strategy = DEFAULT_LOAD_STRATEGIES[flavour]
    strategy = check.get("imageLoadStrategy")
    if strategy in ("kind", "minikube") and strategy != flavour:
        check.fail("imageLoadStrategy", strategy,
                   f"'{strategy}' only works with clusterFlavour '{strategy}'; "
                   f"for '{flavour}' use '{default_strategy}', 'containerd', 'registry' or 'preloaded'",
                   default_strategy)
    image_build = check.get("imageBuild")
    registry = check.get("imageRegistry")
    if strategy == "registry" and image_build == "docker" and registry is None:
        check.fail("imageRegistry", None,
                   "imageLoadStrategy 'registry' needs a registry prefix to push to "
                   "(or use imageLoadStrategy 'containerd' / 'preloaded')", "registry.example.com/team")
    refs = {key: check.get(key) for key in ("sandboxImage", "routerImage")}
    if image_build == "prebuilt":
        for key, ref in refs.items():
            if ref is None and not any(key in p for p in check.problems):
                check.fail(key, None, "imageBuild 'prebuilt' needs both image refs (`make images` prints them)",
                           "agent-sandbox/runtime:<tag>")


def _network_rules(check: _Validator) -> None:
    """Sandbox egress outside the cluster's ranges; the router confined to the pod ranges and,
    by default, to the sandbox namespace."""
    check.get("sandboxEgressAllow")
    # The router proxies to pod IPs only: by default exactly the cluster's pod ranges, and never
    # wider (a range beyond them would reach nodes or Services again).
    cluster_pod_cidrs = check.get("clusterPodCidrs")
    check.derive("routerAllowedPodCidrs", cluster_pod_cidrs)
    pod_networks = [_network(c) for c in cluster_pod_cidrs]
    for cidr in check.get("routerAllowedPodCidrs"):
        network = _network(cidr)
        if not any(network.version == p.version and network.subnet_of(p) for p in pod_networks):  # type: ignore[arg-type]
            check.fail("routerAllowedPodCidrs", check.value("routerAllowedPodCidrs"),
                       f"{cidr!r} is not inside {constants.PROJECT_NAME}:clusterPodCidrs "
                       f"({','.join(cluster_pod_cidrs)}), so the router could reach nodes or Services in it; "
                       "narrow it, or set clusterPodCidrs to the cluster's pod ranges", ",".join(cluster_pod_cidrs))
            break
    check.derive("routerSandboxNamespaces", (check.get("sandboxNamespace"),))


AUTOSCALING_KEYS = ("warmPoolMinReplicas", "warmPoolMaxReplicas", "warmPoolInUsePerWarm", "warmPoolScaleDownSeconds")


def _autoscaling_rules(check: _Validator) -> None:
    """A fixed pool size or an autoscaled one, never both; the bounds in order."""
    # "Given" is "not the default": the engine hands a program every default Pulumi.yaml declares.
    given = [key for key in ("warmPoolReplicas", *AUTOSCALING_KEYS)
             if check.raw.get(key) not in (None, "") and str(check.raw[key]) != str(KNOWN_KEYS[key].default)]
    prefix = constants.PROJECT_NAME
    if check.get("warmPoolAutoscaling") == "off":
        for key in (k for k in given if k in AUTOSCALING_KEYS):
            check.problems.append(
                f"{prefix}:{key} is set but only applies with {prefix}:warmPoolAutoscaling 'keda' (the pool keeps "
                f"warmPoolReplicas otherwise) (fix: pulumi config set {prefix}:warmPoolAutoscaling keda, or "
                f"pulumi config rm {prefix}:{key})")
        return
    if "warmPoolReplicas" in given:
        check.problems.append(
            f"{prefix}:warmPoolReplicas is a fixed pool size, but with warmPoolAutoscaling 'keda' the autoscaler sizes "
            f"the pool between warmPoolMinReplicas and warmPoolMaxReplicas (fix: pulumi config rm {prefix}:warmPoolReplicas)")
    low, high = check.get("warmPoolMinReplicas"), check.get("warmPoolMaxReplicas")
    if low > high:
        check.fail("warmPoolMinReplicas", check.value("warmPoolMinReplicas"),
                   f"it must not exceed warmPoolMaxReplicas ({high})", str(high))


# The rules between keys, in the order their problems are listed (after unknown keys; every other
# key follows, in the order of the StackConfig fields).
CROSS_KEY_RULES: tuple[Callable[[_Validator], None], ...] = (_cluster_defaults, _runtime_rules, _image_rules, _network_rules,
                                                            _autoscaling_rules)
_FIELD_KEYS = {key.field_name: key.name for key in CONFIG_KEYS if key.field_name}


def parse_stack_config(raw: Mapping[str, Any], stack: str) -> StackConfig:
    """Validate raw config values (strings or parsed JSON) of ``stack`` into a StackConfig: every
    key read by its declared kind (``CONFIG_KEYS``), plus the ``CROSS_KEY_RULES``.

    Raises ``ConfigError`` listing every invalid or unknown key."""
    check = _Validator(raw)
    _unknown_keys(check)
    for rule in CROSS_KEY_RULES:
        rule(check)
    fields = {f.name: check.get(_FIELD_KEYS[f.name]) for f in dataclasses.fields(StackConfig) if f.name in _FIELD_KEYS}
    config = StackConfig(stack=stack, **fields)
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
