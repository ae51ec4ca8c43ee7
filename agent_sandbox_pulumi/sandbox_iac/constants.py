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

# Destinations a sandbox never reaches, in any egress mode (the cluster's own pod, Service and
# node ranges come from the stack config on top). Everything here is not public unicast: a
# sandbox has no business there, and several are ways back into the cluster or the node
# (metadata, NAT64/6to4 forms of private addresses, ULA pod ranges of dual-stack clusters).
EGRESS_DENIED_IPV4: dict[str, str] = {
    "0.0.0.0/8": "'this network'",
    "10.0.0.0/8": "private",
    "100.64.0.0/10": "carrier-grade NAT",
    "127.0.0.0/8": "loopback",
    "169.254.0.0/16": "link-local, cloud metadata",
    "172.16.0.0/12": "private",
    "192.0.0.0/24": "IETF protocol assignments",
    "192.0.2.0/24": "documentation",
    "192.88.99.0/24": "6to4 relay anycast",
    "192.168.0.0/16": "private",
    "198.18.0.0/15": "benchmarking",
    "198.51.100.0/24": "documentation",
    "203.0.113.0/24": "documentation",
    "224.0.0.0/4": "multicast",
    "240.0.0.0/4": "reserved, broadcast",
}
# Not listed: ::ffff:0:0/96 (IPv4-mapped). The API server parses such a prefix as IPv4 (Go's
# net.ParseCIDR), so it is refused inside an IPv6 ipBlock ("must be a strict subset of cidr") and the
# controller could not create the template's policy at all; on the wire a mapped address is IPv4,
# which the IPv4 rules govern.
EGRESS_DENIED_IPV6: dict[str, str] = {
    "::/128": "unspecified",
    "::1/128": "loopback",
    "64:ff9b::/96": "NAT64 well-known prefix",
    "64:ff9b:1::/48": "NAT64 local-use prefix",
    "100::/64": "discard-only",
    "2001::/23": "IETF protocol assignments, Teredo",
    "2001:db8::/32": "documentation",
    "2002::/16": "6to4 (embeds IPv4 addresses such as the metadata address)",
    "3fff::/20": "documentation",
    "5f00::/16": "SRv6 SIDs",
    "fc00::/7": "unique local (ULA pod/Service ranges, GCP metadata fd20:ce::254)",
    "fe80::/10": "link-local",
    "fec0::/10": "site-local (deprecated)",
    "ff00::/8": "multicast",
}
METADATA_ADDRESS = "169.254.169.254"

RUNTIME_CLASS_HANDLERS = {"gvisor": "runsc", "kata-qemu": "kata-qemu", "runc": "runc"}

# Where `kind` and minikube mount gVisor's binaries inside the node container / VM.
RUNSC_NODE_PATH = "/usr/local/bin/runsc"
RUNSC_SHIM_NODE_PATH = "/usr/local/bin/containerd-shim-runsc-v1"

MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "agent-sandbox-iac"}

# Cluster DNS as kubeadm, KIND and minikube deploy it (CoreDNS keeps the kube-dns labels).
KUBE_DNS_NAMESPACE = "kube-system"
KUBE_DNS_POD_LABELS = {"k8s-app": "kube-dns"}
DNS_PORT = 53
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# The router's identity for its watch of sandbox pods, and its NetworkPolicy.
ROUTER_SERVICE_ACCOUNT = "sandbox-router"
ROUTER_POD_READER_ROLE = "sandbox-router-pods"
ROUTER_NETWORK_POLICY = "sandbox-router"
# The contract of the router's sandbox-only resolver (images/router/sandbox_router/settings.py).
ROUTER_RESOLVER_ENV = "ROUTER_RESOLVER"
ROUTER_RESOLVER_WATCH = "watch"
ROUTER_ALLOWED_POD_CIDRS_ENV = "ROUTER_ALLOWED_POD_CIDRS"
# Where the API server publishes its own addresses (kept by kube-apiserver itself).
API_SERVER_ENDPOINT_SLICE = "default/kubernetes"

# KIND's networking defaults: our KIND cluster config (kind_config.py) leaves `networking`
# unset, so these are the podSubnet/serviceSubnet of the cluster `make up` creates.
KIND_DEFAULT_POD_SUBNET = "10.244.0.0/16"
KIND_DEFAULT_SERVICE_SUBNET = "10.96.0.0/16"
# minikube (kubeadm bootstrapper): pod network 10.244.0.0/16, --service-cluster-ip-range 10.96.0.0/12.
KUBEADM_DEFAULT_POD_SUBNET = "10.244.0.0/16"
KUBEADM_DEFAULT_SERVICE_SUBNET = "10.96.0.0/12"
