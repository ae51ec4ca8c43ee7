#!/usr/bin/env bash
# Stop the e2e cluster and remove everything it made: processes (by recorded PID, then the
# containerd shims and gVisor sandboxes that carry this cluster's own socket/state paths), pod
# network namespaces, mounts, iptables rules and ipsets, links, cgroups and state. Logs stay in
# $LOG_DIR. Exits 1 if something could not be removed, naming it.
set -uo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LEFT=()

# stop NAME: SIGTERM the recorded PID, SIGKILL after 15 s.
stop() {
  local name=$1 file; file=$(pid_file "$1")
  running "$name" || { rm -f "$file" "$file.start"; return 0; }
  local pid; pid=$(cat "$file")
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null
  local i
  for i in $(seq 1 150); do running "$name" || break; sleep 0.1; done
  running "$name" && kill -KILL "$pid" 2>/dev/null && sleep 0.2
  rm -f "$file" "$file.start"
}

# PIDs of processes this cluster started indirectly: they carry its unique run/state paths.
our_processes() {
  local dir pid cmdline
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    cmdline=$( { tr '\0' ' ' <"$dir/cmdline"; } 2>/dev/null ) || continue
    [[ $cmdline == *"$RUN_DIR/"* || $cmdline == *"$STATE_DIR/"* ]] && echo "$pid"
  done
}

# Record each pod sandbox's network namespace (CRI puts them in /run/netns/cni-*), so they can
# be removed once the tasks are gone: kubelet is stopped first, so no CNI DEL runs for them, and
# gVisor strips the addresses from its interface, so they cannot be recognised by address later.
record_pod_netns() {
  local ctr_cmd=(ctr --address "$CONTAINERD_SOCK" -n k8s.io) id
  for id in $("${ctr_cmd[@]}" containers ls -q 2>/dev/null); do
    "${ctr_cmd[@]}" containers info "$id" 2>/dev/null | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec") or {}
for ns in (spec.get("linux") or {}).get("namespaces") or []:
    if ns.get("type") == "network" and "/netns/" in (ns.get("path") or ""):
        print(sys.argv[1], ns["path"])' "$id" >>"$RUN_DIR/pod-netns.list"
  done
}

stop_pods() {
  [[ -S $CONTAINERD_SOCK ]] && running containerd || return 0
  record_pod_netns
  local ctr_cmd=(ctr --address "$CONTAINERD_SOCK" -n k8s.io) task
  for task in $("${ctr_cmd[@]}" tasks ls -q 2>/dev/null); do
    "${ctr_cmd[@]}" tasks kill -s SIGKILL "$task" >/dev/null 2>&1
  done
  sleep 1
  for task in $("${ctr_cmd[@]}" tasks ls -q 2>/dev/null); do
    "${ctr_cmd[@]}" tasks delete -f "$task" >/dev/null 2>&1
  done
}

kill_leftover_processes() {
  local pids; pids=$(our_processes)
  [[ -n $pids ]] || return 0
  say "stopping leftover shims/sandboxes: $(echo $pids)"
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null; sleep 2
  pids=$(our_processes)
  # shellcheck disable=SC2086
  [[ -z $pids ]] || { kill -KILL $pids 2>/dev/null; sleep 0.5; }
}

# Pod processes live in the kubepods cgroups this cluster's kubelet made. If their shims died
# (e.g. everything was SIGKILLed), they are orphans that only their cgroup still names.
pod_cgroup_processes() {
  cat /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
    /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs 2>/dev/null | sort -u
}

kill_pod_processes() {
  local pids; pids=$(pod_cgroup_processes)
  [[ -n $pids ]] || return 0
  say "stopping orphaned pod processes: $(echo $pids)"
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null
  local i
  for i in $(seq 1 50); do [[ -z $(pod_cgroup_processes) ]] && break; sleep 0.1; done
}

