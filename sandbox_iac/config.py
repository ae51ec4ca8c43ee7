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
from typing import Any, Callable, Mapping, Optional

from sandbox_iac import constants, versions

CLUSTER_FLAVOURS = ("kind", "minikube", "existing")
SECURE_RUNTIMES = ("gvisor", "kata-qemu")
INSECURE_RUNTIME = "runc"
IMAGE_LOAD_STRATEGIES = ("kind", "minikube", "containerd", "registry", "preloaded")
IMAGE_BUILD_MODES = ("docker", "prebuilt")
IMAGE_VARIANTS = ("full", "minimal")

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
CPU_QUANTITY = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
BYTES_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
# A tag or a digest is required: a bare name means ":latest", which is never reproducible.
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$")

RESOURCE_KEYS = ("cpu", "memory", "ephemeral-storage")
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "512Mi"},
    "limits": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
}
ROUTER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}


class ConfigError(ValueError):
    """One or more configuration values are invalid; ``problems`` has one line per key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class ConfigKey:
    """Documentation and default of one configuration key (drives the README table too)."""

    name: str
    default: Any
    description: str
    secret: bool = False


CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("clusterFlavour", "kind", "Where the stack runs: `kind` | `minikube` | `existing`."),
    ConfigKey("clusterName", "agent-sandbox", "KIND cluster name or minikube profile (also the node label target for Kata)."),
    ConfigKey("kubeContext", None, "kubeconfig context; default `kind-<clusterName>` (kind), `<clusterName>` (minikube), current context (existing)."),
    ConfigKey("kubeconfig", None, "Path to a kubeconfig file; default: `$KUBECONFIG` or `~/.kube/config`."),
    ConfigKey("runtime", "gvisor", "Sandbox runtime class: `gvisor` | `kata-qemu` (`runc` only with `allowInsecureRunc`)."),
    ConfigKey("allowInsecureRunc", False, "Set `true` to allow `runtime: runc` (no isolation; local development only)."),
    ConfigKey("manageRuntimeClass", True, "Declare the gVisor RuntimeClass (set `false` when the cluster already ships it)."),
    ConfigKey("sandboxNamespace", "agent-sandbox-demo", "Namespace of the SandboxTemplate, SandboxWarmPool and sandboxes."),
    ConfigKey("templateName", "python-sandbox-template", "Name of the SandboxTemplate."),
    ConfigKey("sandboxImage", None, "Runtime image ref (required with `imageBuild: prebuilt`; tag or digest, never `latest`)."),
    ConfigKey("sandboxPort", constants.SANDBOX_PORT, "Port the runtime listens on."),
    ConfigKey("sandboxResources", DEFAULT_RESOURCES, "Object `{requests: {cpu, memory, ephemeral-storage}, limits: {...}}` for sandbox pods."),
    ConfigKey("warmPoolName", "python-sandbox-warmpool", "Name of the SandboxWarmPool."),
    ConfigKey("warmPoolReplicas", 2, "Pre-warmed sandboxes (`0` = cold starts only)."),
    ConfigKey("routerReplicas", 2, "Router Deployment replicas."),
    ConfigKey("routerAuthToken", None, "Router bearer token (secret); generated once and kept if unset.", secret=True),
    ConfigKey("routerAllowedPodCidrs", None, "Comma-separated pod CIDRs the router may proxy to (e.g. `10.244.0.0/16`); unset: any non-restricted unicast address."),
    ConfigKey("routerImage", None, "Router image ref (required with `imageBuild: prebuilt`)."),
    ConfigKey("imageBuild", "docker", "`docker`: build images with pulumi-docker; `prebuilt`: use `sandboxImage`/`routerImage` (e.g. from `make images`)."),
    ConfigKey("imageVariant", "full", "Runtime image variant: `full` (pandas, scikit-learn, lightgbm) | `minimal`."),
    ConfigKey("baseImage", versions.DEFAULT_BASE_IMAGE, "BASE_IMAGE build argument of both Dockerfiles."),
    ConfigKey("imageLoadStrategy", None, "How images reach the nodes: `kind` | `minikube` | `containerd` | `registry` | `preloaded`; default follows clusterFlavour (`registry` for existing)."),
    ConfigKey("containerdAddress", None, "containerd socket for `imageLoadStrategy: containerd` (default: ctr's default `/run/containerd/containerd.sock`)."),
    ConfigKey("imageRegistry", None, "Registry prefix to push to with `imageLoadStrategy: registry` (e.g. `registry.example.com/team`)."),
    ConfigKey("controllerManifest", versions.AGENT_SANDBOX_MANIFEST_URL, "URL or local path of the pinned controller manifest (air-gapped: a local copy)."),
    ConfigKey("controllerImage", versions.AGENT_SANDBOX_CONTROLLER_IMAGE, "Controller image (override for mirrors or local builds)."),
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
    router_auth_token: Optional[str]
    router_allowed_pod_cidrs: tuple[str, ...]
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
    router_resources: Resources = field(default_factory=lambda: Resources(**ROUTER_RESOURCES))

    @property
    def runtime_handler(self) -> str:
        """The CRI handler behind the runtime class (``runsc`` for gVisor)."""
        return constants.RUNTIME_CLASS_HANDLERS[self.runtime]

    @property
    def image_pull_policy(self) -> str:
        """Images loaded onto the node are never pulled; pushed ones are pulled once."""
        return "IfNotPresent" if self.image_load_strategy == "registry" else "Never"


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

    def cidrs(self, key: str) -> tuple[str, ...]:
        value = self.value(key)
        if value is None:
            return ()
        items = value if isinstance(value, list) else str(value).split(",")
        cidrs: list[str] = []
        for item in (str(i).strip() for i in items):
            try:
                cidrs.append(str(ipaddress.ip_network(item, strict=True)))
            except ValueError:
                self.fail(key, value, f"{item!r} is not a CIDR network (e.g. 10.244.0.0/16)", "10.244.0.0/16")
                return ()
        return tuple(cidrs)

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
        sandbox_namespace=check.name("sandboxNamespace"),
        template_name=check.name("templateName"),
        sandbox_image=sandbox_image,
        sandbox_port=check.integer("sandboxPort", 1, 65535),
        sandbox_resources=check.resources("sandboxResources"),
        warm_pool_name=check.name("warmPoolName"),
        warm_pool_replicas=check.integer("warmPoolReplicas", 0, 1000),
        router_replicas=check.integer("routerReplicas", 1, 100),
        router_auth_token=check.optional_text("routerAuthToken"),
        router_allowed_pod_cidrs=check.cidrs("routerAllowedPodCidrs"),
        router_image=router_image,
        image_build=image_build,
        image_variant=check.choice("imageVariant", IMAGE_VARIANTS),
        base_image=check.optional_text("baseImage") or versions.DEFAULT_BASE_IMAGE,
        image_load_strategy=strategy,
        image_registry=registry,
        containerd_address=check.optional_text("containerdAddress"),
        controller_manifest=check.optional_text("controllerManifest") or versions.AGENT_SANDBOX_MANIFEST_URL,
        controller_image=check.image_ref("controllerImage") or versions.AGENT_SANDBOX_CONTROLLER_IMAGE,
        kata_chart_version=check.optional_text("kataChartVersion") or versions.KATA_DEPLOY_CHART_VERSION,
        kata_chart_repo=check.optional_text("kataChartRepo") or versions.KATA_DEPLOY_CHART_REPO,
    )
    if config.router_auth_token is not None and len(config.router_auth_token) < 16:
        check.fail("routerAuthToken", config.router_auth_token,
                   "the token must be at least 16 characters (or unset to generate one)",
                   "--secret \"$(openssl rand -hex 24)\"")
    if check.problems:
        raise ConfigError(check.problems)
    return config


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
