#!/usr/bin/env bash
# Download the binary wheels an image needs, on the host, for the image's Python and glibc.
#
#   images/base/wheelhouse.sh PYTHON_VERSION GLIBC_VERSION REQUIREMENTS_FILE...
#   e.g. images/base/wheelhouse.sh 3.11 2.36 images/runtime/requirements.txt
#
# Prints the wheelhouse directory as its last line: $CACHE_DIR/wheels/<hash>, where the hash covers the
# requirement files' contents and the target (Python, glibc, architecture), so a second call is instant.
# Only wheels (--only-binary=:all:), so the image build never compiles. The host's pip does the TLS
# (its trust store has the intercepting proxy's CA); the image build then installs with --no-index.
# PIP_PYTHON picks the interpreter whose pip downloads (default: python3).
set -euo pipefail

[[ $# -ge 3 ]] || { echo "usage: $0 PYTHON_VERSION GLIBC_VERSION REQUIREMENTS_FILE..." >&2; exit 2; }
PY_VERSION=$1 GLIBC=$2
shift 2
[[ $PY_VERSION =~ ^3\.[0-9]+$ ]] || { echo "wheelhouse: PYTHON_VERSION=$PY_VERSION is not like 3.11" >&2; exit 2; }
[[ $GLIBC =~ ^2\.[0-9]+$ ]] || { echo "wheelhouse: GLIBC_VERSION=$GLIBC is not like 2.36" >&2; exit 2; }
for req in "$@"; do [[ -r $req ]] || { echo "wheelhouse: requirements file $req is missing" >&2; exit 2; }; done

CACHE_DIR=${CACHE_DIR:-/var/cache/agent-sandbox-iac}
PIP_PYTHON=${PIP_PYTHON:-python3}
ARCH=$(uname -m)

# manylinux2014 expands to manylinux_2_17 and older; newer glibc tags are listed one by one up to the image's.
platforms=(--platform "manylinux2014_$ARCH")
for ((minor = 18; minor <= ${GLIBC#2.}; minor++)); do platforms+=(--platform "manylinux_2_${minor}_$ARCH"); done
abi=cp${PY_VERSION/./}

key=$( { echo "v1 $PY_VERSION $GLIBC $ARCH"; for req in "$@"; do sort "$req"; done; } | sha256sum | cut -c1-16)
dest=$CACHE_DIR/wheels/$key
if [[ -e $dest/.complete ]]; then
	echo "wheelhouse: cached $dest ($(find "$dest" -name '*.whl' | wc -l) wheels)" >&2
	echo "$dest"
	exit 0
fi

mkdir -p "$CACHE_DIR/wheels"
exec {lockfd}>"$CACHE_DIR/wheels/.lock-$key"
flock -w 1800 "$lockfd"
if [[ ! -e $dest/.complete ]]; then
	tmp=$(mktemp -d "$CACHE_DIR/wheels/.tmp-$key.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	reqs=()
	for req in "$@"; do reqs+=(-r "$req"); done
	echo "wheelhouse: downloading wheels for cp$PY_VERSION glibc $GLIBC $ARCH (${*}) into $dest" >&2
	start=$SECONDS
	# --no-deps is not used: transitive wheels are needed offline. PIP_FIND_LINKS from the host's
	# environment is ignored so the wheelhouse only holds what the index serves for these pins.
	PIP_FIND_LINKS="" "$PIP_PYTHON" -m pip download --disable-pip-version-check --quiet --only-binary=:all: \
		--implementation cp --python-version "$PY_VERSION" --abi "$abi" "${platforms[@]}" \
		--dest "$tmp" "${reqs[@]}" >&2
	touch "$tmp/.complete"
	rm -rf "$dest"
	mv "$tmp" "$dest"
	trap - EXIT
	echo "wheelhouse: $(find "$dest" -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1), in $((SECONDS - start))s" >&2
fi
echo "$dest"
