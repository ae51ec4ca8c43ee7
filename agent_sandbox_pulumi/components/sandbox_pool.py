"""The sandbox namespace, the hardened SandboxTemplate, the SandboxWarmPool that keeps
pre-started sandboxes ready to be claimed and, when the pool follows demand, the KEDA
ScaledObject that sizes it.

Owns: ``SandboxPoolArgs`` and ``SandboxPool``. The pod and network specs come from
``sandbox_iac.sandbox_spec``, the ScaledObject's from ``sandbox_iac.autoscaling``; the egress
rules inside ``network_policy`` are built (and their safety checked) by ``AgentSandbox`` from its
validated inputs."""

from typing import Any, NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from agent_sandbox_pulumi.components.args import ContainerResources
from agent_sandbox_pulumi.components.options import child_options
from agent_sandbox_pulumi.sandbox_iac import constants, versions
from agent_sandbox_pulumi.sandbox_iac.autoscaling import Autoscaling, scaled_object_spec
from agent_sandbox_pulumi.sandbox_iac.config import DEFAULT_RESOURCES
from agent_sandbox_pulumi.sandbox_iac.sandbox_spec import SANDBOX_POD_LABELS, pod_template, pool_spec, template_spec


class SandboxPoolArgs(TypedDict):
    """Inputs of SandboxPool."""

    namespace: str
    """Namespace created for the template, the pool and every sandbox."""
    template_name: str
    """Name of the SandboxTemplate."""
    warm_pool_name: str
    """Name of the SandboxWarmPool (what SDK clients claim from)."""
    warm_pool_replicas: int
    """Pre-started sandboxes; Pulumi waits until that many are ready (0 = cold starts only)."""
    runtime_image: pulumi.Input[str]
    """Image of the sandbox runtime container (tag or digest)."""
    runtime_class_name: pulumi.Input[str]
    """RuntimeClass the sandbox pods run under (must exist before pods start)."""
    network_policy: dict[str, Any]
    """``spec.networkPolicy`` of the template (ingress from the router only, egress per mode:
    ``sandbox_spec.sandbox_network_policy``)."""
    sandbox_port: NotRequired[int]
    """Port the runtime listens on; default 8888."""
    image_pull_policy: NotRequired[str]
    """Pull policy of the runtime container; default ``IfNotPresent`` (``Never`` for node-loaded images)."""
    resources: NotRequired[ContainerResources]
    """Requests/limits of sandbox pods, merged with the defaults: requests 100m/256Mi/512Mi, limits 2/1Gi/1Gi."""
    node_selector: NotRequired[dict[str, str]]
    """Node labels sandbox pods must run on (a node pool dedicated to sandboxes); default none."""
    tolerations: NotRequired[list[dict[str, Any]]]
    """Tolerations of sandbox pods (Kubernetes' fields: key, operator, value, effect,
    tolerationSeconds), for tainted sandbox nodes; default none."""
    extensions_api_version: NotRequired[str]
    """``group/version`` of SandboxTemplate/SandboxWarmPool the controller serves (its output
    ``extensions_api_version``); default ``extensions.agents.x-k8s.io/v1beta1``."""
    autoscaling: NotRequired[Optional[Autoscaling]]
    """Size the pool by demand through a KEDA ScaledObject (KEDA must be in the cluster: pass the
    ``Keda`` component in ``autoscaler``); ``warm_pool_replicas`` is then not declared. Default none."""
    autoscaler: NotRequired[Optional[pulumi.Resource]]
    """What the ScaledObject waits for (the stack's ``Keda`` component); default nothing."""


def wait_for_ready_replicas(replicas: int) -> dict[str, str]:
    """Annotation that makes Pulumi wait until the pool has ``replicas`` ready sandboxes."""
    if replicas == 0:
        return {}
    return {"pulumi.com/waitFor": f"jsonpath={{.status.readyReplicas}}={replicas}"}


