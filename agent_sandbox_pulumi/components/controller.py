"""The agent-sandbox controller release: CRDs, namespace, RBAC, the webhook Service when the
release has one and its older API versions are kept, and the controller Deployment (with
``--extensions`` and a readiness probe that fits: the webhook port with a conversion webhook,
/readyz without one).

Owns: ``ControllerArgs`` and ``AgentSandboxController``. The release manifest is named by its
source (path or URL, default: the vendored pinned copy) and read here, never passed as objects."""

from typing import Any, NotRequired, Optional, TypedDict

import pulumi

from agent_sandbox_pulumi.components.manifest_objects import declare_object
from agent_sandbox_pulumi.sandbox_iac import constants, manifests, versions

# A controller with a conversion webhook writes its self-signed CA into the CRDs at start-up;
# without this the next `up` would fight the controller over the field. CRDs without a webhook
# have no such field to ignore.
CA_BUNDLE_PATH = "spec.conversion.webhook.clientConfig.caBundle"

class ControllerArgs(TypedDict):
    """Inputs of AgentSandboxController (plain values: they decide which objects are declared)."""

    manifest: NotRequired[str]
    """Path (absolute, or relative to the program's directory) or https URL of the release's
    ``sandbox-with-extensions.yaml``; default: the pinned v0.5.6 copy vendored in this package.
    Downloads must match a known sha256 (append ``#sha256=<digest>`` to other URLs)."""
    controller_image: NotRequired[str]
    """Controller image; default the release's own (``registry.k8s.io/...:v0.5.6``)."""
    image_pull_policy: NotRequired[str]
    """Pull policy of the controller container; default ``IfNotPresent``."""
    flags: NotRequired[dict[str, str]]
    """Tuning flags (name without dashes → value), e.g. ``{"separate-watch-connection": "true"}``;
    only ``sandbox_iac.controller_flags.TUNABLE_FLAGS``; each replaces the release's own value."""
    legacy_api_versions: NotRequired[bool]
    """Keep the release's older API versions and its conversion webhook (default false: each CRD
    serves its storage version only, without conversion; ``manifests.storage_versions_only``)."""


class AgentSandboxController(pulumi.ComponentResource):
    """Installs the controller release so that custom resources can follow.

    Depending on this component means: the CRDs exist, and the controller Deployment is
    Available and ready for custom resources: with a conversion webhook (v0.5.6) the readiness
    probe added to the release's Deployment waits for the webhook port; without one (v1.0.x)
    it waits for the controller's /readyz. ``manifests.release_shape`` decides which.

    Outputs (registered camelCase):
      namespace: the controller's namespace (``agent-sandbox-system``).
      crd_names: names of the CRDs the release installs.
      deployment_name: name of the controller Deployment.
      extensions_api_version: ``group/version`` for SandboxTemplate/SandboxWarmPool objects
        that this release serves. Also a plain ``str`` attribute: a custom resource's type token
        is derived from its apiVersion when it is declared, so it cannot wait for an Output.
    """

    namespace: pulumi.Output[str]
    crd_names: pulumi.Output[list[str]]
    deployment_name: pulumi.Output[str]
    extensions_api_version: str

    def __init__(self, name: str, args: ControllerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("agent-sandbox:index:AgentSandboxController", name, None, opts)
        release = manifests.load_release(args.get("manifest"))
        if not args.get("legacy_api_versions"):
            release = manifests.storage_versions_only(release)
        shape = manifests.release_shape(release)
        self._webhook_crds = set(shape.conversion_webhook_crds)
        self.extensions_api_version = shape.extensions_api_version
        if shape.extensions_api_version != versions.EXTENSIONS_API_VERSION:
            pulumi.log.warn(f"the controller manifest no longer serves {versions.EXTENSIONS_API_VERSION}; "
                            f"SandboxTemplate/SandboxWarmPool need {shape.extensions_api_version}", self)
        objects = manifests.adapt_release(release, args.get("controller_image") or versions.AGENT_SANDBOX_CONTROLLER_IMAGE,
                                          args.get("image_pull_policy") or "IfNotPresent", args.get("flags"))
        foundation, workload = manifests.split_foundation(objects)
        declared_foundation = [self._declare(name, obj, [], opts) for obj in foundation]
        for obj in workload:
            self._declare(name, obj, declared_foundation, opts)
        self.namespace = pulumi.Output.from_input(constants.CONTROLLER_NAMESPACE)
        self.crd_names = pulumi.Output.from_input(
            [o["metadata"]["name"] for o in foundation if o["kind"] == manifests.CRD_KIND]
        )
        self.deployment_name = pulumi.Output.from_input(constants.CONTROLLER_DEPLOYMENT)
        self.register_outputs({
            "namespace": self.namespace,
            "crdNames": self.crd_names,
            "deploymentName": self.deployment_name,
            "extensionsApiVersion": self.extensions_api_version,
        })

    def _declare(self, name: str, obj: dict[str, Any], depends_on: list[pulumi.Resource],
                 opts: Optional[pulumi.ResourceOptions]) -> pulumi.CustomResource:
        ignore = ([CA_BUNDLE_PATH] if obj["kind"] == manifests.CRD_KIND
                  and obj["metadata"]["name"] in self._webhook_crds else None)
        return declare_object(self, name, obj, opts, "controller manifest", depends_on=depends_on, ignore_changes=ignore)