remove_pod_netns() {
  local ns id path
  if [[ -f $RUN_DIR/pod-netns.list ]]; then
    while read -r id path; do
      [[ -e $path ]] && { ip netns delete "$(basename "$path")" 2>/dev/null || { umount -l "$path"; rm -f "$path"; }; }
      rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null
    done <"$RUN_DIR/pod-netns.list"
  fi
  # libcni's result cache (outside our state dir) for every sandbox this containerd created.
  local sandbox
  for sandbox in "$STATE_DIR"/containerd/root/io.containerd.grpc.v1.cri/sandboxes/*; do
    [[ -d $sandbox ]] && rm -f /var/lib/cni/results/*-"$(basename "$sandbox")"-* 2>/dev/null
  done
  # Namespaces at the far end of the pod bridge's ports are pods of this cluster, even when
  # containerd is gone (e.g. every process was killed) and gVisor took the addresses.
  local peer kind value
  if ip link show "$POD_BRIDGE" >/dev/null 2>&1; then
    # `ip` names the peer namespace ("link-netns NAME") or, if it cannot, gives its id.
    while read -r kind value; do
      if [[ $kind == link-netns ]]; then peer=$value
      else peer=$(ip netns list 2>/dev/null | awk -v id="$value" '$3 == id ")" {print $1}')
      fi
      [[ $peer == cni-* ]] && ip netns delete "$peer" 2>/dev/null
    done < <(ip -o link show master "$POD_BRIDGE" 2>/dev/null | grep -oE 'link-netns(id)? [^ ]+')
  fi
  for ns in /run/netns/cni-*; do
    [[ -e $ns ]] || continue
    # Only namespaces holding an address of this cluster's pod range are ours.
    if ip netns exec "$(basename "$ns")" ip -4 -o addr show 2>/dev/null | grep -q " ${NODE_POD_CIDR%.*}\."; then
      ip netns delete "$(basename "$ns")" 2>/dev/null || umount -l "$ns" 2>/dev/null
      rm -f "$ns" 2>/dev/null
    fi
  done
}

unmount_ours() {
  local mountpoint
  # Deepest first, so nested mounts go before their parents.
  for mountpoint in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^($STATE_DIR|$RUN_DIR)(/|$)" | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-); do
    umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint" 2>/dev/null
  done
}

is_ours_chain() { [[ $1 =~ ^(KUBE-|CNI-|$IPTABLES_GUARD_CHAIN) ]]; }

# Remove every rule that jumps to one of this cluster's chains, then those chains themselves.
clean_iptables() {
  local tool table line chain target
  for tool in iptables ip6tables; do
    command -v $tool >/dev/null || continue
    for table in filter nat mangle raw; do
      $tool -w -t $table -S >/dev/null 2>&1 || continue
      while read -r line; do
        chain=$(awk '{print $2}' <<<"$line")
        target=$(grep -oE -- '-j [^ ]+' <<<"$line" | awk '{print $2}')
        if ! is_ours_chain "$chain" && [[ -n $target ]] && is_ours_chain "$target"; then
          eval "$tool -w -t $table ${line/#-A /-D }" 2>/dev/null
        fi
      done < <($tool -w -t $table -S | grep '^-A ')
      for chain in $($tool -w -t $table -S | awk '$1=="-N"{print $2}'); do
        is_ours_chain "$chain" && $tool -w -t $table -F "$chain" 2>/dev/null
      done
      for chain in $($tool -w -t $table -S | awk '$1=="-N"{print $2}'); do
        is_ours_chain "$chain" && $tool -w -t $table -X "$chain" 2>/dev/null
      done
    done
  done
  local set
  for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router-|inet6:KUBE-|inet6:kube-router-)'); do
    ipset destroy "$set" 2>/dev/null
  done
}

remove_cgroups() {
  local hierarchy dir
  for hierarchy in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $hierarchy ]] || continue
    find "$hierarchy" -depth -type d -exec rmdir {} + 2>/dev/null
  done
}

verify_clean() {
  local pids; pids=$(our_processes)
  [[ -z $pids ]] || LEFT+=("processes: $(echo $pids)")
  pids=$(pod_cgroup_processes)
  [[ -z $pids ]] || LEFT+=("pod processes: $(echo $pids)")
  local cgroups; cgroups=$(ls -d /sys/fs/cgroup/*/kubepods 2>/dev/null)
  [[ -z $cgroups ]] || LEFT+=("cgroups: $(echo $cgroups)")
  local name
  for name in "${COMPONENTS[@]}"; do running "$name" && LEFT+=("process $name"); done
  local mounts; mounts=$(awk '{print $5}' /proc/self/mountinfo | grep -E "^($STATE_DIR|$RUN_DIR)(/|$)")
  [[ -z $mounts ]] || LEFT+=("mounts: $(echo $mounts)")
  local rules; rules=$(iptables-save 2>/dev/null | grep -cE -- "KUBE-|CNI-|$IPTABLES_GUARD_CHAIN")
  [[ $rules == 0 ]] || LEFT+=("$rules iptables lines naming KUBE-/CNI-/$IPTABLES_GUARD_CHAIN")
  ip link show "$NODE_VETH" >/dev/null 2>&1 && LEFT+=("link $NODE_VETH")
  ip link show "$POD_BRIDGE" >/dev/null 2>&1 && LEFT+=("link $POD_BRIDGE")
}

