# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared settings and helpers for e2e/cluster/{preflight,up,down}.sh. Sourced, not executed.
# The cluster uses only this machine's own addresses: loopback, a veth pair that carries the
# node address, and the pod bridge. Pods get no default route, so nothing leaves the machine.

E2E_CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_CLUSTER_DIR/../.." && pwd)
# shellcheck source=../toolchain/cluster-versions.sh
. "$REPO_ROOT/e2e/toolchain/cluster-versions.sh"

CACHE_DIR=${CACHE_DIR:-/var/cache/agent-sandbox-iac}
STATE_DIR=${E2E_CLUSTER_STATE_DIR:-/var/lib/agent-sandbox-e2e}   # etcd, containerd, kubelet, PKI
RUN_DIR=${E2E_CLUSTER_RUN_DIR:-/run/agent-sandbox-e2e}          # sockets, PID files
LOG_DIR=${E2E_CLUSTER_LOG_DIR:-/var/log/agent-sandbox-e2e}      # one log per component
PKI_DIR=$STATE_DIR/pki
KUBECONFIG_PATH=$STATE_DIR/admin.kubeconfig
CONTAINERD_SOCK=$RUN_DIR/containerd/containerd.sock
CNI_CONF_DIR=$STATE_DIR/cni/net.d
CNI_BIN_DIR=/usr/lib/cni

NODE_NAME=e2e-node
NODE_IP=10.200.0.1              # on the veth below; outside the pod and Service ranges
NODE_VETH=e2e-node0
NODE_VETH_PEER=e2e-node1
POD_CIDR=10.244.0.0/16          # the cluster's pod range
NODE_POD_CIDR=10.244.0.0/24     # this node's slice (what the controller-manager allocates first)
POD_GATEWAY=10.244.0.1
POD_BRIDGE=e2e-cni0
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
CLUSTER_DNS_IP=$NODE_IP         # CoreDNS runs on the host, bound to the node address
CLUSTER_DOMAIN=cluster.local
API_PORT=6443
ETCD_CLIENT_PORT=2379
ETCD_PEER_PORT=2380
IPTABLES_GUARD_CHAIN=E2E-CLUSTER-GUARD

# Binaries, straight from the versioned cache (never from PATH, so the versions are the pinned ones).
K8S_BIN=$CACHE_DIR/kubernetes/$KUBERNETES_VERSION/bin
ETCD_BIN=$CACHE_DIR/etcd/$ETCD_VERSION/bin/etcd
GVISOR_BIN=$CACHE_DIR/gvisor/$GVISOR_VERSION/bin
COREDNS_BIN=$CACHE_DIR/coredns/$COREDNS_BUILD/bin/coredns
KUBE_ROUTER_BIN=$CACHE_DIR/kube-router/$KUBE_ROUTER_VERSION/bin/kube-router
IMAGES_DIR=$CACHE_DIR/images/$AGENT_SANDBOX_VERSION/bin
KUBECTL=$K8S_BIN/kubectl

# Test sessions that use the cluster register a hold (E2E_CLUSTER_HOLDER=<name>,
# E2E_CLUSTER_HOLDER_PID=<their pid>); cluster-down from a holder leaves the cluster up while
# another live holder remains. Kept outside RUN_DIR, which cluster-down removes.
HOLDS_DIR=${E2E_CLUSTER_HOLDS_DIR:-/run/agent-sandbox-e2e-holds}
LOCK_FILE=${E2E_CLUSTER_LOCK_FILE:-/run/agent-sandbox-e2e.lock}

# Components in start order; cluster-down stops them in reverse.
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns kube-router)

say() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[cluster %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

pid_file() { echo "$RUN_DIR/pids/$1.pid"; }

# running NAME: the recorded PID of NAME is alive and is still the process we started.
running() {
  local file; file=$(pid_file "$1")
  [[ -f $file ]] || return 1
  local pid; pid=$(cat "$file")
  [[ -n $pid && -d /proc/$pid ]] || return 1
  # An exited process that its parent has not reaped yet (a zombie) no longer runs.
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
  # The PID file also records the start time, so a recycled PID is never mistaken for ours.
  local started; started=$(cat "$file.start" 2>/dev/null || true)
  [[ -z $started || $(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null) == "$started" ]]
}

# wait_for DESCRIPTION TIMEOUT_SECONDS COMPONENT CMD...: poll CMD until it succeeds; fail with the
# component's log tail (and the log directory) if it does not within the timeout.
wait_for() {
  local what=$1 timeout=$2 component=$3; shift 3
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $component ]] && ! running "$component"; then
      tail -n 30 "$LOG_DIR/$component.log" >&2 || true
      die "$component exited while waiting for $what; logs of every component: $LOG_DIR"
    fi
    if (( $(date +%s) > deadline )); then
      [[ -z $component ]] || tail -n 30 "$LOG_DIR/$component.log" >&2 || true
      die "timed out after ${timeout}s waiting for $what; logs of every component: $LOG_DIR"
    fi
    sleep 1
  done
}

# lock_cluster: serialise cluster-up/cluster-down (several shells or test sessions may call them).
lock_cluster() {
  exec 8>"$LOCK_FILE"
  if ! flock -n 8; then
    say "another cluster-up/cluster-down is running; waiting for it"
    flock -w 900 8 || die "waited 15 min for $LOCK_FILE; is a cluster-up hanging?"
  fi
}

# live_holders: names of registered holders whose process still runs (stale holds are removed).
live_holders() {
  local hold pid
  for hold in "$HOLDS_DIR"/*; do
    [[ -f $hold ]] || continue
    pid=$(cat "$hold")
    if [[ -n $pid && -d /proc/$pid ]]; then basename "$hold"; else rm -f "$hold"; fi
  done
}
