"""The sandbox namespace, the hardened SandboxTemplate and the SandboxWarmPool that keeps
pre-started sandboxes ready to be claimed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from sandbox_iac import constants, versions
from sandbox_iac.config import StackConfig
from components.options import child_options
from sandbox_iac.sandbox_spec import sandbox_template_spec, warm_pool_spec


@dataclass
class SandboxPoolArgs:
    """Inputs of SandboxPool."""

    config: StackConfig
    """Validated stack configuration (namespace, names, runtime, resources, replicas)."""
    runtime_image: pulumi.Input[str]
    """Image of the sandbox runtime container."""
    runtime_class_name: pulumi.Input[str]
    """RuntimeClass the sandbox pods run under (must exist before pods start)."""


def wait_for_ready_replicas(replicas: int) -> dict[str, str]:
    """Annotation that makes Pulumi wait until the pool has ``replicas`` ready sandboxes."""
    if replicas == 0:
        return {}
    return {"pulumi.com/waitFor": f"jsonpath={{.status.readyReplicas}}={replicas}"}


class SandboxPool(pulumi.ComponentResource):
    """Namespace + SandboxTemplate + SandboxWarmPool.

    Outputs:
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
        config = args.config
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=config.sandbox_namespace, labels=dict(constants.MANAGED_BY_LABEL)),
            opts=child_options(self, opts),
        )
        spec = pulumi.Output.all(args.runtime_image, args.runtime_class_name).apply(
            lambda values: _template_spec_for(config, values[0], values[1])
        )
        self.template = k8s.apiextensions.CustomResource(
            f"{name}-template",
            api_version=versions.EXTENSIONS_API_VERSION,
            kind="SandboxTemplate",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=config.template_name, namespace=namespace.metadata.name, labels=dict(constants.MANAGED_BY_LABEL),
            ),
            spec=spec,
            opts=child_options(self, opts),
        )
        self.warm_pool = k8s.apiextensions.CustomResource(
            f"{name}-warm-pool",
            api_version=versions.EXTENSIONS_API_VERSION,
            kind="SandboxWarmPool",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=config.warm_pool_name,
                namespace=namespace.metadata.name,
                labels=dict(constants.MANAGED_BY_LABEL),
                # Pulumi owns the declared replica count: a temporary scale by another field
                # manager (the bench, an operator's kubectl) must not block the next `up`.
                annotations={"pulumi.com/patchForce": "true", **wait_for_ready_replicas(config.warm_pool_replicas)},
            ),
            spec=warm_pool_spec(config),
            opts=child_options(self, opts, depends_on=[self.template]),
        )
        # The router's Role in this namespace waits for it (without waiting for the pool).
        self.namespace_resource = namespace
        self.namespace = namespace.metadata.name
        # Custom resources carry untyped outputs: metadata is a plain dict.
        self.template_name = self.template.metadata.apply(lambda metadata: metadata["name"])
        self.warm_pool_name = self.warm_pool.metadata.apply(lambda metadata: metadata["name"])
        self.runtime_class_name = pulumi.Output.from_input(args.runtime_class_name)
        self.register_outputs({
            "namespace": self.namespace,
            "template_name": self.template_name,
            "warm_pool_name": self.warm_pool_name,
            "runtime_class_name": self.runtime_class_name,
        })


def _template_spec_for(config: StackConfig, image: str, runtime_class_name: str) -> dict:
    spec = sandbox_template_spec(config, image)
    spec["podTemplate"]["spec"]["runtimeClassName"] = runtime_class_name
    return spec