class SandboxPool(pulumi.ComponentResource):
    """Namespace + SandboxTemplate + SandboxWarmPool.

    Outputs (registered camelCase):
      namespace: namespace holding the template, the pool and every sandbox.
      template_name: name of the SandboxTemplate.
      warm_pool_name: name of the SandboxWarmPool (what SDK clients claim from).
      runtime_class_name: RuntimeClass of the sandbox pods.
    """

    namespace: pulumi.Output[str]
    template_name: pulumi.Output[str]
    warm_pool_name: pulumi.Output[str]
    runtime_class_name: pulumi.Output[str]

    def __init__(self, name: str, args: SandboxPoolArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("agent-sandbox:index:SandboxPool", name, None, opts)
        api_version = args.get("extensions_api_version") or versions.EXTENSIONS_API_VERSION
        replicas = args["warm_pool_replicas"]
        given = args.get("resources") or {}
        # Given parts replace the defaults per resource name, like the stack config merges them.
        resources = {part: {**DEFAULT_RESOURCES[part], **(given.get(part) or {})} for part in DEFAULT_RESOURCES}
        port = args.get("sandbox_port", constants.SANDBOX_PORT)
        pull_policy = args.get("image_pull_policy") or "IfNotPresent"
        network_policy = args["network_policy"]
        node_selector, tolerations = args.get("node_selector") or {}, args.get("tolerations") or []
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args["namespace"], labels=dict(constants.MANAGED_BY_LABEL)),
            opts=child_options(self, opts),
        )
        spec = pulumi.Output.all(args["runtime_image"], args["runtime_class_name"]).apply(
            lambda values: template_spec(
                pod_template(values[0], port=port, image_pull_policy=pull_policy, resources=resources,
                             runtime_class_name=values[1], node_selector=node_selector, tolerations=tolerations),
                network_policy,
            )
        )
        self.template = k8s.apiextensions.CustomResource(
            f"{name}-template",
            api_version=api_version,
            kind="SandboxTemplate",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args["template_name"], namespace=namespace.metadata.name, labels=dict(constants.MANAGED_BY_LABEL),
            ),
            spec=spec,
            opts=child_options(self, opts),
        )
        autoscaling = args.get("autoscaling")
        warm_pool_spec = pool_spec(args["template_name"], replicas)
        if autoscaling is not None:
            # The autoscaler owns the size: the pool is declared without one (the CRD's default
            # applies until KEDA scales it) and `up` does not wait for a count it cannot know.
            del warm_pool_spec["replicas"]
            replicas = 0  # no readyReplicas to wait for
        self.warm_pool = k8s.apiextensions.CustomResource(
            f"{name}-warm-pool",
            api_version=api_version,
            kind="SandboxWarmPool",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args["warm_pool_name"],
                namespace=namespace.metadata.name,
                labels=dict(constants.MANAGED_BY_LABEL),
                # Pulumi owns the declared replica count: a temporary scale by another field
                # manager (the bench, an operator's kubectl) must not block the next `up`.
                annotations={"pulumi.com/patchForce": "true", **wait_for_ready_replicas(replicas)},
            ),
            spec=warm_pool_spec,
            opts=child_options(self, opts, depends_on=[self.template]),
        )
        self.scaled_object: Optional[k8s.apiextensions.CustomResource] = None
        if autoscaling is not None:
            autoscaler = args.get("autoscaler")
            self.scaled_object = k8s.apiextensions.CustomResource(
                f"{name}-warm-pool-autoscaler",
                api_version=versions.KEDA_API_VERSION,
                kind="ScaledObject",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=args["warm_pool_name"], namespace=namespace.metadata.name,
                    labels=dict(constants.MANAGED_BY_LABEL),
                ),
                spec=scaled_object_spec(autoscaling, pool_api_version=api_version, pool_name=args["warm_pool_name"],
                                        pod_labels=SANDBOX_POD_LABELS),
                opts=child_options(self, opts, depends_on=[self.warm_pool, *([autoscaler] if autoscaler else [])]),
            )
        # The router's Role in this namespace waits for it (without waiting for the pool).
        self.namespace_resource = namespace
        self.namespace = namespace.metadata.name
        # Custom resources carry untyped outputs: metadata is a plain dict.
        self.template_name = self.template.metadata.apply(lambda metadata: metadata["name"])
        self.warm_pool_name = self.warm_pool.metadata.apply(lambda metadata: metadata["name"])
        self.runtime_class_name = pulumi.Output.from_input(args["runtime_class_name"])
        self.register_outputs({
            "namespace": self.namespace,
            "templateName": self.template_name,
            "warmPoolName": self.warm_pool_name,
            "runtimeClassName": self.runtime_class_name,
        })