main() {
  [[ -n ${E2E_CLUSTER_LOCK_HELD:-} ]] || lock_cluster
  if [[ -n ${E2E_CLUSTER_HOLDER:-} ]]; then
    # A test session leaving: the cluster stops only when the session that owns it (the one that
    # started it, or inherited it) leaves last. A cluster someone started by hand stays up.
    rm -f "$HOLDS_DIR/$E2E_CLUSTER_HOLDER"
    local owner others
    owner=$(cat "$HOLDS_DIR/.owner" 2>/dev/null || echo manual)
    # An owning session that died without tearing down hands the cluster to whoever leaves now.
    if [[ $owner != manual && $owner != "$E2E_CLUSTER_HOLDER" ]] && ! live_holders | grep -qxF "$owner"; then
      owner=$E2E_CLUSTER_HOLDER
    fi
    if [[ $owner != "$E2E_CLUSTER_HOLDER" ]]; then
      say "cluster was started by '$owner', not by this session: leaving it up"
      return 0
    fi
    others=$(live_holders | tr '\n' ' ')
    if [[ -n ${others// /} ]]; then
      echo "${others%% *}" >"$HOLDS_DIR/.owner"
      say "cluster still used by: $others- leaving it up for them"
      return 0
    fi
  fi
  say "cluster-down"
  local name i
  # Node agents first (so nothing restarts pods), then pods, then the control plane.
  for name in kube-router coredns kube-proxy kubelet; do stop "$name"; done
  stop_pods
  for (( i=${#COMPONENTS[@]}-1; i>=0; i-- )); do stop "${COMPONENTS[$i]}"; done
  kill_leftover_processes
  kill_pod_processes
  remove_pod_netns
  unmount_ours
  # Component clean-up modes remove what each programmed; clean_iptables catches the rest.
  [[ -x $KUBE_ROUTER_BIN ]] && timeout 60 "$KUBE_ROUTER_BIN" --cleanup-config >>"$LOG_DIR/cleanup.log" 2>&1
  [[ -x $K8S_BIN/kube-proxy ]] && timeout 60 "$K8S_BIN/kube-proxy" --cleanup >>"$LOG_DIR/cleanup.log" 2>&1
  clean_iptables
  ip link del "$NODE_VETH" 2>/dev/null
  ip link del "$POD_BRIDGE" 2>/dev/null
  remove_cgroups
  unmount_ours
  rm -rf "$STATE_DIR" "$RUN_DIR"
  rm -f "$HOLDS_DIR/.owner"
  verify_clean
  if (( ${#LEFT[@]} )); then
    printf '[cluster] cluster-down left behind:\n' >&2
    printf '  - %s\n' "${LEFT[@]}" >&2
    exit 1
  fi
  say "cluster down: no process, mount, iptables rule or link left (logs kept in $LOG_DIR)"
}

mkdir -p "$LOG_DIR"
main "$@"
