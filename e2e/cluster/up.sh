#!/usr/bin/env bash
# Start the single-node e2e cluster from host processes: containerd (runc + runsc), etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, CoreDNS and the
# kube-router NetworkPolicy firewall. Idempotent: if it is already up, it only prints the kubeconfig.
# The last line printed is KUBECONFIG=<path>.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

START=$(date +%s)
trap 'say "cluster-up failed; logs of every component: $LOG_DIR (make cluster-down cleans up)" >&2' ERR

PACKAGES=(containerd runc containernetworking-plugins iptables ipset conntrack openssl socat iproute2 busybox-static curl)

ensure_packages() {
  local missing=() package
  for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  (( ${#missing[@]} )) || return 0
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null ||
    { apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null &&
      apt-get install -y -q -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null; } ||
    die "apt-get install ${missing[*]} failed"
}

# start NAME CMD...: run CMD in its own session with its output in $LOG_DIR/NAME.log and its PID
# (plus start time, to recognise PID reuse) recorded for cluster-down.
start() {
  local name=$1; shift
  say "starting $name"
  # No proxy variables: every address the components dial is on this machine. fd 8 (the
  # cluster lock) is closed so long-running components do not keep holding it.
  setsid env -u HTTP_PROXY -u HTTPS_PROXY -u http_proxy -u https_proxy -u NO_PROXY -u no_proxy \
    PATH="$GVISOR_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 8>&- &
  local pid=$!
  echo "$pid" >"$(pid_file "$name")"
  awk '{print $22}' "/proc/$pid/stat" >"$(pid_file "$name").start" 2>/dev/null || true
}

setup_network() {
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  if ! ip link show "$NODE_VETH" >/dev/null 2>&1; then
    # The node address lives on a veth pair: this kernel has no dummy interfaces, and a veth
    # whose peer is up has carrier, so the address is reachable before the first pod exists.
    ip link add "$NODE_VETH" type veth peer name "$NODE_VETH_PEER"
  fi
  ip addr replace "$NODE_IP/32" dev "$NODE_VETH"
  ip link set "$NODE_VETH_PEER" up
  ip link set "$NODE_VETH" up
  # Guard: forwarded traffic from pods may only go to pods. Pods have no default route either;
  # this keeps test traffic on the machine even if a pod adds one.
  iptables -w -N "$IPTABLES_GUARD_CHAIN" 2>/dev/null || iptables -w -F "$IPTABLES_GUARD_CHAIN"
  iptables -w -A "$IPTABLES_GUARD_CHAIN" -s "$POD_CIDR" -d "$POD_CIDR" -j ACCEPT
  iptables -w -A "$IPTABLES_GUARD_CHAIN" -s "$POD_CIDR" -j DROP
  iptables -w -A "$IPTABLES_GUARD_CHAIN" -d "$POD_CIDR" -j ACCEPT
  iptables -w -C FORWARD -j "$IPTABLES_GUARD_CHAIN" 2>/dev/null || iptables -w -A FORWARD -j "$IPTABLES_GUARD_CHAIN"
}

write_configs() {
  mkdir -p "$STATE_DIR/containerd" "$RUN_DIR/containerd" "$CNI_CONF_DIR" "$LOG_DIR/runsc" "$STATE_DIR/kubelet"
  cat >"$STATE_DIR/containerd/config.toml" <<EOF2
version = 2
root = "$STATE_DIR/containerd/root"
state = "$RUN_DIR/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  # This machine's root lacks CAP_SYS_RESOURCE: a negative oom_score_adj (pause -998, Guaranteed
  # pods) cannot be set, and runc treats that as fatal. Clamp to containerd's own score instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
      runtime_type = "io.containerd.runsc.v1"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
        TypeUrl = "io.containerd.runsc.v1.options"
        ConfigPath = "$STATE_DIR/containerd/runsc.toml"
EOF2
  cat >"$STATE_DIR/containerd/runsc.toml" <<EOF2
binary_name = "$GVISOR_BIN/runsc"
root = "$RUN_DIR/runsc"
log_path = "$LOG_DIR/runsc/%ID%/shim.log"
log_level = "info"
[runsc_config]
  platform = "${GVISOR_PLATFORM:-systrap}"
  debug-log = "$LOG_DIR/runsc/%ID%/gvisor.%COMMAND%.log"
EOF2
  # Pods get routes to pods, Services and the node address only: no default route off the machine.
  cat >"$CNI_CONF_DIR/10-e2e.conflist" <<EOF2
{
  "cniVersion": "1.0.0",
  "name": "e2e",
  "plugins": [
    {
      "type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "$POD_CIDR"}, {"dst": "$SERVICE_CIDR"}, {"dst": "$NODE_IP/32"}],
        "dataDir": "$STATE_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF2
  : >"$STATE_DIR/kubelet/resolv.conf"
  cat >"$STATE_DIR/kubelet/config.yaml" <<EOF2
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $STATE_DIR/kubelet/resolv.conf
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
runtimeRequestTimeout: 10m
serializeImagePulls: false
rotateCertificates: false
registerNode: true
maxPods: 60
EOF2
  cat >"$STATE_DIR/kube-proxy.yaml" <<EOF2
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF2
  cat >"$STATE_DIR/Corefile" <<EOF2
.:53 {
    bind $CLUSTER_DNS_IP
    errors
    ready 127.0.0.1:18181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $STATE_DIR/coredns.kubeconfig coredns
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
EOF2
}

start_containerd() {
  start containerd /usr/bin/containerd --config "$STATE_DIR/containerd/config.toml"
  wait_for "containerd socket" 60 containerd ctr --address "$CONTAINERD_SOCK" version
  local archive
  for archive in "$IMAGES_DIR"/*.tar; do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$archive" >>"$LOG_DIR/images.log" 2>&1 ||
      die "importing $archive into containerd failed; see $LOG_DIR/images.log"
  done
  say "imported images: $(ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -v '^sha256:' | tr '\n' ' ')"
}

start_control_plane() {
  start etcd "$ETCD_BIN" --name e2e --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --unsafe-no-fsync --log-level warn
  wait_for "etcd health" 60 etcd curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port="$API_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement \
    --allow-privileged=true \
    --client-ca-file="$PKI_DIR/ca.crt" \
    --tls-cert-file="$PKI_DIR/kube-apiserver.crt" --tls-private-key-file="$PKI_DIR/kube-apiserver.key" \
    --kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="$PKI_DIR/sa.pub" --service-account-signing-key-file="$PKI_DIR/sa.key" \
    --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --enable-aggregator-routing=true \
    --profiling=false
  # Webhooks and CRD conversion are dialled at endpoint (pod) IPs: --enable-aggregator-routing.
  wait_for "kube-apiserver /readyz" 120 kube-apiserver \
    curl -fsS --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" \
    "https://$NODE_IP:$API_PORT/readyz"
  bootstrap_objects

  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI_DIR/ca.crt" --cluster-signing-key-file="$PKI_DIR/ca.key" \
    --root-ca-file="$PKI_DIR/ca.crt" --service-account-private-key-file="$PKI_DIR/sa.key" \
    --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="$SERVICE_CIDR"
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false
}

# Objects the host components need before they start: RBAC for our host clients and the kubelet
# API, and the gvisor RuntimeClass.
bootstrap_objects() {
  kc apply -f - >>"$LOG_DIR/bootstrap.log" 2>&1 <<EOF2 || die "bootstrap objects failed; see $LOG_DIR/bootstrap.log"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-apiserver-kubelet-client}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e:coredns}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e:coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e:coredns}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: e2e:coredns}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e:kube-router}
rules:
- apiGroups: [""]
  resources: [pods, namespaces, nodes, services, endpoints]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e:kube-router}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e:kube-router}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: e2e:kube-router}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e:kube-proxy}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:node-proxier}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: system:kube-proxy}]
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: gvisor}
handler: runsc
EOF2
}

start_node() {
  start kubelet "$K8S_BIN/kubelet" --config="$STATE_DIR/kubelet/config.yaml" \
    --kubeconfig="$STATE_DIR/kubelet.kubeconfig" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --root-dir="$STATE_DIR/kubelet/root" --cert-dir="$STATE_DIR/kubelet/pki"
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$STATE_DIR/kube-proxy.yaml"
  start coredns "$COREDNS_BIN" -conf "$STATE_DIR/Corefile"
  wait_for "node $NODE_NAME Ready" 180 kubelet \
    bash -c "'$KUBECTL' --kubeconfig '$KUBECONFIG_PATH' get node '$NODE_NAME' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  # After the node exists (kube-router looks it up at start). Firewall only: kube-proxy does Services and the bridge CNI does routing.
  start kube-router "$KUBE_ROUTER_BIN" --kubeconfig="$STATE_DIR/kube-router.kubeconfig" \
    --hostname-override="$NODE_NAME" --run-firewall=true --run-router=false --run-service-proxy=false \
    --enable-cni=false --enable-ipv6=false --health-port=0 --metrics-port=0 \
    --service-cluster-ip-range="$SERVICE_CIDR"
  wait_for "kube-router's NetworkPolicy chains" 60 kube-router iptables -w -n -L KUBE-ROUTER-FORWARD
  wait_for "CoreDNS answering for kubernetes.default.svc.$CLUSTER_DOMAIN" 60 coredns \
    busybox nslookup "kubernetes.default.svc.$CLUSTER_DOMAIN" "$CLUSTER_DNS_IP"
  wait_for "the default ServiceAccount" 60 kube-controller-manager kc get serviceaccount default -n default
}

register_hold() {
  [[ -n ${E2E_CLUSTER_HOLDER:-} ]] || return 0
  mkdir -p "$HOLDS_DIR"
  echo "${E2E_CLUSTER_HOLDER_PID:-$PPID}" >"$HOLDS_DIR/$E2E_CLUSTER_HOLDER"
}

main() {
  lock_cluster
  register_hold
  if running kube-apiserver && running kubelet && [[ -f $KUBECONFIG_PATH ]]; then
    say "cluster already up (make cluster-down to stop it)"
    echo "KUBECONFIG=$KUBECONFIG_PATH"
    return 0
  fi
  ensure_packages
  if [[ -d $STATE_DIR || -d $RUN_DIR/pids ]]; then
    say "removing the remains of an earlier cluster"
    E2E_CLUSTER_LOCK_HELD=1 E2E_CLUSTER_HOLDER='' bash "$E2E_CLUSTER_DIR/down.sh" >/dev/null
  fi
  local preflight_log; preflight_log=$(mktemp)
  bash "$E2E_CLUSTER_DIR/preflight.sh" >"$preflight_log" 2>&1 || { cat "$preflight_log" >&2; rm -f "$preflight_log"; die "preflight failed (see above)"; }
  rm -f "$preflight_log"
  if [[ -d $LOG_DIR ]]; then rm -rf "$LOG_DIR.previous"; mv "$LOG_DIR" "$LOG_DIR.previous"; fi
  mkdir -p "$STATE_DIR" "$RUN_DIR/pids" "$LOG_DIR"
  say "logs of every component: $LOG_DIR"
  setup_network
  bash "$E2E_CLUSTER_DIR/pki.sh"
  write_configs
  start_containerd
  start_control_plane
  start_node
  local name
  for name in "${COMPONENTS[@]}"; do
    running "$name" || { tail -n 30 "$LOG_DIR/$name.log" >&2; die "$name exited during start-up; logs of every component: $LOG_DIR"; }
  done
  mkdir -p "$HOLDS_DIR"
  echo "${E2E_CLUSTER_HOLDER:-manual}" >"$HOLDS_DIR/.owner"
  say "cluster up in $(( $(date +%s) - START ))s (node $NODE_NAME, API https://$NODE_IP:$API_PORT)"
  echo "KUBECONFIG=$KUBECONFIG_PATH"
}

main "$@"
