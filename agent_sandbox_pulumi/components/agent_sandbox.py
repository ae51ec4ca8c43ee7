"""``AgentSandbox``: everything a cluster needs to run agent-written code in isolated pods, as one
component -- the secure runtime, the pinned controller release, the hardened template with its
warm pool, and the authenticated router the official SDK talks to.

Owns: ``AgentSandboxArgs`` (the knobs, named like this project's config keys in camelCase) and
``AgentSandbox``. It is what ``pulumi package add`` gives other languages (the component provider
in ``agent_sandbox_pulumi/__main__.py`` hosts it) and what this project's ``__main__.py`` declares.

Inputs are validated with the stack config's own rules (``config.parse_component_inputs``) before
anything is declared, so a program in any language gets the same guarantees: public-only sandbox
egress, DNS only to the cluster, a router confined to the pod ranges, bounded replicas.

No ``from __future__ import annotations``: the provider's schema is inferred from these
annotations at run time."""

from typing import Any, NotRequired, Optional, TypedDict

import pulumi

from agent_sandbox_pulumi.components.args import EgressDestination, ContainerResources
from agent_sandbox_pulumi.components.controller import AgentSandboxController
from agent_sandbox_pulumi.components.keda import Keda
from agent_sandbox_pulumi.components.options import child_options
from agent_sandbox_pulumi.components.router import SandboxRouter
from agent_sandbox_pulumi.components.sandbox_pool import SandboxPool
from agent_sandbox_pulumi.components.secure_runtime import SecureRuntime
from agent_sandbox_pulumi.sandbox_iac import controller_flags
from agent_sandbox_pulumi.sandbox_iac.config import ComponentInputError, StackConfig, parse_component_inputs
from agent_sandbox_pulumi.sandbox_iac.sandbox_spec import sandbox_network_policy

TYPE_TOKEN = "agent-sandbox:index:AgentSandbox"
# The parts keep the names they had as top-level components of this project's stacks, so the
# aliases below find them; the controller and the router Service are cluster-wide singletons,
# so one AgentSandbox per cluster is all there can be anyway.
PART_NAMES = {"runtime": "secure-runtime", "controller": "controller", "pool": "sandboxes", "router": "router",
              "keda": "keda"}


