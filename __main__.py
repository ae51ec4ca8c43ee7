"""Agent Sandbox on Kubernetes: reads the stack config once and wires the components."""

from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components.controller import AgentSandboxController, ControllerArgs
from components.images import ImagesArgs, SandboxImages
from components.router import RouterArgs, SandboxRouter
from components.sandbox_pool import SandboxPool, SandboxPoolArgs
from components.secure_runtime import SecureRuntime, SecureRuntimeArgs
from sandbox_iac import manifests
from sandbox_iac.pulumi_config import read_stack_config

PROJECT_DIR = Path(__file__).resolve().parent

config = read_stack_config()
release_objects = manifests.parse_manifest(manifests.read_manifest_text(config.controller_manifest, PROJECT_DIR))

cluster = k8s.Provider("cluster", context=config.kube_context, kubeconfig=config.kubeconfig)
in_cluster = pulumi.ResourceOptions(provider=cluster)

images = SandboxImages("images", ImagesArgs(
    images_dir=PROJECT_DIR / "images",
    build_mode=config.image_build,
    load_strategy=config.image_load_strategy,
    cluster_name=config.cluster_name,
    base_image=config.base_image,
    runtime_variant=config.image_variant,
    registry=config.image_registry,
    containerd_address=config.containerd_address,
    prebuilt_refs={"runtime": config.sandbox_image or "", "router": config.router_image or ""},
))

secure_runtime = SecureRuntime("secure-runtime", SecureRuntimeArgs(
    runtime=config.runtime,
    handler=config.runtime_handler,
    cluster_flavour=config.cluster_flavour,
    cluster_name=config.cluster_name,
    manage_runtime_class=config.manage_runtime_class,
    kata_chart_version=config.kata_chart_version,
    kata_chart_repo=config.kata_chart_repo,
), opts=in_cluster)

controller = AgentSandboxController("controller", ControllerArgs(
    manifest_objects=release_objects,
    controller_image=config.controller_image,
), opts=in_cluster)

pool = SandboxPool("sandboxes", SandboxPoolArgs(
    config=config,
    runtime_image=images.runtime_image,
    runtime_class_name=secure_runtime.runtime_class_name,
), opts=pulumi.ResourceOptions(provider=cluster, depends_on=[controller, secure_runtime, *images.load_resources]))

router = SandboxRouter("router", RouterArgs(
    image=images.router_image,
    image_pull_policy=config.image_pull_policy,
    replicas=config.router_replicas,
    resources=config.router_resources,
    auth_token=config.router_auth_token,
    sandbox_namespaces=config.router_sandbox_namespaces,
    sandbox_port=config.sandbox_port,
    allowed_pod_cidrs=config.router_allowed_pod_cidrs,
    namespace_dependencies=[pool.namespace_resource],
    api_server_endpoints=config.api_server_endpoints,
    dns_addresses=config.cluster_dns_addresses,
    node_cidrs=config.cluster_node_cidrs,
), opts=pulumi.ResourceOptions(provider=cluster, depends_on=[controller, *images.load_resources]))

pulumi.export("namespace", pool.namespace)
pulumi.export("template", pool.template_name)
pulumi.export("warmPool", pool.warm_pool_name)
pulumi.export("warmPoolReplicas", config.warm_pool_replicas)
pulumi.export("routerService", router.service_name)
pulumi.export("routerNamespace", router.namespace)
pulumi.export("routerPort", router.port)
pulumi.export("routerAuthToken", router.auth_token)
pulumi.export("runtimeImage", images.runtime_image)
pulumi.export("routerImage", images.router_image)
pulumi.export("runtimeClass", secure_runtime.runtime_class_name)
pulumi.export("kindClusterConfig", secure_runtime.kind_cluster_config)
pulumi.export("kubeContext", config.kube_context or "")
pulumi.export("clusterFlavour", config.cluster_flavour)
