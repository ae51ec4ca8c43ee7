"""The secure container runtime sandboxes run under: gVisor's RuntimeClass, or Kata
Containers installed by its kata-deploy Helm chart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from sandbox_iac import constants, versions
from sandbox_iac.kind_config import kind_cluster_config

KATA_NAMESPACE = "kube-system"
KATA_NODE_LABEL = {"kata-containers": "enabled"}


@dataclass
class SecureRuntimeArgs:
    """Inputs of SecureRuntime."""

    runtime: str
    """RuntimeClass name sandboxes use: ``gvisor``, ``kata-qemu`` or (insecure) ``runc``."""
    handler: str
    """CRI handler of the RuntimeClass (``runsc`` for gVisor)."""
    cluster_flavour: str
    """``kind`` | ``minikube`` | ``existing``; the KIND config output is only set for ``kind``."""
    cluster_name: str
    """KIND cluster / minikube profile; for Kata also the node that gets the kata label."""
    manage_runtime_class: bool = True
    """Declare the gVisor RuntimeClass (false when the cluster already ships it)."""
    kata_chart_version: str = ""
    """kata-deploy chart version (kata only)."""
    kata_chart_repo: str = ""
    """kata-deploy chart repository URL, ``oci://`` ref or local chart path (kata only)."""


def kata_chart_location(repo: str) -> tuple[str, Optional[str]]:
    """(chart, repository) for Helm: an ``oci://`` registry, an HTTP chart repo or a local path."""
    if repo.startswith("oci://"):
        return f"{repo.rstrip('/')}/{versions.KATA_DEPLOY_CHART}", None
    if repo.startswith(("http://", "https://")):
        return versions.KATA_DEPLOY_CHART, repo
    return repo, None


class SecureRuntime(pulumi.ComponentResource):
    """Makes the stack's RuntimeClass exist.

    Outputs:
      runtime_class_name: the RuntimeClass sandboxes reference.
      kind_cluster_config: YAML for ``kind create cluster --config`` (gVisor on KIND; else empty).
    """

    runtime_class_name: pulumi.Output[str]
    kind_cluster_config: pulumi.Output[str]

    def __init__(self, name: str, args: SecureRuntimeArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("agent-sandbox:index:SecureRuntime", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        if args.runtime == "kata-qemu":
            self.runtime_class_name = self._install_kata(name, args, child)
        else:
            if args.manage_runtime_class:
                runtime_class = k8s.node.v1.RuntimeClass(
                    f"{name}-{args.runtime}",
                    metadata=k8s.meta.v1.ObjectMetaArgs(name=args.runtime, labels=dict(constants.MANAGED_BY_LABEL)),
                    handler=args.handler,
                    opts=child,
                )
                self.runtime_class_name = runtime_class.metadata.name
            else:
                self.runtime_class_name = pulumi.Output.from_input(args.runtime)
        is_kind_gvisor = args.cluster_flavour == "kind" and args.runtime == "gvisor"
        self.kind_cluster_config = pulumi.Output.from_input(
            kind_cluster_config(args.cluster_name) if is_kind_gvisor else ""
        )
        self.register_outputs({
            "runtime_class_name": self.runtime_class_name,
            "kind_cluster_config": self.kind_cluster_config,
        })

    def _install_kata(self, name: str, args: SecureRuntimeArgs, child: pulumi.ResourceOptions) -> pulumi.Output[str]:
        node_label = k8s.core.v1.NodePatch(
            f"{name}-kata-node-label",
            metadata=k8s.meta.v1.ObjectMetaPatchArgs(name=args.cluster_name, labels=dict(KATA_NODE_LABEL)),
            opts=child,
        )
        chart, repository = kata_chart_location(args.kata_chart_repo)
        release = k8s.helm.v3.Release(
            f"{name}-kata-deploy",
            name="kata-deploy",
            chart=chart,
            version=args.kata_chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repository) if repository else None,
            namespace=KATA_NAMESPACE,
            values={"k8sDistribution": "k8s", "nodeSelector": dict(KATA_NODE_LABEL)},
            timeout=600,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[node_label]),
        )
        # kata-deploy creates the RuntimeClass itself; reading it back makes every sandbox
        # wait until it really exists.
        runtime_class = k8s.node.v1.RuntimeClass.get(
            f"{name}-{args.runtime}", args.runtime,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[release]),
        )
        return runtime_class.metadata.name
