# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Pinned versions of everything the KIND node image and the offline toolchain are built from.
# Sourced by e2e/toolchain/cluster.sh and automation/node_image.py; one place to bump a version.
KUBERNETES_VERSION=${KUBERNETES_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
# cache key of our CoreDNS build: the version plus the plugin set of cluster/coredns/main.go
COREDNS_BUILD=${COREDNS_VERSION}-kubeadm
# gVisor "go" branch commit 96dad6a2da94 (2026-05-08): its shim still uses the containerd v1.6.36
# libraries, whose plain-address start reply Debian's containerd 1.6 understands. The later pin
# 2a56b9b52bc3 and 031492ed34ed are refused by the module proxy (403).
GVISOR_VERSION=${GVISOR_VERSION:-v0.0.0-20260508212337-96dad6a2da94}
# cache key of our gVisor build: the version plus the patch level of cluster/patch_gvisor.py
GVISOR_BUILD=${GVISOR_VERSION}-p4
AGENT_SANDBOX_VERSION=${AGENT_SANDBOX_VERSION:-v0.5.6}
# NetworkPolicy agent: kube-router's firewall controller (iptables + ipset). kube-network-policies
# needs the nftables "queue" expression (CONFIG_NFT_QUEUE), which this kernel lacks.
KUBE_ROUTER_VERSION=${KUBE_ROUTER_VERSION:-v2.1.0}
# Our own pause program; the image carries the tag containerd's sandbox_image names.
PAUSE_VERSION=${PAUSE_VERSION:-3.10}
PAUSE_IMAGE=${PAUSE_IMAGE:-registry.k8s.io/pause:${PAUSE_VERSION}}
CONTROLLER_IMAGE=${CONTROLLER_IMAGE:-localhost/agent-sandbox-controller:${AGENT_SANDBOX_VERSION}}
BUSYBOX_IMAGE=${BUSYBOX_IMAGE:-localhost/e2e-busybox:1.35}
# KIND and the parts of its node image, built from Go modules (the versions kind v0.30.0's own base
# image pins, images/base/Dockerfile in its module): kind v0.30.0 is the release for Kubernetes 1.34.
KIND_VERSION=${KIND_VERSION:-v0.30.0}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.1.4}
RUNC_VERSION=${RUNC_VERSION:-v1.3.0}
CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.7.1}
# KWOK (fake nodes and pods) for the simulated-scale bench only (bench/scale_sim.py); not in the
# node image and not built by default.
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
# KEDA (operator + external metrics API server) for `warmPoolAutoscaling: keda`: built on request
# (`cluster.sh keda`), made into images and installed by the stack only when that option is on.
KEDA_VERSION=${KEDA_VERSION:-v2.21.0}
# The local images `cluster.sh keda` makes (loaded onto KIND nodes when the release's cannot be pulled).
KEDA_OPERATOR_IMAGE=${KEDA_OPERATOR_IMAGE:-localhost/keda:${KEDA_VERSION}}
KEDA_METRICS_IMAGE=${KEDA_METRICS_IMAGE:-localhost/keda-metrics-apiserver:${KEDA_VERSION}}
