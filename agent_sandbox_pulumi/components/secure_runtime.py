"""The secure container runtime sandboxes run under: gVisor's RuntimeClass, or Kata
Containers installed by its kata-deploy Helm chart.

Owns: ``SecureRuntimeArgs`` and ``SecureRuntime``. (The KIND cluster config that gives nodes the
runsc handler is the driver's concern: ``sandbox_iac.kind_config``.)"""

from typing import NotRequired, Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from agent_sandbox_pulumi.components.options import child_options
from agent_sandbox_pulumi.sandbox_iac import constants, versions

KATA_NAMESPACE = "kube-system"
KATA_NODE_LABEL = {"kata-containers": "enabled"}


class SecureRuntimeArgs(TypedDict):
    """Inputs of SecureRuntime (plain values: they decide which objects are declared)."""

    runtime: str
    """RuntimeClass name sandboxes use: ``gvisor``, ``kata-qemu`` or (insecure) ``runc``."""
    handler: NotRequired[str]
    """CRI handler of the RuntimeClass; default ``runsc`` for gvisor, the runtime's name otherwise."""
    manage_runtime_class: NotRequired[bool]
    """Declare the gVisor RuntimeClass (default true; false when the cluster already ships it)."""
    kata_node_name: NotRequired[str]
    """Kata only: the node that gets the ``kata-containers=enabled`` label kata-deploy selects."""
    kata_chart_version: NotRequired[str]
    """Kata only: kata-deploy chart version (default the pinned one)."""
    kata_chart_repo: NotRequired[str]
    """Kata only: chart repository URL, ``oci://`` ref or local chart path (default the pinned one)."""


def kata_chart_location(repo: str) -> tuple[str, Optional[str]]:
    """(chart, repository) for Helm: an ``oci://`` registry, an HTTP chart repo or a local path."""
    if repo.startswith("oci://"):
        return f"{repo.rstrip('/')}/{versions.KATA_DEPLOY_CHART}", None
    if repo.startswith(("http://", "https://")):
        return versions.KATA_DEPLOY_CHART, repo
    return repo, None


class SecureRuntime(pulumi.ComponentResource):
    """Makes the stack's RuntimeClass exist.

    Outputs (registered camelCase):
      runtime_class_name: the RuntimeClass sandboxes reference.
    """

    runtime_class_name: pulumi.Output[str]

    def __init__(self, name: str, args: SecureRuntimeArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("agent-sandbox:index:SecureRuntime", name, None, opts)
        runtime = args["runtime"]
        if runtime == "kata-qemu":
            self.runtime_class_name = self._install_kata(name, args, opts)
        elif args.get("manage_runtime_class", True):
            runtime_class = k8s.node.v1.RuntimeClass(
                f"{name}-{runtime}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=runtime, labels=dict(constants.MANAGED_BY_LABEL)),
                handler=args.get("handler") or constants.RUNTIME_CLASS_HANDLERS.get(runtime, runtime),
                opts=child_options(self, opts),
            )
            self.runtime_class_name = runtime_class.metadata.name
        else:
            self.runtime_class_name = pulumi.Output.from_input(runtime)
        self.register_outputs({"runtimeClassName": self.runtime_class_name})

    def _install_kata(self, name: str, args: SecureRuntimeArgs, opts: Optional[pulumi.ResourceOptions]) -> pulumi.Output[str]:
        node = args.get("kata_node_name")
        if not node:
            raise ValueError("SecureRuntime with runtime kata-qemu needs kata_node_name: the node kata-deploy installs onto")
        node_label = k8s.core.v1.NodePatch(
            f"{name}-kata-node-label",
            metadata=k8s.meta.v1.ObjectMetaPatchArgs(name=node, labels=dict(KATA_NODE_LABEL)),
            opts=child_options(self, opts),
        )
        chart, repository = kata_chart_location(args.get("kata_chart_repo") or versions.KATA_DEPLOY_CHART_REPO)
        release = k8s.helm.v3.Release(
            f"{name}-kata-deploy",
            name="kata-deploy",
            chart=chart,
            version=args.get("kata_chart_version") or versions.KATA_DEPLOY_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repository) if repository else None,
            namespace=KATA_NAMESPACE,
            values={"k8sDistribution": "k8s", "nodeSelector": dict(KATA_NODE_LABEL)},
            timeout=600,
            opts=child_options(self, opts, depends_on=[node_label]),
        )
        # kata-deploy creates the RuntimeClass itself; reading it back makes every sandbox
        # wait until it really exists.
        runtime_class = k8s.node.v1.RuntimeClass.get(
            f"{name}-{args['runtime']}", args["runtime"],
            opts=child_options(self, opts, depends_on=[release]),
        )
        return runtime_class.metadata.name
