#!/usr/bin/env bash
# Check, before anything starts, that this machine can run the e2e cluster. Every missing kernel
# feature, package, tool or toolchain artefact is reported with what to do; exit 1 if any is missing.
# Usage: e2e/cluster/preflight.sh [--packages-only|--no-network-probes]
set -uo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PROBLEMS=()
problem() { PROBLEMS+=("$*"); printf '  MISSING: %s\n' "$*"; }
ok() { printf '  ok: %s\n' "$*"; }

check_root() {
  [[ $(id -u) -eq 0 ]] && ok "running as root" || problem "must run as root (containerd, kubelet, iptables need it)"
}

check_commands() {
  local cmd package
  while read -r cmd package; do
    if command -v "$cmd" >/dev/null 2>&1 || [[ -x $cmd ]]; then ok "$cmd"
    else problem "command '$cmd' (apt-get install $package)"; fi
  done <<EOF2
containerd containerd
ctr containerd
containerd-shim-runc-v2 containerd
runc runc
$CNI_BIN_DIR/bridge containernetworking-plugins
$CNI_BIN_DIR/host-local containernetworking-plugins
$CNI_BIN_DIR/loopback containernetworking-plugins
$CNI_BIN_DIR/portmap containernetworking-plugins
iptables iptables
iptables-save iptables
iptables-restore iptables
ipset ipset
conntrack conntrack
openssl openssl
socat socat
ip iproute2
nsenter util-linux
flock util-linux
curl curl
busybox busybox-static
EOF2
}

check_kernel() {
  local controller
  for controller in cpu cpuacct cpuset memory pids devices freezer; do
    if [[ -d /sys/fs/cgroup/$controller ]] || grep -qw "$controller" /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
      ok "cgroup controller $controller"
    else problem "cgroup controller '$controller' not mounted (kernel CONFIG for it, or mount the hierarchy)"; fi
  done
  grep -qw overlay /proc/filesystems && ok "overlayfs" || problem "overlayfs (CONFIG_OVERLAY_FS): containerd's snapshotter needs it"
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && ok "br_netfilter" ||
    problem "br_netfilter (CONFIG_BRIDGE_NETFILTER, or 'modprobe br_netfilter'): Service and NetworkPolicy rules for bridged pod traffic"
  grep -q '^Seccomp:' /proc/self/status && ok "seccomp" || problem "seccomp (CONFIG_SECCOMP_FILTER): gVisor's systrap platform needs it"
  [[ -c /dev/kmsg ]] && ok "/dev/kmsg" || problem "/dev/kmsg (kubelet's OOM watcher reads it)"
  [[ -e /proc/self/ns/user && -e /proc/self/ns/net && -e /proc/self/ns/pid ]] && ok "namespaces" ||
    problem "user/net/pid namespaces (CONFIG_USER_NS, CONFIG_NET_NS, CONFIG_PID_NS)"
}

# Probes create and delete throw-away objects; they show what /proc/config.gz would, on any kernel.
check_network_probes() {
  [[ $(id -u) -eq 0 ]] || return 0
  if ip link add e2e-pf0 type veth peer name e2e-pf1 2>/dev/null; then ip link del e2e-pf0; ok "veth"
  else problem "veth pairs (CONFIG_VETH): the node address and every pod use them"; fi
  if ip link add e2e-pfbr type bridge 2>/dev/null; then ip link del e2e-pfbr; ok "bridge"
  else problem "bridge interfaces (CONFIG_BRIDGE): the pod network is a bridge"; fi
  local chain=E2E-PREFLIGHT
  iptables -w -N $chain 2>/dev/null || iptables -w -F $chain 2>/dev/null
  local rule name
  while read -r name rule; do
    # shellcheck disable=SC2086
    if iptables -w -A $chain $rule -j RETURN 2>/dev/null; then ok "iptables $name"
    else problem "iptables $name (kernel NETFILTER_XT_* for: $rule)"; fi
  done <<'EOF2'
comment -m comment --comment preflight
conntrack -m conntrack --ctstate ESTABLISHED
statistic -m statistic --mode random --probability 0.5
mark -m mark --mark 0x4000/0x4000
addrtype -m addrtype --dst-type LOCAL
multiport -p tcp -m multiport --dports 80,443
physdev -m physdev --physdev-is-bridged
EOF2
  iptables -w -F $chain 2>/dev/null; iptables -w -X $chain 2>/dev/null
  if iptables -w -t nat -N $chain 2>/dev/null && iptables -w -t nat -A $chain -p tcp -j DNAT --to-destination 127.0.0.1:1 2>/dev/null &&
     iptables -w -t nat -A $chain -j MASQUERADE 2>/dev/null; then ok "iptables nat (DNAT, MASQUERADE)"
  else problem "iptables nat table with DNAT and MASQUERADE (CONFIG_NF_NAT, NETFILTER_XT_TARGET_MASQUERADE)"; fi
  iptables -w -t nat -F $chain 2>/dev/null; iptables -w -t nat -X $chain 2>/dev/null
  if ipset create e2e-preflight hash:ip 2>/dev/null; then ipset destroy e2e-preflight; ok "ipset hash:ip"
  else problem "ipset (CONFIG_IP_SET, IP_SET_HASH_IP): the NetworkPolicy agent keeps pod sets in it"; fi
}

check_artefacts() {
  local file
  for file in "$K8S_BIN"/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl} \
      "$ETCD_BIN" "$GVISOR_BIN/runsc" "$GVISOR_BIN/containerd-shim-runsc-v1" "$COREDNS_BIN" "$KUBE_ROUTER_BIN" \
      "$IMAGES_DIR/pause.tar" "$IMAGES_DIR/agent-sandbox-controller.tar" "$IMAGES_DIR/busybox.tar"; do
    [[ -e $file ]] && ok "${file#"$CACHE_DIR"/}" || problem "toolchain artefact $file (run: make toolchain-cluster)"
  done
}

check_ports() {
  command -v ss >/dev/null || return 0
  local port
  for port in $ETCD_CLIENT_PORT $ETCD_PEER_PORT $API_PORT 10250 10256 10257 10259; do
    if ss -Hltn "sport = :$port" | grep -q .; then
      problem "TCP port $port is already in use ($(ss -Hltnp "sport = :$port" | awk '{print $NF}' | head -n1)); is another cluster running? (make cluster-down)"
    fi
  done
}

main() {
  local mode=${1:-all}
  say "preflight"
  check_root
  check_commands
  if [[ $mode != --packages-only ]]; then
    check_kernel
    [[ $mode == --no-network-probes ]] || check_network_probes
    check_artefacts
    check_ports
  fi
  if (( ${#PROBLEMS[@]} )); then
    printf '[cluster] preflight failed, %d problem(s):\n' "${#PROBLEMS[@]}" >&2
    printf '  - %s\n' "${PROBLEMS[@]}" >&2
    exit 1
  fi
  say "preflight passed"
}

main "$@"
