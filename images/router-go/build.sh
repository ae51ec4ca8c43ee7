#!/usr/bin/env bash
# Build the compiled router: a static binary from this directory's Go files (standard library
# only, so nothing is downloaded), cached by content outside the repo.
#
#   images/router-go/build.sh [OUT]     prints the binary's path as its last line
#
# Without OUT the binary goes to $CACHE_DIR/router-go/<hash of the sources and go version>/sandbox-router
# and is reused while neither changes. Environment: CACHE_DIR (default /var/cache/agent-sandbox-iac),
# GO (default: go on PATH).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_DIR=${CACHE_DIR:-/var/cache/agent-sandbox-iac}
GO=${GO:-go}
command -v "$GO" >/dev/null || { echo "router-go: no Go toolchain ($GO) on PATH; install Go >= 1.22 or set GO" >&2; exit 2; }
version=$("$GO" env GOVERSION)
hash=$(cd "$here" && { echo "$version"; cat go.mod $(ls *.go | grep -v '_test.go$' | sort); } | sha256sum | cut -c1-16)
out=${1:-$CACHE_DIR/router-go/$hash/sandbox-router}
if [[ -z ${1:-} && -x $out ]]; then
	echo "$out"
	exit 0
fi
mkdir -p "$(dirname "$out")"
echo "router-go: building $out ($version)" >&2
tmp="$out.tmp.$$"
(cd "$here" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod GOCACHE="${GOCACHE:-$CACHE_DIR/go/build}" \
	"$GO" build -trimpath -ldflags "-s -w" -o "$tmp" .)
mv -f "$tmp" "$out"
echo "$out"
