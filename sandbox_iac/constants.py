"""Names shared by the program, the driver, the policy tests and the docs.

Some of them are fixed by upstream contracts: the official SDK looks for the router Service
`sandbox-router-svc` on port 8080 in `agent-sandbox-system`, and the controller's default
sandbox NetworkPolicy admits only pods labelled `app: sandbox-router` from that namespace."""

from __future__ import annotations

PROJECT_NAME = "agent-sandbox"

CONTROLLER_NAMESPACE = "agent-sandbox-system"
CONTROLLER_DEPLOYMENT = "agent-sandbox-controller"
WEBHOOK_SERVICE = "agent-sandbox-webhook-service"
EXTENSIONS_FLAG = "--extensions"

ROUTER_NAMESPACE = CONTROLLER_NAMESPACE
ROUTER_SERVICE_NAME = "sandbox-router-svc"
ROUTER_DEPLOYMENT_NAME = "sandbox-router-deployment"
ROUTER_SECRET_NAME = "sandbox-router-auth"
ROUTER_POD_LABELS = {"app": "sandbox-router"}
ROUTER_PORT = 8080
ROUTER_TOKEN_ENV = "ROUTER_AUTH_TOKEN"
ROUTER_TOKEN_SECRET_KEY = "token"

SANDBOX_PORT = 8888
SANDBOX_BASE_DIR = "/app"
SANDBOX_USER_ID = 1000

# Label on the per-template pods the controller creates; our NetworkPolicy selects on it.
TEMPLATE_REF_HASH_LABEL = "agents.x-k8s.io/sandbox-template-ref-hash"

# Addresses a sandbox must never reach: cluster/private ranges, link-local (cloud metadata),
# carrier-grade NAT and loopback.
EGRESS_DENIED_IPV4 = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
)
EGRESS_DENIED_IPV6 = ("fc00::/7", "fe80::/10", "::1/128")
METADATA_ADDRESS = "169.254.169.254"

RUNTIME_CLASS_HANDLERS = {"gvisor": "runsc", "kata-qemu": "kata-qemu", "runc": "runc"}

# Where `kind` and minikube mount gVisor's binaries inside the node container / VM.
RUNSC_NODE_PATH = "/usr/local/bin/runsc"
RUNSC_SHIM_NODE_PATH = "/usr/local/bin/containerd-shim-runsc-v1"

MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "agent-sandbox-iac"}
