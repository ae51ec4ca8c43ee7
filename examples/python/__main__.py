"""An example consumer of the agent_sandbox_pulumi package: a Pulumi program of your own that adds
Agent Sandbox to a cluster you already manage. Everything but the images has a default; this
program sets a few knobs to show where they go (the README's configuration table lists them all,
as camelCase inputs)."""

import pulumi
import pulumi_kubernetes as k8s

from agent_sandbox_pulumi.components.agent_sandbox import AgentSandbox

config = pulumi.Config()
cluster = k8s.Provider("cluster", context=config.get("kubeContext") or None)

sandbox = AgentSandbox("agent-sandbox", {
    "runtime_image": config.require("runtimeImage"),
    "router_image": config.require("routerImage"),
    "image_pull_policy": config.get("imagePullPolicy") or "IfNotPresent",
    # unset or "": the release's own controller image
    "controller_image": config.get("controllerImage") or "",
    "sandbox_namespace": "example-python",
    "warm_pool_replicas": 1,
    "router_replicas": 1,
    # Sandboxes may reach one public range on 443 only (plus cluster DNS).
    "sandbox_egress": "allowList",
    "sandbox_egress_allow": [{"cidr": "151.101.0.0/16", "ports": ["443"]}],
}, opts=pulumi.ResourceOptions(provider=cluster))

pulumi.export("namespace", sandbox.namespace)
pulumi.export("warmPool", sandbox.warm_pool_name)
pulumi.export("warmPoolReplicas", sandbox.warm_pool_replicas)
pulumi.export("sandboxPort", sandbox.sandbox_port)
pulumi.export("routerNamespace", sandbox.router_namespace)
pulumi.export("routerService", sandbox.router_service_name)
pulumi.export("routerPort", sandbox.router_port)
pulumi.export("routerAuthToken", sandbox.router_auth_token)
pulumi.export("kubeContext", config.get("kubeContext") or "")
