#!/usr/bin/env bash
# Import container images into the e2e cluster's containerd (namespace k8s.io), so pods can use
# them with imagePullPolicy Never/IfNotPresent. Nothing is pulled.
# Usage: e2e/cluster/load-images.sh IMAGE_OR_TARBALL...
#   IMAGE_OR_TARBALL: a docker-archive/OCI tarball path, or an image reference that the local Docker
#   engine has (it is exported with `docker save`).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

(( $# )) || die "usage: $0 IMAGE_OR_TARBALL... (e.g. a ref from 'make images' or a .tar file)"
running containerd && [[ -S $CONTAINERD_SOCK ]] || die "the e2e cluster is not up (make cluster-up)"
CTR=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)

for item in "$@"; do
  if [[ -f $item ]]; then
    say "importing $item"
    "${CTR[@]}" images import "$item" >>"$LOG_DIR/images.log" 2>&1 || die "import of $item failed; see $LOG_DIR/images.log"
  else
    command -v docker >/dev/null || die "'$item' is not a file and docker is not installed to export it"
    docker image inspect "$item" >/dev/null 2>&1 || die "image '$item' is not in the local Docker engine (build it first, e.g. make images)"
    say "importing $item from Docker"
    docker save "$item" | "${CTR[@]}" images import - >>"$LOG_DIR/images.log" 2>&1 ||
      die "import of $item failed; see $LOG_DIR/images.log"
  fi
done
"${CTR[@]}" images ls -q | grep -v '^sha256:'