class AgentSandboxArgs(TypedDict):
    """Inputs of AgentSandbox. Only the two images are required; every other input has the
    default of the config key of the same name (README's configuration table)."""

    runtime_image: pulumi.Input[str]
    """Sandbox runtime image (tag or digest, never ``latest``), wire-compatible with the official SDK."""
    router_image: pulumi.Input[str]
    """Router image (tag or digest)."""
    image_pull_policy: NotRequired[str]
    """Pull policy of the runtime and router containers: ``IfNotPresent`` (default), or ``Never``
    for images loaded onto the nodes."""
    runtime: NotRequired[str]
    """RuntimeClass of the sandbox pods: ``gvisor`` (default) | ``kata-qemu`` (``runc`` only with
    ``allowInsecureRunc``)."""
    allow_insecure_runc: NotRequired[bool]
    """Allow ``runtime: runc`` (no isolation; local development only). Default false."""
    manage_runtime_class: NotRequired[bool]
    """Declare the gVisor RuntimeClass (default true; false when the cluster ships it)."""
    kata_node_name: NotRequired[str]
    """Kata only: the node kata-deploy installs onto (minikube: the profile name)."""
    kata_chart_version: NotRequired[str]
    """Kata only: kata-deploy Helm chart version (default the pinned one)."""
    kata_chart_repo: NotRequired[str]
    """Kata only: kata-deploy chart repository or local chart path (default the pinned one)."""
    controller_manifest: NotRequired[str]
    """Path or URL of the controller release manifest; default the pinned v0.5.6 copy in this
    package. A URL must be the pinned release or end in ``#sha256=<digest>``."""
    controller_image: NotRequired[str]
    """Controller image (default the release's own; override for mirrors or local builds)."""
    controller_profile: NotRequired[str]
    """Controller tuning profile: ``release`` (default; the release's own flags) | ``latency``."""
    controller_flags: NotRequired[dict[str, str]]
    """Controller tuning flags over the profile's (name without dashes → value; only the tunable ones)."""
    serve_legacy_api_versions: NotRequired[bool]
    """Also serve the release's older API versions through its conversion webhook (default false:
    the CRDs serve their storage version only, no webhook runs)."""
    sandbox_namespace: NotRequired[str]
    """Namespace of the template, the warm pool and the sandboxes; default ``agent-sandbox-demo``."""
    template_name: NotRequired[str]
    """Name of the SandboxTemplate; default ``python-sandbox-template``."""
    sandbox_port: NotRequired[int]
    """Port the runtime listens on; default 8888."""
    sandbox_resources: NotRequired[ContainerResources]
    """Requests/limits of sandbox pods, merged with the defaults (requests 100m/256Mi/512Mi,
    limits 2/1Gi/1Gi)."""
    sandbox_node_selector: NotRequired[dict[str, str]]
    """Node labels sandbox pods must run on (a node pool dedicated to sandboxes); default none."""
    sandbox_tolerations: NotRequired[list[dict[str, Any]]]
    """Tolerations of sandbox pods (key, operator, value, effect, tolerationSeconds); default none."""
    warm_pool_name: NotRequired[str]
    """Name of the SandboxWarmPool clients claim from; default ``python-sandbox-warmpool``."""
    warm_pool_replicas: NotRequired[int]
    """Pre-started sandboxes (0 = cold starts only); default 2. The policy pack caps it at 20."""
    warm_pool_autoscaling: NotRequired[str]
    """``off`` (default: the pool keeps ``warmPoolReplicas``) | ``keda``: a KEDA ScaledObject keeps
    one warm sandbox per ``warmPoolInUsePerWarm`` sandboxes in use, within the min/max below
    (``warmPoolReplicas`` must then be unset). KEDA must be in the cluster, or ``installKeda``."""
    warm_pool_min_replicas: NotRequired[int]
    """With autoscaling: fewest warm sandboxes (0 = scale to zero when nothing is in use); default 1."""
    warm_pool_max_replicas: NotRequired[int]
    """With autoscaling: most warm sandboxes; default 10. The policy pack caps it at 20."""
    warm_pool_in_use_per_warm: NotRequired[int]
    """With autoscaling: one warm sandbox per this many in use; default 1."""
    warm_pool_scale_down_seconds: NotRequired[int]
    """With autoscaling: how long demand must stay lower before the pool shrinks; default 300."""
    install_keda: NotRequired[bool]
    """Install KEDA v2.21.0 (operator + metrics API server, namespace ``keda``); default false."""
    keda_operator_image: NotRequired[str]
    """With ``installKeda``: KEDA operator image; default the release's."""
    keda_metrics_image: NotRequired[str]
    """With ``installKeda``: KEDA metrics API server image; default the release's."""
    router_replicas: NotRequired[int]
    """Router Deployment replicas; default 2."""
    router_resources: NotRequired[ContainerResources]
    """Requests/limits of the router container; default requests 100m/128Mi, limits 1/1Gi."""
    router_auth_token: NotRequired[pulumi.Input[str]]
    """Bearer token clients send (at least 16 characters when plain; kept secret). Unset: one is
    generated once and kept."""
    router_allowed_pod_cidrs: NotRequired[list[str]]
    """Pod CIDRs the router may proxy to; default ``clusterPodCidrs``, and never wider."""
    router_sandbox_namespaces: NotRequired[list[str]]
    """Namespaces whose sandbox pods the router reaches; default ``[sandboxNamespace]`` (others must exist)."""
    api_server_endpoints: NotRequired[list[str]]
    """``address:port`` the router's watch reaches the API server at; default: read from
    EndpointSlice ``default/kubernetes``."""
    sandbox_egress: NotRequired[str]
    """Sandbox egress: ``internet`` (default; public unicast, no port 53) | ``none`` | ``allowList``."""
    sandbox_egress_allow: NotRequired[list[EgressDestination]]
    """With ``allowList``: the public destinations and ports sandboxes may reach."""
    cluster_pod_cidrs: NotRequired[list[str]]
    """The cluster's pod CIDRs (IPv4 and IPv6); default ``10.244.0.0/16``."""
    cluster_service_cidrs: NotRequired[list[str]]
    """The cluster's Service CIDRs, excluded from sandbox egress; default ``10.96.0.0/12``."""
    cluster_node_cidrs: NotRequired[list[str]]
    """Node address ranges: excluded from sandbox egress, allowed to call the router."""
    cluster_dns_addresses: NotRequired[list[str]]
    """Resolvers besides the kube-dns pods (NodeLocal DNSCache), allowed on port 53 only."""


