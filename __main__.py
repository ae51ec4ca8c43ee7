"""Agent Sandbox on Kubernetes: this project's Pulumi program, one consumer of the
``agent_sandbox_pulumi`` package. It reads the stack config once (validated), builds or adopts
the images, and hands every knob to ``AgentSandbox`` by name."""

from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from agent_sandbox_pulumi.components.agent_sandbox import AgentSandbox
from agent_sandbox_pulumi.components.images import SandboxImages
from agent_sandbox_pulumi.sandbox_iac import manifests
from agent_sandbox_pulumi.sandbox_iac.kind_config import kind_cluster_config
from agent_sandbox_pulumi.sandbox_iac.pulumi_config import read_router_token, read_stack_config

PROJECT_DIR = Path(__file__).resolve().parent

config = read_stack_config()
# Config paths are relative to the project; read (and verify) the manifest before anything is
# declared, so a bad source stops the run before an image build starts.
controller_manifest = manifests.resolve_source(config.controller_manifest, PROJECT_DIR)
manifests.load_release(controller_manifest)

cluster = k8s.Provider("cluster", context=config.kube_context, kubeconfig=config.kubeconfig)

# Unset optional inputs are passed as None, which the components read as "not given".
images = SandboxImages("images", {
    "build_mode": config.image_build,
    "load_strategy": config.image_load_strategy,
    "images_dir": str(PROJECT_DIR / "images"),
    "cluster_name": config.cluster_name,
    "base_image": config.base_image,
    "runtime_variant": config.image_variant,
    "router_implementation": config.router_implementation,
    "registry": config.image_registry,
    "containerd_address": config.containerd_address,
    "prebuilt_runtime": config.sandbox_image,
    "prebuilt_router": config.router_image,
})

# The sizing inputs of the chosen mode only: the component refuses the other mode's.
pool_size = {"warm_pool_replicas": config.warm_pool_replicas} if config.autoscaling is None else {
    "warm_pool_min_replicas": config.warm_pool_min_replicas,
    "warm_pool_max_replicas": config.warm_pool_max_replicas,
    "warm_pool_in_use_per_warm": config.warm_pool_in_use_per_warm,
    "warm_pool_scale_down_seconds": config.warm_pool_scale_down_seconds,
}

sandbox = AgentSandbox("agent-sandbox", {
    # The image refs carry the loads onto the nodes: pods that use them wait for them.
    "runtime_image": images.runtime_image,
    "router_image": images.router_image,
    "image_pull_policy": config.image_pull_policy,
    "runtime": config.runtime,
    "allow_insecure_runc": config.runtime == "runc",
    "manage_runtime_class": config.manage_runtime_class,
    "kata_node_name": config.cluster_name,
    "kata_chart_version": config.kata_chart_version,
    "kata_chart_repo": config.kata_chart_repo,
    "controller_manifest": controller_manifest,
    "controller_image": config.controller_image,
    "controller_profile": config.controller_profile,
    "controller_flags": dict(config.controller_flags),
    "serve_legacy_api_versions": config.serve_legacy_api_versions,
    "sandbox_namespace": config.sandbox_namespace,
    "template_name": config.template_name,
    "sandbox_port": config.sandbox_port,
    "sandbox_resources": config.sandbox_resources.as_dict(),
    "sandbox_node_selector": dict(config.sandbox_node_selector),
    "sandbox_tolerations": [dict(t) for t in config.sandbox_tolerations],
    "warm_pool_name": config.warm_pool_name,
    "warm_pool_autoscaling": config.warm_pool_autoscaling,
    **pool_size,
    "install_keda": config.install_keda,
    "keda_operator_image": config.keda_operator_image,
    "keda_metrics_image": config.keda_metrics_image,
    "router_replicas": config.router_replicas,
    "router_resources": config.router_resources.as_dict(),
    "router_auth_token": read_router_token(),  # a secret Output, or None: generated once and kept
    "router_allowed_pod_cidrs": list(config.router_allowed_pod_cidrs),
    "router_sandbox_namespaces": list(config.router_sandbox_namespaces),
    "api_server_endpoints": [endpoint.as_input() for endpoint in config.api_server_endpoints],
    "sandbox_egress": config.sandbox_egress,
    "sandbox_egress_allow": [{"cidr": rule.cidr, "protocol": rule.ports[0].protocol,
                              "ports": [p.as_text() for p in rule.ports]} for rule in config.sandbox_egress_allow],
    "cluster_pod_cidrs": list(config.cluster_pod_cidrs),
    "cluster_service_cidrs": list(config.cluster_service_cidrs),
    "cluster_node_cidrs": list(config.cluster_node_cidrs),
    "cluster_dns_addresses": list(config.cluster_dns_addresses),
}, opts=pulumi.ResourceOptions(provider=cluster))

is_kind_gvisor = config.cluster_flavour == "kind" and config.runtime == "gvisor"

pulumi.export("namespace", sandbox.namespace)
pulumi.export("template", sandbox.template_name)
pulumi.export("warmPool", sandbox.warm_pool_name)
pulumi.export("warmPoolReplicas", sandbox.warm_pool_replicas)
pulumi.export("warmPoolAutoscaling", sandbox.warm_pool_autoscaling)
pulumi.export("sandboxPort", sandbox.sandbox_port)
pulumi.export("routerService", sandbox.router_service_name)
pulumi.export("routerNamespace", sandbox.router_namespace)
pulumi.export("routerPort", sandbox.router_port)
pulumi.export("routerAuthToken", sandbox.router_auth_token)
pulumi.export("runtimeImage", images.runtime_image)
pulumi.export("routerImage", images.router_image)
pulumi.export("runtimeClass", sandbox.runtime_class_name)
# What `make up` gives `kind create cluster --config` (gVisor's runsc handler on every node).
pulumi.export("kindClusterConfig", kind_cluster_config(config.cluster_name) if is_kind_gvisor else "")
pulumi.export("kubeContext", config.kube_context or "")
pulumi.export("clusterFlavour", config.cluster_flavour)
# `docker` (built by pulumi-docker) or `prebuilt` (refs given; `make up` says so when it chose it
# because the pulumi-docker plugin cannot be had)
pulumi.export("imageBuild", config.image_build)
