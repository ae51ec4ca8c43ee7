#!/usr/bin/env bash
# Make a local Python base image without pulling from any registry:
# debootstrap Debian bookworm (minbase + Python) from apt's configured mirror, trim it, and `docker import` it.
#
#   images/base/build-base.sh          prints progress on stderr and, as its last line, BASE_IMAGE=<ref>
#
# The rootfs tarball is cached under $CACHE_DIR/base/ keyed by a hash of what decides its content, so a
# re-run (or a fresh dockerd) only needs `docker import` (seconds); an image already present is reused.
# The image has Debian's python3 (3.11) at /usr/bin with EXTERNALLY-MANAGED, python3-venv (so Dockerfiles
# build a venv at /opt/venv), CA certificates and libgomp1 (LightGBM's OpenMP).
# Needs root (debootstrap) and a running engine (e2e/docker-engine.sh start).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_DIR=${CACHE_DIR:-/var/cache/agent-sandbox-iac}
BASE_CACHE=$CACHE_DIR/base
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates,libgomp1
IMPORT_CHANGES=(
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
	--change 'ENV LANG=C.UTF-8'
	--change 'CMD ["python3"]'
)
DOCKER=${DOCKER:-$("$HERE/../../e2e/docker-engine.sh" client)}

say() { echo "base-image: $*" >&2; }

# apt's configured Debian mirror (deb822 or one-line format); DEBIAN_MIRROR overrides.
debian_mirror() {
	if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
	local uri
	uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
	[[ -n $uri ]] || uri=$(grep -hsE '^deb\s+\S+/debian/?\s+bookworm' /etc/apt/sources.list | awk '{print $2}' | head -n1 || true)
	echo "${uri:-http://deb.debian.org/debian}"
}

# Debian-slim-like trimming of the fresh rootfs ROOT bootstrapped from MIRROR.
trim_rootfs() {
	local root=${1:?rootfs directory} mirror=${2:?mirror URL}
	# Never let an empty or wrong path turn the rm -rf below onto the host's own /dev, /tmp or /var.
	[[ $root != / && -x $root/usr/bin/python3 ]] || { say "refusing to trim $root: not a bootstrapped rootfs"; return 1; }
	# Later apt installs inside derived images skip docs too (same idea as Debian's slim images).
	cat >"$root/etc/dpkg/dpkg.cfg.d/01-no-docs" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
	chroot "$root" apt-get clean
	find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "${root:?}"/usr/share/{man,info,locale}/* "${root:?}"/var/lib/apt/lists/* "${root:?}"/var/cache/apt/*.bin \
		"${root:?}"/var/log/*.log "${root:?}"/var/log/apt/* "${root:?}"/var/cache/debconf/*-old "${root:?}"/dev/* \
		"${root:?}"/tmp/* "${root:?}"/var/tmp/* "${root:?}"/etc/machine-id
	# Debian's default apt source inside the image: the same mirror the rootfs came from.
	echo "deb $mirror $SUITE main" >"$root/etc/apt/sources.list"
}

# The key covers what decides the image content (suite, packages, trimming, import settings), not the
# rest of this script, so fixing how the script runs doesn't force a new base and new image tags.
KEY=$( { echo "v2 $SUITE $PACKAGES ${IMPORT_CHANGES[*]}"; declare -f trim_rootfs; } | sha256sum | cut -c1-12)
TAG=agent-sandbox-base/python:3.11-$SUITE-$KEY
TARBALL=$BASE_CACHE/python-3.11-$SUITE-$KEY.tar.gz

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
	say "image $TAG already present"
	echo "BASE_IMAGE=$TAG"
	exit 0
fi

mkdir -p "$BASE_CACHE"
exec {lockfd}>"$BASE_CACHE/.lock"
flock -w 1800 "$lockfd"

if [[ ! -s $TARBALL ]]; then
	command -v debootstrap >/dev/null || {
		say "installing debootstrap with apt-get"
		# Retried: a concurrent apt run may hold the lists lock (DPkg::Lock::Timeout covers dpkg's lock only).
		for attempt in 1 2 3 4 5 6; do
			apt-get -o DPkg::Lock::Timeout=600 update -q >&2 && break
			[[ $attempt == 6 ]] && { say "apt-get update kept failing"; exit 1; }
			sleep 10
		done
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends debootstrap >&2
	}
	mirror=$(debian_mirror)
	root=$(mktemp -d "$BASE_CACHE/rootfs.XXXXXX")
	trap 'rm -rf "$root"' EXIT
	say "debootstrap $SUITE (minbase + $PACKAGES) from $mirror into $root"
	start=$SECONDS
	debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 &
	pid=$!
	# a progress line every 20 s: debootstrap takes 1-3 minutes and is silent in its log
	while kill -0 "$pid" 2>/dev/null; do
		for _ in 1 2 3 4 5 6 7 8 9 10; do sleep 2; kill -0 "$pid" 2>/dev/null || break; done
		kill -0 "$pid" 2>/dev/null && say "  ... debootstrap $((SECONDS - start))s: $(tail -n1 "$root.log" | cut -c1-80)"
	done
	wait "$pid" || {
		tail -n 30 "$root.log" >&2
		exit 1
	}
	rm -f "$root.log"
	say "debootstrap took $((SECONDS - start))s; trimming"
	trim_rootfs "$root" "$mirror"
	tar -C "$root" --numeric-owner --xattrs -czf "$TARBALL.tmp" .
	mv "$TARBALL.tmp" "$TARBALL"
	rm -rf "$root"
	trap - EXIT
	say "rootfs cached at $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
	say "using cached rootfs $TARBALL"
fi

"$DOCKER" image inspect "$TAG" >/dev/null 2>&1 || "$DOCKER" import "${IMPORT_CHANGES[@]}" \
	--message "debootstrap $SUITE minbase + $PACKAGES (images/base/build-base.sh $KEY)" \
	"$TARBALL" "$TAG" >/dev/null
say "imported $TAG ($("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "BASE_IMAGE=$TAG"