# AgentSandboxArgs field -> the config key validating it (the camelCase of the field, except one).
VALIDATED_INPUTS: dict[str, str] = {
    "runtime": "runtime", "allow_insecure_runc": "allowInsecureRunc", "manage_runtime_class": "manageRuntimeClass",
    "kata_node_name": "clusterName", "kata_chart_version": "kataChartVersion", "kata_chart_repo": "kataChartRepo",
    "controller_manifest": "controllerManifest", "controller_image": "controllerImage",
    "controller_profile": "controllerProfile", "controller_flags": "controllerFlags",
    "serve_legacy_api_versions": "serveLegacyApiVersions",
    "sandbox_namespace": "sandboxNamespace", "template_name": "templateName", "sandbox_port": "sandboxPort",
    "sandbox_resources": "sandboxResources", "sandbox_node_selector": "sandboxNodeSelector",
    "sandbox_tolerations": "sandboxTolerations", "warm_pool_name": "warmPoolName", "warm_pool_replicas": "warmPoolReplicas",
    "warm_pool_autoscaling": "warmPoolAutoscaling", "warm_pool_min_replicas": "warmPoolMinReplicas",
    "warm_pool_max_replicas": "warmPoolMaxReplicas", "warm_pool_in_use_per_warm": "warmPoolInUsePerWarm",
    "warm_pool_scale_down_seconds": "warmPoolScaleDownSeconds", "install_keda": "installKeda",
    "keda_operator_image": "kedaOperatorImage", "keda_metrics_image": "kedaMetricsImage",
    "router_replicas": "routerReplicas", "router_allowed_pod_cidrs": "routerAllowedPodCidrs",
    "router_sandbox_namespaces": "routerSandboxNamespaces", "api_server_endpoints": "apiServerEndpoints",
    "sandbox_egress": "sandboxEgress", "sandbox_egress_allow": "sandboxEgressAllow",
    "cluster_pod_cidrs": "clusterPodCidrs", "cluster_service_cidrs": "clusterServiceCidrs",
    "cluster_node_cidrs": "clusterNodeCidrs", "cluster_dns_addresses": "clusterDnsAddresses",
}


# Integer inputs: numbers from other languages arrive as floats (the SDK's provider passes them on
# unconverted), and a warm pool of "3.0" replicas would reach the cluster as such.
INTEGER_INPUTS = ("sandbox_port", "warm_pool_replicas", "router_replicas", "warm_pool_min_replicas",
                  "warm_pool_max_replicas", "warm_pool_in_use_per_warm", "warm_pool_scale_down_seconds")


def with_whole_numbers(args: AgentSandboxArgs) -> AgentSandboxArgs:
    """``args`` with whole-number floats of the integer inputs as ints (others are left for the
    validator to refuse)."""
    fixed = dict(args)
    for field in INTEGER_INPUTS:
        value = fixed.get(field)
        if isinstance(value, float) and value.is_integer():
            fixed[field] = int(value)
    return fixed  # type: ignore[return-value]


def validated_settings(args: AgentSandboxArgs) -> StackConfig:
    """The plain inputs checked and completed by the stack config's validator (a ``StackConfig``).
    None and empty lists mean "not given" (the default applies), as for an unset config key."""
    values: dict[str, Any] = {key: args[field] for field, key in VALIDATED_INPUTS.items()
                              if args.get(field) not in (None, [])}
    token = args.get("router_auth_token")
    if isinstance(token, str):  # an Output is checked by whoever made it
        values["routerAuthToken"] = token
    settings = parse_component_inputs(values)
    if settings.runtime == "kata-qemu" and not args.get("kata_node_name"):
        raise ComponentInputError("AgentSandbox", ["kataNodeName is not set: runtime 'kata-qemu' installs kata-deploy "
                                                   "onto that node (minikube: the profile name)"])
    return settings


