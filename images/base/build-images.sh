#!/usr/bin/env bash
# Build the runtime and router images with no network from inside the builds and no registry pull.
#
#   images/base/build-images.sh [--variant full|minimal] [--router compiled|python] [--base-image REF] [--save DIR]
#
# 1. makes a Docker engine available (e2e/docker-engine.sh),
# 2. makes the local debootstrap base image (images/base/build-base.sh) unless --base-image is given
#    (the image must already be in the engine: nothing is pulled),
# 3. downloads wheels on the host for the base image's Python/glibc (images/base/wheelhouse.sh) and
#    links them into images/<name>/.wheels/ (git-ignored by a .gitignore inside it; the runtime's holds
#    the wheels of both variants),
#    The router is the compiled one (images/router-go: its static binary built on the host by its
#    build.sh, packed by Dockerfile.offline onto an empty base) unless --router python (images/router).
# 4. builds each image under a content-derived tag (sandbox_iac.content_tag, as the Pulumi program uses,
#    over the build context, the build args and the base image's ID), skipping tags that already exist,
# 5. with --save DIR, writes docker-archive tarballs (importable with `ctr -n k8s.io images import`).
# Prints as its last two lines `runtime=<ref>` and `router=<ref>` (after `*_archive=` lines with --save).
#
# Environment: CACHE_DIR (caches), PY (a Python with pip and this repo importable; default .venv/bin/python),
# DOCKER_BUILDKIT (default 0: the classic builder needs no extra components; 1 works as well).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE_DIR=${CACHE_DIR:-/var/cache/agent-sandbox-iac}
export CACHE_DIR
PY=${PY:-$REPO/.venv/bin/python}
[[ $PY == /* ]] || PY=$REPO/$PY
VARIANT=full
ROUTER=compiled
BASE_IMAGE=
SAVE_DIR=

usage() { echo "usage: $0 [--variant full|minimal] [--router compiled|python] [--base-image REF] [--save DIR]" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
	case $1 in
	--variant) VARIANT=${2:?}; shift 2 ;;
	--router) ROUTER=${2:?}; shift 2 ;;
	--base-image) BASE_IMAGE=${2:?}; shift 2 ;;
	--save) SAVE_DIR=${2:?}; shift 2 ;;
	*) usage ;;
	esac
done
case $VARIANT in full | minimal) ;; *) echo "build-images: --variant $VARIANT is not a runtime variant; use full or minimal" >&2; exit 2 ;; esac
case $ROUTER in compiled | python) ;; *) echo "build-images: --router $ROUTER is not a router implementation; use compiled or python" >&2; exit 2 ;; esac
[[ -x $PY ]] || { echo "build-images: $PY is missing; run 'make venv' or set PY to a Python with pip" >&2; exit 2; }

say() { echo "build-images: $*" >&2; }
last_line() { tail -n 1; }

"$REPO/e2e/docker-engine.sh" start >/dev/null
DOCKER=$("$REPO/e2e/docker-engine.sh" client)
export DOCKER

if [[ -z $BASE_IMAGE ]]; then
	BASE_IMAGE=$("$REPO/images/base/build-base.sh" | last_line)
	BASE_IMAGE=${BASE_IMAGE#BASE_IMAGE=}
elif ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
	echo "build-images: base image $BASE_IMAGE is not in the local engine and nothing is pulled here; " \
		"load it first (docker load/import) or omit --base-image to build the local debootstrap base" >&2
	exit 1
fi

BASE_IMAGE_ID=$("$DOCKER" image inspect --format '{{.Id}}' "$BASE_IMAGE")

# The wheels must match the base image's interpreter and C library, so ask the image itself.
read -r PY_VERSION GLIBC < <("$DOCKER" run --rm --network none --user 65534 --entrypoint python3 "$BASE_IMAGE" -c \
	'import os, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}", os.confstr("CS_GNU_LIBC_VERSION").split()[1])')
say "base $BASE_IMAGE: Python $PY_VERSION, glibc $GLIBC; runtime variant $VARIANT"

# Link (or copy, across filesystems) the cached wheelhouse into the build context.
stage_wheels() {
	local context=$1 wheelhouse=$2
	rm -rf "$context/.wheels"
	mkdir -p "$context/.wheels"
	cp -l "$wheelhouse"/*.whl "$context/.wheels/" 2>/dev/null || cp "$wheelhouse"/*.whl "$context/.wheels/"
	# Generated content: keep it out of git without touching any tracked .gitignore.
	echo '*' >"$context/.wheels/.gitignore"
}

# build NAME BUILD_ARG... : prints the image ref (DOCKERFILE: another Dockerfile of the context;
# CONTEXT: another folder of images/, the image keeping NAME)
build() {
	local name=$1
	shift
	local context=$REPO/images/${CONTEXT:-$name} args=() tag ref start dockerfile=${DOCKERFILE:-Dockerfile}
	# The tag also covers the base image's ID: a re-made base under the same name must give new tags.
	local -a tag_args=("BASE_IMAGE_ID=$BASE_IMAGE_ID")
	for kv in "$@"; do args+=(--build-arg "$kv"); tag_args+=("$kv"); done
	tag=$(cd "$REPO" && "$PY" -c 'import sys
from pathlib import Path
from agent_sandbox_pulumi.sandbox_iac.content_tag import content_tag
print(content_tag(Path(sys.argv[1]), dict(a.split("=", 1) for a in sys.argv[2:])))' "$context" "${tag_args[@]}")
	ref=agent-sandbox/$name:$tag
	if "$DOCKER" image inspect "$ref" >/dev/null 2>&1; then
		say "$ref already built"
	else
		start=$SECONDS
		say "building $ref"
		DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} nice -n 10 "$DOCKER" build --network none --quiet \
			"${args[@]}" --build-arg REQUIRE_WHEELHOUSE=1 --file "$context/$dockerfile" \
			--label "org.opencontainers.image.title=agent-sandbox-$name" \
			--label "org.opencontainers.image.revision=$tag" \
			--tag "$ref" "$context" >&2
		say "built $ref in $((SECONDS - start))s"
	fi
	say "$ref: $("$DOCKER" image inspect -f '{{.Size}}' "$ref" | awk '{printf "%.0f MB", $1/1e6}')"
	echo "$ref"
}

# One build at a time per machine: the staged .wheels/ folders are shared by every caller.
mkdir -p "$CACHE_DIR"
exec {lockfd}>"$CACHE_DIR/.images-build.lock"
flock -w 3600 "$lockfd"

# The runtime's wheelhouse always holds both variants' wheels: .wheels/ then suits any VARIANT, also
# when the Pulumi program builds this context itself (default VARIANT=full) after a minimal `make images`.
runtime_reqs=("$REPO/images/runtime/requirements.txt" "$REPO/images/runtime/requirements-datascience.txt")
export PIP_PYTHON=$PY
stage_wheels "$REPO/images/runtime" "$("$REPO/images/base/wheelhouse.sh" "$PY_VERSION" "$GLIBC" "${runtime_reqs[@]}" | last_line)"
runtime_ref=$(build runtime "BASE_IMAGE=$BASE_IMAGE" "VARIANT=$VARIANT")
if [[ $ROUTER == python ]]; then
	stage_wheels "$REPO/images/router" "$("$REPO/images/base/wheelhouse.sh" "$PY_VERSION" "$GLIBC" "$REPO/images/router/requirements.txt" | last_line)"
	router_ref=$(build router "BASE_IMAGE=$BASE_IMAGE")
else
	# The static binary needs no base image (nothing of it is in the image): its tag follows the
	# binary itself, which .build/ holds.
	binary=$("$REPO/images/router-go/build.sh" | last_line)
	mkdir -p "$REPO/images/router-go/.build"
	cp -f "$binary" "$REPO/images/router-go/.build/sandbox-router"
	router_ref=$(BASE_IMAGE_ID=none DOCKERFILE=Dockerfile.offline CONTEXT=router-go build router)
fi

if [[ -n $SAVE_DIR ]]; then
	mkdir -p "$SAVE_DIR"
	for pair in "runtime=$runtime_ref" "router=$router_ref"; do
		name=${pair%%=*} ref=${pair#*=}
		archive=$SAVE_DIR/${name}-${ref##*:}.tar
		if [[ ! -s $archive ]]; then
			"$DOCKER" save --output "$archive.tmp" "$ref"
			chmod 0644 "$archive.tmp"
			mv "$archive.tmp" "$archive"
		fi
		say "saved $ref to $archive ($(du -h "$archive" | cut -f1))"
		echo "${name}_archive=$archive"
	done
fi
echo "runtime=$runtime_ref"
echo "router=$router_ref"
