#!/usr/bin/env bash
# Build everything the single-node e2e cluster runs, from Go modules and Debian packages, offline.
#
# Usage: e2e/toolchain/cluster.sh [component ...]
#   components: kubernetes etcd agent-sandbox gvisor coredns kube-router pause images
#               kind containerd runc crictl cni-plugins (default: all)
#               kwok (on request only: the simulated-scale bench's fake nodes)
#               keda (on request only: operator + metrics API server for `warmPoolAutoscaling: keda`)
#
# Each artefact lands in $CACHE_DIR/<tool>/<version>/bin and is marked complete only after a
# successful build, so a rerun skips finished parts and resumes an interrupted one (Go's module
# and build caches under $CACHE_DIR/go keep the partial work). Stable symlinks go to $CACHE_DIR/bin.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster-versions.sh
. "$HERE/cluster-versions.sh"

CACHE_DIR=${CACHE_DIR:-/var/cache/agent-sandbox-iac}
LOG_DIR=$CACHE_DIR/logs
BIN_LINKS=$CACHE_DIR/bin
IMAGE_DIR=$CACHE_DIR/images
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
mkdir -p "$LOG_DIR" "$BIN_LINKS" "$IMAGE_DIR" "$CACHE_DIR/go"

export GOMODCACHE=${GOMODCACHE:-$CACHE_DIR/go/mod}
export GOCACHE=${GOCACHE:-$CACHE_DIR/go/build}
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-trimpath -buildvcs=false"
# The checksum database has no entry for gVisor's go-branch pseudo-versions (404); the module
# proxy still serves them, so only that module skips the sumdb check.
export GONOSUMDB=gvisor.dev/gvisor
# Builds share 2 cores with other work.
NICE=(nice -n 10)

ALL_COMPONENTS=(kubernetes etcd agent-sandbox gvisor coredns kube-router pause images kind containerd runc crictl cni-plugins)
BUILT=()
SKIPPED=()
SCRIPT_START=$(date +%s)