class AgentSandbox(pulumi.ComponentResource):
    """Agent Sandbox on a Kubernetes cluster: secure runtime, controller release, hardened
    SandboxTemplate + SandboxWarmPool, and the authenticated sandbox router.

    Pass the Kubernetes provider with the ``providers`` (or ``provider``) option. Depend on this
    component to know the warm pool has ``warmPoolReplicas`` ready sandboxes."""

    namespace: pulumi.Output[str]
    """Namespace of the template, the pool and the sandboxes."""
    template_name: pulumi.Output[str]
    """Name of the SandboxTemplate."""
    warm_pool_name: pulumi.Output[str]
    """Name of the SandboxWarmPool SDK clients claim from."""
    warm_pool_replicas: pulumi.Output[int]
    """Pre-started sandboxes the pool keeps (with autoscaling: at least, ``warmPoolMinReplicas``)."""
    warm_pool_autoscaling: pulumi.Output[str]
    """``off`` (fixed size) or ``keda`` (the pool follows demand)."""
    runtime_class_name: pulumi.Output[str]
    """RuntimeClass of the sandbox pods."""
    sandbox_port: pulumi.Output[int]
    """Port the sandbox runtime listens on (clients' SDK ``server_port``)."""
    controller_namespace: pulumi.Output[str]
    """Namespace of the controller (``agent-sandbox-system``)."""
    router_service_name: pulumi.Output[str]
    """Router Service the SDK reaches (``sandbox-router-svc``)."""
    router_namespace: pulumi.Output[str]
    """Namespace of the router Service."""
    router_port: pulumi.Output[int]
    """Port of the router Service (8080)."""
    router_auth_token: pulumi.Output[str]
    """Bearer token of the router (secret)."""

    def __init__(self, name: str, args: AgentSandboxArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        args = with_whole_numbers(args)
        settings = validated_settings(args)
        pull_policy = args.get("image_pull_policy") or "IfNotPresent"

        # Existing stacks of this project declared the parts at the top level: the alias keeps
        # their URNs (and those of every child, which the engine derives from the parent's).
        was_top_level = [pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)]

        runtime = SecureRuntime(PART_NAMES["runtime"], {
            "runtime": settings.runtime,
            "handler": settings.runtime_handler,
            "manage_runtime_class": settings.manage_runtime_class,
            "kata_node_name": settings.cluster_name,
            "kata_chart_version": settings.kata_chart_version,
            "kata_chart_repo": settings.kata_chart_repo,
        }, opts=child_options(self, opts, aliases=was_top_level))
        controller = AgentSandboxController(PART_NAMES["controller"], {
            "manifest": settings.controller_manifest,
            "controller_image": settings.controller_image,
            "flags": controller_flags.effective_flags(settings.controller_profile, dict(settings.controller_flags)),
            "legacy_api_versions": settings.serve_legacy_api_versions,
        }, opts=child_options(self, opts, aliases=was_top_level))
        keda = None
        if settings.install_keda:
            keda = Keda(PART_NAMES["keda"], {
                "operator_image": settings.keda_operator_image,
                "metrics_image": settings.keda_metrics_image,
                "image_pull_policy": pull_policy,
            }, opts=child_options(self, opts))
        pool = SandboxPool(PART_NAMES["pool"], {
            "namespace": settings.sandbox_namespace,
            "template_name": settings.template_name,
            "warm_pool_name": settings.warm_pool_name,
            "warm_pool_replicas": settings.warm_pool_replicas,
            "runtime_image": args["runtime_image"],
            "runtime_class_name": runtime.runtime_class_name,
            "network_policy": sandbox_network_policy(settings),
            "sandbox_port": settings.sandbox_port,
            "image_pull_policy": pull_policy,
            "resources": settings.sandbox_resources.as_dict(),
            "node_selector": dict(settings.sandbox_node_selector),
            "tolerations": [dict(t) for t in settings.sandbox_tolerations],
            "extensions_api_version": controller.extensions_api_version,
            "autoscaling": settings.autoscaling,
            "autoscaler": keda,
        }, opts=child_options(self, opts, depends_on=[controller, runtime], aliases=was_top_level))
        router_inputs: dict[str, Any] = {
            "image": args["router_image"],
            "image_pull_policy": pull_policy,
            "replicas": settings.router_replicas,
            "sandbox_namespaces": list(settings.router_sandbox_namespaces),
            "sandbox_port": settings.sandbox_port,
            "allowed_pod_cidrs": list(settings.router_allowed_pod_cidrs),
            "api_server_endpoints": [endpoint.as_input() for endpoint in settings.api_server_endpoints],
            "dns_addresses": list(settings.cluster_dns_addresses),
            "node_cidrs": list(settings.cluster_node_cidrs),
        }
        if args.get("router_resources"):
            router_inputs["resources"] = args["router_resources"]
        if args.get("router_auth_token") is not None:
            router_inputs["auth_token"] = args["router_auth_token"]
        # The Roles in the sandbox namespace need it to exist; the router never waits for the pool.
        router = SandboxRouter(PART_NAMES["router"], router_inputs, opts=child_options(
            self, opts, depends_on=[controller, pool.namespace_resource], aliases=was_top_level))

        self.runtime = runtime
        self.controller = controller
        self.pool = pool
        self.router = router
        self.namespace = pool.namespace
        self.template_name = pool.template_name
        self.warm_pool_name = pool.warm_pool_name
        self.keda = keda
        self.warm_pool_replicas = pulumi.Output.from_input(settings.warm_pool_floor)
        self.warm_pool_autoscaling = pulumi.Output.from_input(settings.warm_pool_autoscaling)
        self.runtime_class_name = runtime.runtime_class_name
        self.sandbox_port = pulumi.Output.from_input(settings.sandbox_port)
        self.controller_namespace = controller.namespace
        self.router_service_name = router.service_name
        self.router_namespace = router.namespace
        self.router_port = router.port
        self.router_auth_token = router.auth_token
        self.register_outputs({
            "namespace": self.namespace,
            "templateName": self.template_name,
            "warmPoolName": self.warm_pool_name,
            "warmPoolReplicas": self.warm_pool_replicas,
            "warmPoolAutoscaling": self.warm_pool_autoscaling,
            "runtimeClassName": self.runtime_class_name,
            "sandboxPort": self.sandbox_port,
            "controllerNamespace": self.controller_namespace,
            "routerServiceName": self.router_service_name,
            "routerNamespace": self.router_namespace,
            "routerPort": self.router_port,
            "routerAuthToken": self.router_auth_token,
        })