say() { printf '[toolchain-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

[[ -x $GO ]] || die "no Go toolchain found (looked for 'go' on PATH and /usr/local/go/bin/go); install Go >= 1.26"


# run_logged NAME LOG CMD...: run a long command with its output in LOG and a heartbeat every
# 30 s (elapsed time and how many packages Go has reported so far) so progress stays visible.
run_logged() {
  local name=$1 log=$2; shift 2
  local start; start=$(date +%s)
  "$@" >>"$log" 2>&1 &
  local pid=$!
  local ticks=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    ticks=$(( ticks + 1 ))
    (( ticks % 30 == 0 )) && kill -0 "$pid" 2>/dev/null || continue
    say "  $name: still running, $(( $(date +%s) - start ))s, $(wc -l <"$log") log lines (tail: $(tail -n1 "$log" | cut -c1-80))"
  done
  if ! wait "$pid"; then
    say "  $name FAILED; last lines of $log:"
    tail -n 25 "$log" >&2
    return 1
  fi
}

# component NAME VERSION FUNCTION: build into $CACHE_DIR/NAME/VERSION/bin unless already complete.
component() {
  local name=$1 version=$2 fn=$3
  local dest=$CACHE_DIR/$name/$version
  # One builder per artefact at a time (two shells, the test fixture, a person); others wait.
  mkdir -p "$CACHE_DIR/.locks"
  exec 9>"$CACHE_DIR/.locks/$name-$version.lock"
  if ! flock -n 9; then
    say "$name $version: another build holds its lock; waiting"
    flock 9
  fi
  if [[ -f $dest/.complete ]]; then
    say "$name $version: cached in $dest/bin"
    SKIPPED+=("$name")
  else
    local start; start=$(date +%s)
    local log=$LOG_DIR/$name-$version.log
    say "$name $version: building (log: $log)"
    : >"$log"
    rm -rf "$dest/bin.tmp"; mkdir -p "$dest/bin.tmp"
    "$fn" "$dest" "$log"
    rm -rf "${dest:?}/bin"; mv "$dest/bin.tmp" "$dest/bin"
    date -u +%FT%TZ >"$dest/.complete"
    say "$name $version: built in $(( $(date +%s) - start ))s"
    BUILT+=("$name:$(( $(date +%s) - start ))s")
  fi
  flock -u 9
  # Parts that only go into the KIND node image stay off PATH: a `containerd`, `runc` or `bridge`
  # on PATH would shadow the host's own (dockerd starts the containerd it finds there).
  case $name in containerd | runc | cni-plugins) return 0 ;; esac
  local binary
  for binary in "$dest"/bin/*; do
    [[ -f $binary && -x $binary ]] && ln -sfn "$binary" "$BIN_LINKS/$(basename "$binary")"
  done
  return 0
}

# write_tools_go DIR IMPORT...: the classic tools.go that pins main packages in a wrapper module.
write_tools_go() {
  local dir=$1; shift
  { echo '//go:build tools'; echo; echo 'package tools'; echo; echo 'import ('
    local pkg; for pkg in "$@"; do printf '\t_ "%s"\n' "$pkg"; done
    echo ')'; } >"$dir/tools.go"
}

build_kubernetes() {
  local dest=$1 log=$2 src=$1/src
  local staging=v0.${KUBERNETES_VERSION#v1.}
  local minor; minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
  mkdir -p "$src"
  # k8s.io/kubernetes pins its staging modules to v0.0.0 and replaces them with ./staging paths,
  # which only work inside its own repository; the wrapper replaces each with its published v0.x.y.
  printf 'module local.test/k8swrap\n\ngo 1.26\n' >"$src/go.mod"
  local gomod
  gomod=$(cd "$src" && "$GO" mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("GoMod") or sys.exit(d.get("Error")))')
  (cd "$src" && "$GO" mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION")
  local module
  for module in $(awk '$2=="=>" && $3 ~ /^\.\/staging\/src\// {print $1}' "$gomod"); do
    (cd "$src" && "$GO" mod edit -replace="$module=$module@$staging")
  done
  grep -E '^godebug' "$gomod" >>"$src/go.mod" || true
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm)
  write_tools_go "$src" "${cmds[@]/#/k8s.io/kubernetes/cmd/}"
  say "  kubernetes: resolving modules (go mod tidy)"
  run_logged "go mod tidy" "$log" bash -c "cd '$src' && '$GO' mod tidy"
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  say "  kubernetes: compiling ${cmds[*]} (cold: ~30-40 min on 2 cores)"
  run_logged "kubernetes compile" "$log" bash -c "cd '$src' && ${NICE[*]} '$GO' build -v -mod=mod \
    -tags selinux,notest -ldflags '$ldflags' -o '$dest/bin.tmp/' ${cmds[*]/#/k8s.io/kubernetes/cmd/}"
}

build_etcd() {
  local dest=$1 log=$2 src=$1/src
  mkdir -p "$src"
  # go.etcd.io/etcd/server/v3 has ../api style replaces, so `go install @version` is refused.
  printf 'module local.test/etcdwrap\n\ngo 1.26\n' >"$src/go.mod"
  write_tools_go "$src" go.etcd.io/etcd/server/v3
  (cd "$src" && "$GO" mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  run_logged "go mod tidy" "$log" bash -c "cd '$src' && '$GO' mod tidy"
  run_logged "etcd compile" "$log" bash -c "cd '$src' && ${NICE[*]} '$GO' build -v -mod=mod \
    -ldflags '-s -w' -o '$dest/bin.tmp/etcd' go.etcd.io/etcd/server/v3"
}

# build_wrapped DEST LOG MODULE@VERSION LDFLAGS OUTPUT=PACKAGE...: build main packages of a module
# through a small wrapper module that requires it at exactly VERSION. (`go install pkg@version`
# would also ask the proxy for the module's version list, which it refuses for some modules.)
build_wrapped() {
  local dest=$1 log=$2 target=$3 ldflags=$4; shift 4
  local src=$dest/src pair packages=()
  mkdir -p "$src"
  printf 'module local.test/wrap\n\ngo 1.26\n' >"$src/go.mod"
  for pair in "$@"; do packages+=("${pair#*=}"); done
  write_tools_go "$src" "${packages[@]}"
  (cd "$src" && "$GO" mod edit -require="$target")
  run_logged "go mod tidy ${target%@*}" "$log" bash -c "cd '$src' && '$GO' mod tidy"
  for pair in "$@"; do
    run_logged "compile ${pair%%=*}" "$log" bash -c "cd '$src' && ${NICE[*]} '$GO' build -v -mod=mod \
      -ldflags '$ldflags' -o '$dest/bin.tmp/${pair%%=*}' '${pair#*=}'"
  done
}

build_agent_sandbox() {
  build_wrapped "$1" "$2" "sigs.k8s.io/agent-sandbox@$AGENT_SANDBOX_VERSION" \
    "-s -w -X sigs.k8s.io/agent-sandbox/internal/version.gitVersion=$AGENT_SANDBOX_VERSION" \
    agent-sandbox-controller=sigs.k8s.io/agent-sandbox/cmd/agent-sandbox-controller
}

# gVisor is built from a patched copy of its module (see cluster/patch_gvisor.py: this machine's
# root lacks CAP_SYS_RESOURCE, which unpatched runsc and its shim treat as fatal).
build_gvisor() {
  local dest=$1 log=$2 src=$1/src
  local module_dir
  module_dir=$(cd /tmp && "$GO" mod download -json "gvisor.dev/gvisor@$GVISOR_VERSION" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))')
  mkdir -p "$src"
  rm -rf "$src/gvisor"; cp -r "$module_dir" "$src/gvisor"; chmod -R u+w "$src/gvisor"
  python3 "$HERE/cluster/patch_gvisor.py" "$src/gvisor" >>"$log"
  printf 'module local.test/wrap\n\ngo 1.26\n' >"$src/go.mod"
  write_tools_go "$src" gvisor.dev/gvisor/runsc gvisor.dev/gvisor/shim
  (cd "$src" && "$GO" mod edit -require="gvisor.dev/gvisor@$GVISOR_VERSION" -replace="gvisor.dev/gvisor=./gvisor")
  run_logged "go mod tidy gvisor" "$log" bash -c "cd '$src' && '$GO' mod tidy"
  local ldflags="-s -w -X gvisor.dev/gvisor/runsc/version.version=$GVISOR_VERSION-e2e-patched"
  run_logged "compile runsc" "$log" bash -c "cd '$src' && ${NICE[*]} '$GO' build -v -mod=mod \
    -ldflags '$ldflags' -o '$dest/bin.tmp/runsc' gvisor.dev/gvisor/runsc"
  run_logged "compile containerd-shim-runsc-v1" "$log" bash -c "cd '$src' && ${NICE[*]} '$GO' build -v -mod=mod \
    -ldflags '$ldflags' -o '$dest/bin.tmp/containerd-shim-runsc-v1' gvisor.dev/gvisor/shim"
}

# CoreDNS from our own main (cluster/coredns/main.go): the Corefile's plugins only.
build_coredns() {
  local dest=$1 log=$2 src=$1/src
  mkdir -p "$src"
  cp "$HERE/cluster/coredns/main.go" "$src/main.go"
  printf 'module local.test/coredns\n\ngo 1.26\n' >"$src/go.mod"
  (cd "$src" && "$GO" mod edit -require="github.com/coredns/coredns@$COREDNS_VERSION")
  run_logged "go mod tidy coredns" "$log" bash -c "cd '$src' && '$GO' mod tidy"
  run_logged "compile coredns" "$log" bash -c "cd '$src' && ${NICE[*]} '$GO' build -v -mod=mod \
    -ldflags '-s -w' -o '$dest/bin.tmp/coredns' ."
}

build_kube_router() {
  build_wrapped "$1" "$2" "github.com/cloudnativelabs/kube-router/v2@$KUBE_ROUTER_VERSION" \
    "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
    kube-router=github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
}

build_pause() {
  local dest=$1 log=$2
  run_logged "pause compile" "$log" bash -c "cd '$HERE/cluster/pause' && '$GO' build -ldflags '-s -w' -o '$dest/bin.tmp/pause' ."
}

ensure_busybox_static() {
  if [[ ! -x /bin/busybox ]] || ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then
    say "  installing Debian busybox-static (test image contents)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null; } ||
      die "cannot install busybox-static (apt-get install busybox-static)"
  fi
}

# Images are docker-archive tarballs made without a daemon (`kind load image-archive` and ctr read them).
build_images() {
  local dest=$1 log=$2 out=$1/bin.tmp
  local pause_bin=$CACHE_DIR/pause/$PAUSE_VERSION/bin/pause
  local controller_bin=$CACHE_DIR/agent-sandbox/$AGENT_SANDBOX_VERSION/bin/agent-sandbox-controller
  [[ -x $pause_bin ]] || die "pause binary missing ($pause_bin); run: $0 pause"
  [[ -x $controller_bin ]] || die "controller binary missing ($controller_bin); run: $0 agent-sandbox"
  command -v file >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q file >/dev/null
  ensure_busybox_static
  local builder=(python3 "$HERE/cluster/image_archive.py")
  "${builder[@]}" --tag "$PAUSE_IMAGE" --out "$out/pause.tar" --file "$pause_bin:/pause" \
    --entrypoint '["/pause"]' --user 65535:65535 >>"$log"
  "${builder[@]}" --tag "$CONTROLLER_IMAGE" --out "$out/agent-sandbox-controller.tar" \
    --file "$controller_bin:/agent-sandbox-controller" --dir /tmp:1777 \
    --entrypoint '["/agent-sandbox-controller"]' --user 65532:65532 >>"$log"
  local applets=() applet
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || applets+=(--symlink "/bin/$applet:busybox")
  done
  "${builder[@]}" --tag "$BUSYBOX_IMAGE" --out "$out/busybox.tar" --file /bin/busybox:/bin/busybox \
    "${applets[@]}" --dir /tmp:1777 --dir /etc:755 --cmd '["/bin/sh"]' >>"$log"
  # image tarballs are not executables; keep them out of $CACHE_DIR/bin
  chmod 0644 "$out"/*.tar
  cat "$log"
}

# --- KIND and its node image's parts -------------------------------------------------------------
build_kind() {
  build_wrapped "$1" "$2" "sigs.k8s.io/kind@$KIND_VERSION" "-s -w" kind=sigs.k8s.io/kind
}

build_kwok() {
  build_wrapped "$1" "$2" "sigs.k8s.io/kwok@$KWOK_VERSION" \
    "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" kwok=sigs.k8s.io/kwok/cmd/kwok
}

# KEDA's operator and external-metrics API server. Its go.mod replaces one dependency with a
# pseudo-version; replaces only bind inside their own module, so the wrapper repeats each of them.
build_keda() {
  local dest=$1 log=$2 src=$1/src m=github.com/kedacore/keda/v2
  mkdir -p "$src"
  printf 'module local.test/wrap\n\ngo 1.26\n' >"$src/go.mod"
  write_tools_go "$src" "$m/cmd/operator" "$m/cmd/adapter"
  (cd "$src" && "$GO" mod edit -require="$m@$KEDA_VERSION")
  local gomod replace
  gomod=$(cd "$src" && "$GO" mod download -json "$m@$KEDA_VERSION" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("GoMod") or sys.exit(d.get("Error")))')
  for replace in $(awk '$1=="replace" && $4=="=>" {print $2"@"$3"="$5"@"$6}' "$gomod"); do
    (cd "$src" && "$GO" mod edit -replace="$replace")
  done
  run_logged "go mod tidy keda" "$log" bash -c "cd '$src' && '$GO' mod tidy"
  local ldflags="-s -w -X $m/version.Version=$KEDA_VERSION -X $m/version.GitCommit=go-module"
  say "  keda: compiling operator and adapter (every scaler is linked in: cold ~20-30 min on 2 cores)"
  run_logged "compile keda-operator" "$log" bash -c "cd '$src' && ${NICE[*]} '$GO' build -v -mod=mod \
    -ldflags '$ldflags' -o '$dest/bin.tmp/keda-operator' $m/cmd/operator"
  run_logged "compile keda-adapter" "$log" bash -c "cd '$src' && ${NICE[*]} '$GO' build -v -mod=mod \
    -ldflags '$ldflags' -o '$dest/bin.tmp/keda-adapter' $m/cmd/adapter"
  keda_images "$dest/bin.tmp" "$log"
}

# The two images KEDA's manifests run (/keda and /keda-adapter, non-root 65532 as upstream's
# distroless base), as daemon-less docker-archive tarballs for `kind load image-archive`.
keda_images() {
  local out=$1 log=$2 builder=(python3 "$HERE/cluster/image_archive.py")
  "${builder[@]}" --tag "$KEDA_OPERATOR_IMAGE" --out "$out/keda-operator.tar" --file "$out/keda-operator:/keda" \
    --dir /tmp:1777 --entrypoint '["/keda"]' --user 65532:65532 >>"$log"
  "${builder[@]}" --tag "$KEDA_METRICS_IMAGE" --out "$out/keda-metrics-apiserver.tar" \
    --file "$out/keda-adapter:/keda-adapter" --dir /tmp:1777 --entrypoint '["/keda-adapter"]' --user 65532:65532 >>"$log"
  chmod 0644 "$out"/*.tar
}

# containerd without the optional snapshotters (as kind's base image builds it); static, no cgo.
build_containerd() {
  local dest=$1 log=$2 src=$1/src tags="no_aufs no_zfs no_btrfs no_devmapper"
  local ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  ldflags+=" -X github.com/containerd/containerd/v2/version.Revision=go-module"
  mkdir -p "$src"
  printf 'module local.test/wrap\n\ngo 1.26\n' >"$src/go.mod"
  write_tools_go "$src" github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/ctr github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
  (cd "$src" && "$GO" mod edit -require="github.com/containerd/containerd/v2@$CONTAINERD_VERSION")
  run_logged "go mod tidy containerd" "$log" bash -c "cd '$src' && '$GO' mod tidy"
  local cmd
  for cmd in containerd ctr containerd-shim-runc-v2; do
    run_logged "compile $cmd" "$log" bash -c "cd '$src' && ${NICE[*]} '$GO' build -v -mod=mod -tags '$tags' \
      -ldflags '$ldflags' -o '$dest/bin.tmp/$cmd' github.com/containerd/containerd/v2/cmd/$cmd"
  done
}

# runc needs cgo (its nsenter is C) and libseccomp; linked against bookworm's libseccomp2/glibc,
# which the node image has.
build_runc() {
  local dest=$1 log=$2 src=$1/src
  if ! dpkg -s libseccomp-dev >/dev/null 2>&1; then
    say "  installing Debian libseccomp-dev (runc's seccomp support)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libseccomp-dev >>"$log" 2>&1 ||
      { apt-get update -q >>"$log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libseccomp-dev >>"$log" 2>&1; } ||
      die "cannot install libseccomp-dev (apt-get install libseccomp-dev)"
  fi
  mkdir -p "$src"
  printf 'module local.test/wrap\n\ngo 1.26\n' >"$src/go.mod"
  write_tools_go "$src" github.com/opencontainers/runc
  (cd "$src" && "$GO" mod edit -require="github.com/opencontainers/runc@$RUNC_VERSION")
  run_logged "go mod tidy runc" "$log" bash -c "cd '$src' && '$GO' mod tidy"
  run_logged "compile runc" "$log" bash -c "cd '$src' && CGO_ENABLED=1 ${NICE[*]} '$GO' build -v -mod=mod \
    -tags seccomp -ldflags '-s -w -X main.version=${RUNC_VERSION#v}' -o '$dest/bin.tmp/runc' github.com/opencontainers/runc"
}

build_crictl() {
  build_wrapped "$1" "$2" "sigs.k8s.io/cri-tools@$CRICTL_VERSION" \
    "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" crictl=sigs.k8s.io/cri-tools/cmd/crictl
}

# kind's four plugins plus bridge, which the node image's default CNI (kube-router) uses.
build_cni_plugins() {
  local m=github.com/containernetworking/plugins
  build_wrapped "$1" "$2" "$m@$CNI_PLUGINS_VERSION" "-s -w" \
    host-local=$m/plugins/ipam/host-local loopback=$m/plugins/main/loopback ptp=$m/plugins/main/ptp \
    portmap=$m/plugins/meta/portmap bridge=$m/plugins/main/bridge
}

print_versions() {
  local b=$BIN_LINKS
  say "versions:"
  [[ -x $b/kubectl ]] && echo "  kubernetes      $($b/kubectl version --client 2>/dev/null | head -n1)"
  [[ -x $b/kube-apiserver ]] && echo "  kube-apiserver  $($b/kube-apiserver --version 2>/dev/null)"
  [[ -x $b/kubelet ]] && echo "  kubelet         $($b/kubelet --version 2>/dev/null)"
  [[ -x $b/etcd ]] && echo "  etcd            $($b/etcd --version 2>/dev/null | head -n1)"
  [[ -x $b/runsc ]] && echo "  runsc           $($b/runsc --version 2>/dev/null | head -n1) ($GVISOR_VERSION)"
  [[ -x $b/containerd-shim-runsc-v1 ]] && echo "  runsc shim      containerd-shim-runsc-v1 ($GVISOR_VERSION)"
  [[ -x $b/coredns ]] && echo "  coredns         $($b/coredns -version 2>/dev/null | head -n1)"
  [[ -x $b/kube-router ]] && echo "  kube-router     $KUBE_ROUTER_VERSION (firewall only; $($b/kube-router --version 2>&1 | head -n1 | cut -c1-60))"
  [[ -x $b/agent-sandbox-controller ]] && echo "  agent-sandbox   controller $AGENT_SANDBOX_VERSION"
  [[ -x $b/pause ]] && echo "  pause           ours, image $PAUSE_IMAGE"
  [[ -f $CACHE_DIR/images/$AGENT_SANDBOX_VERSION/bin/pause.tar ]] &&
    echo "  images          $PAUSE_IMAGE $CONTROLLER_IMAGE $BUSYBOX_IMAGE ($CACHE_DIR/images/$AGENT_SANDBOX_VERSION/bin)"
  return 0
}

main() {
  local components=("$@")
  [[ ${#components[@]} -gt 0 ]] || components=("${ALL_COMPONENTS[@]}")
  local c
  for c in "${components[@]}"; do
    case $c in
      kubernetes) component kubernetes "$KUBERNETES_VERSION" build_kubernetes ;;
      etcd) component etcd "$ETCD_VERSION" build_etcd ;;
      agent-sandbox) component agent-sandbox "$AGENT_SANDBOX_VERSION" build_agent_sandbox ;;
      gvisor) component gvisor "$GVISOR_BUILD" build_gvisor ;;
      coredns) component coredns "$COREDNS_BUILD" build_coredns ;;
      kube-router) component kube-router "$KUBE_ROUTER_VERSION" build_kube_router ;;
      pause) component pause "$PAUSE_VERSION" build_pause ;;
      # keyed by the controller version (its image is the one that changes)
      images) component images "$AGENT_SANDBOX_VERSION" build_images ;;
      kind) component kind "$KIND_VERSION" build_kind ;;
      kwok) component kwok "$KWOK_VERSION" build_kwok ;;
      keda) component keda "$KEDA_VERSION" build_keda ;;
      containerd) component containerd "$CONTAINERD_VERSION" build_containerd ;;
      runc) component runc "$RUNC_VERSION" build_runc ;;
      crictl) component crictl "$CRICTL_VERSION" build_crictl ;;
      # the CNI plugins are not tools for PATH: they live in their own bin and go into the node image
      cni-plugins) component cni-plugins "$CNI_PLUGINS_VERSION" build_cni_plugins ;;
      *) die "unknown component '$c'; choose from: ${ALL_COMPONENTS[*]} kwok keda" ;;
    esac
  done
  print_versions
  local total=$(( $(date +%s) - SCRIPT_START ))
  local kind=warm
  [[ ${#BUILT[@]} -eq 0 ]] || kind=cold
  say "done: $kind run in ${total}s (built: ${BUILT[*]:-nothing}; cached: ${SKIPPED[*]:-nothing})"
  printf '{"kind": "%s", "seconds": %d, "built": "%s", "at": "%s"}\n' "$kind" "$total" "${BUILT[*]:-}" \
    "$(date -u +%FT%TZ)" >>"$LOG_DIR/toolchain-cluster-times.jsonl"
}

main "$@"
