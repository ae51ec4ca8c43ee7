#!/usr/bin/env bash
# Build the Pulumi toolchain offline from Go modules and PyPI, cached by version under $CACHE_DIR:
#   $CACHE_DIR/pulumi/<ver>/bin/pulumi                     CLI (wrapper module around pkg/v3, version ldflag set)
#   $CACHE_DIR/pulumi/<ver>/bin/pulumi-language-python     language host (ours, Python; see pulumi_language_python/)
#   $CACHE_DIR/pulumi/<ver>/bin/pulumi-language-python-exec, pulumi-resource-pulumi-python (from the sdk/v3 module)
#   $CACHE_DIR/pulumi/<ver>/bin/pulumi-language-yaml       Pulumi YAML language host (-> $CACHE_DIR/pulumi-language-yaml/<ver>/)
#   $CACHE_DIR/pulumi-resource-<name>/<ver>/pulumi-resource-<name>   provider plugins
#   $CACHE_DIR/pulumi/home                                 PULUMI_HOME with the providers installed
#   $CACHE_DIR/bin/pulumi                                  stable symlink
# Idempotent and resumable: each step checks its output first; a half-built step restarts cleanly.
# Usage: e2e/toolchain/pulumi.sh            (source e2e/toolchain/env.sh afterwards to use it)
#        WITH_YAML=0 e2e/toolchain/pulumi.sh  skips the YAML language host (only examples/yaml needs
#        it; it pins another pulumi/pkg, a second large compile): what `make up` asks for
# Measured on the 2-core machine (2026-11-26): cold with an empty Go build cache 902 s (CLI 341 s,
# language host 11 s, kubernetes provider 547 s; module downloads ~80 s more on an empty module cache);
# ~41 min wall when run alongside the Kubernetes compile; empty CACHE_DIR + warm Go cache 50 s; warm 2 s.
# Not buildable here (module refused by the Go module proxy): pulumi-resource-command, -docker; the
# upstream Go language host (replaced by pulumi_language_python/).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${CACHE_DIR:-/var/cache/agent-sandbox-iac}"
export PATH="/usr/local/go/bin:$PATH"

# --- pinned versions: providers must equal what the PyPI packages request (their pulumi-plugin.json) ---
PULUMI_VERSION=3.259.0
PULUMI_CLIPBOARD_REPLACE="github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e"
K8S_VERSION=4.25.0
K8S_PSEUDO=v4.0.0-20260115033456-f47bc2d6f199        # provider/v4 has no tags; this is the v4.25.0 commit
COMMAND_VERSION=1.2.1
COMMAND_PSEUDO=v0.0.0-20260303235922-7f3eb6f3b77c     # provider module at the v1.2.1 commit
DOCKER_VERSION=5.1.0
DOCKER_PSEUDO=v5.0.0-20260626165050-e944612c4c97      # provider/v5 at the v5.1.0 commit
LANGHOST_PSEUDO=v3.0.0-20260819165155-0ac56e876614    # pulumi-language-python/v3 at the v3.259.0 commit
# Pulumi YAML's language host, for programs such as examples/yaml. The proxy serves v1.11.1 and
# v1.25.0 (later ones are refused); v1.25.0 requires pkg/sdk v3.206.0, which the proxy serves, and
# speaks the language-host gRPC protocol the v3.259 engine expects (it is backward compatible).
YAML_VERSION=1.25.0

ROOT="$CACHE_DIR/pulumi/$PULUMI_VERSION"
BIN="$ROOT/bin"
BUILD="$CACHE_DIR/pulumi/build"
LOGS="$CACHE_DIR/logs"
export PULUMI_HOME="$CACHE_DIR/pulumi/home"
export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local
# the same module and build caches as cluster.sh: one download of the modules both need
export GOMODCACHE=${GOMODCACHE:-$CACHE_DIR/go/mod} GOCACHE=${GOCACHE:-$CACHE_DIR/go/build}
mkdir -p "$BIN" "$BUILD" "$LOGS" "$PULUMI_HOME" "$CACHE_DIR/bin"

STATUS_FILE="$ROOT/STATUS"   # one line per artefact: name version built|missing reason
: >"$STATUS_FILE.new"
BUILT_SOMETHING=0
T0=$(date +%s)

step() { printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
note() { printf '    %s\n' "$*"; }
status() { echo "$*" >>"$STATUS_FILE.new"; }
elapsed() { echo $(( $(date +%s) - $1 )); }

# Runs a long go command niced, logging everything and printing a heartbeat every 30 s.
go_logged() {
	local log="$1"; shift
	note "go $* (log: $log)"
	( nice -n 10 go "$@" ) >"$log" 2>&1 &
	local pid=$! start; start=$(date +%s)
	while kill -0 "$pid" 2>/dev/null; do
		sleep 5
		if (( ($(date +%s) - start) % 30 < 5 )); then
			note "... $(elapsed "$start")s, $(wc -l <"$log") log lines, last: $(tail -n1 "$log" | cut -c1-100)"
		fi
	done
	if ! wait "$pid"; then
		tail -n 30 "$log" >&2
		echo "FAILED: go $* (full log: $log)" >&2
		return 1
	fi
}

# Prints 'ok' when the module version is served by the proxy, else the refusal (a 403 is final).
module_available() {
	local out
	if out=$(cd /tmp && timeout 120 go list -m "$1" 2>&1); then echo ok; else echo "$out" | tail -n 2 | tr '\n' ' '; fi
}

module_dir() { (cd /tmp && go mod download -json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))'); }

# ------------------------------------------------------------------------------------------------
step "1/7 pulumi CLI v$PULUMI_VERSION"
if [[ -x "$BIN/pulumi" ]] && [[ "$("$BIN/pulumi" version 2>/dev/null)" == "v$PULUMI_VERSION" ]]; then
	note "cached: $BIN/pulumi"
else
	BUILT_SOMETHING=1; t=$(date +%s)
	W="$BUILD/cli-$PULUMI_VERSION"; mkdir -p "$W"
	# go install pkg@version refuses modules with replace directives, so build through a wrapper module
	# that mirrors pkg/go.mod's one non-local replace.
	cat >"$W/go.mod" <<EOF
module local.invalid/pulumi-cli-build

go 1.26

require (
	github.com/pulumi/pulumi/pkg/v3 v$PULUMI_VERSION
	github.com/pulumi/pulumi/sdk/v3 v$PULUMI_VERSION
)

replace github.com/atotto/clipboard => $PULUMI_CLIPBOARD_REPLACE
EOF
	printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"\n' >"$W/tools.go"
	(cd "$W" && go_logged "$LOGS/pulumi-cli-tidy.log" mod tidy)
	(cd "$W" && go_logged "$LOGS/pulumi-cli-build.log" build -v -trimpath -tags osusergo,grpcnotrace \
		-ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
		-o "$BIN/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
	mv "$BIN/pulumi.tmp" "$BIN/pulumi"
	note "built in $(elapsed "$t")s"
fi
ln -sfn "$BIN/pulumi" "$CACHE_DIR/bin/pulumi"
status "pulumi $("$BIN/pulumi" version) built"

# ------------------------------------------------------------------------------------------------
step "2/7 SDK scripts from github.com/pulumi/pulumi/sdk/v3@v$PULUMI_VERSION"
if [[ -f "$BIN/pulumi-language-python-exec" && -x "$BIN/pulumi-resource-pulumi-python" ]]; then
	note "cached"
else
	BUILT_SOMETHING=1
	SDK_DIR=$(module_dir "github.com/pulumi/pulumi/sdk/v3@v$PULUMI_VERSION")
	install -m 0755 "$SDK_DIR/python/cmd/pulumi-language-python-exec" "$BIN/"
	install -m 0755 "$SDK_DIR/python/dist/pulumi-resource-pulumi-python" "$BIN/"
fi
status "pulumi-language-python-exec v$PULUMI_VERSION built"

# ------------------------------------------------------------------------------------------------
step "3/7 Python language host"
avail=$(module_available "github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3@$LANGHOST_PSEUDO")
if [[ "$avail" == ok ]]; then
	note "the upstream Go host is served now; this script still installs the Python host (see README)"
else
	note "upstream Go host not served by the module proxy ($avail); installing ours"
fi
VENV="$ROOT/langhost-venv"
SRC_HASH=$(cd "$HERE" && cat pulumi_language_python/*.py | sha256sum | cut -c1-16)
if [[ -f "$VENV/.installed-$SRC_HASH" && -x "$BIN/pulumi-language-python" ]]; then
	note "cached: $VENV"
else
	BUILT_SOMETHING=1; t=$(date +%s)
	if [[ ! -f "$VENV/.pip-done" ]]; then
		rm -rf "$VENV"
		python3 -m venv "$VENV"
		"$VENV/bin/pip" install -q --disable-pip-version-check "pulumi==$PULUMI_VERSION"
		touch "$VENV/.pip-done"
	fi
	SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
	rm -rf "$SITE/pulumi_language_python" "$VENV"/.installed-*
	cp -r "$HERE/pulumi_language_python" "$SITE/"
	rm -rf "$SITE/pulumi_language_python/__pycache__"
	cat >"$BIN/pulumi-language-python.tmp" <<'EOF'
#!/bin/sh
# Pulumi's python language host (a Python implementation; the Go one is not buildable offline here).
here=$(dirname "$(readlink -f "$0")")
exec "$here/../langhost-venv/bin/python" -u -m pulumi_language_python --exec "$here/pulumi-language-python-exec" "$@"
EOF
	chmod 0755 "$BIN/pulumi-language-python.tmp"
	mv "$BIN/pulumi-language-python.tmp" "$BIN/pulumi-language-python"
	touch "$VENV/.installed-$SRC_HASH"
	note "installed in $(elapsed "$t")s"
fi
status "pulumi-language-python $PULUMI_VERSION built (python implementation, source $SRC_HASH)"
# beside the CLI's link, so tools that look for the host on PATH find it too (automation/tools.py);
# the wrapper resolves its own link, so the venv next to the real file is used
ln -sfn "$BIN/pulumi-language-python" "$CACHE_DIR/bin/pulumi-language-python"

# ------------------------------------------------------------------------------------------------
# install_plugin NAME VERSION BINARY: put a provider into PULUMI_HOME's plugin cache (offline, --file).
install_plugin() {
	if [[ -d "$PULUMI_HOME/plugins/resource-$1-v$2" && ! -f "$PULUMI_HOME/plugins/resource-$1-v$2.partial" ]]; then
		note "plugin resource $1 v$2 already in $PULUMI_HOME"
	else
		"$BIN/pulumi" plugin install resource "$1" "$2" --file "$3" --non-interactive
	fi
}

step "4/7 pulumi-resource-kubernetes v$K8S_VERSION"
K8S_OUT="$CACHE_DIR/pulumi-resource-kubernetes/$K8S_VERSION/pulumi-resource-kubernetes"
if [[ -x "$K8S_OUT" ]]; then
	note "cached: $K8S_OUT"
else
	BUILT_SOMETHING=1; t=$(date +%s)
	W="$BUILD/kubernetes-$K8S_VERSION"; rm -rf "$W"; mkdir -p "$W" "$(dirname "$K8S_OUT")"
	note "fetching provider/v4@$K8S_PSEUDO and sdk/v4@v$K8S_VERSION"
	cp -r "$(module_dir "github.com/pulumi/pulumi-kubernetes/provider/v4@$K8S_PSEUDO")" "$W/provider"
	cp -r "$(module_dir "github.com/pulumi/pulumi-kubernetes/sdk/v4@v$K8S_VERSION")" "$W/sdk"   # for "=> ../sdk"
	chmod -R u+w "$W"
	# schema-embed.json and terraform-mapping-embed.json are generated (gitignored upstream).
	(cd "$W/provider/cmd/pulumi-resource-kubernetes" && VERSION="v$K8S_VERSION" go_logged "$LOGS/kubernetes-generate.log" run generate.go)
	(cd "$W/provider" && go_logged "$LOGS/kubernetes-build.log" build -v -trimpath \
		-ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=v$K8S_VERSION" \
		-o "$K8S_OUT.tmp" ./cmd/pulumi-resource-kubernetes)
	mv "$K8S_OUT.tmp" "$K8S_OUT"
	rm -rf "$W"
	note "built in $(elapsed "$t")s"
fi
install_plugin kubernetes "$K8S_VERSION" "$K8S_OUT"
status "pulumi-resource-kubernetes v$K8S_VERSION built"

# ------------------------------------------------------------------------------------------------
# try_module_provider NAME VERSION MODULE@PSEUDO PKG LDFLAG: go install a provider if its module is served.
try_module_provider() {
	local name=$1 version=$2 modver=$3 pkg=$4 ldflag=$5
	local out="$CACHE_DIR/pulumi-resource-$name/$version/pulumi-resource-$name"
	if [[ -x "$out" ]]; then
		note "cached: $out"
	else
		local avail; avail=$(module_available "$modver")
		if [[ "$avail" != ok ]]; then
			note "NOT BUILT: $modver is not served by the Go module proxy: $avail"
			status "pulumi-resource-$name v$version missing: $modver not served by the Go module proxy"
			return 0
		fi
		BUILT_SOMETHING=1
		mkdir -p "$(dirname "$out")"
		GOBIN="$(dirname "$out")" go_logged "$LOGS/$name-build.log" install -trimpath \
			-ldflags "-s -w -X $ldflag=$version" "$pkg@${modver#*@}"
	fi
	install_plugin "$name" "$version" "$out"
	status "pulumi-resource-$name v$version built"
}

step "5/7 pulumi-resource-command v$COMMAND_VERSION"
try_module_provider command "$COMMAND_VERSION" "github.com/pulumi/pulumi-command/provider@$COMMAND_PSEUDO" \
	github.com/pulumi/pulumi-command/provider/cmd/pulumi-resource-command \
	github.com/pulumi/pulumi-command/provider/pkg/version.Version

step "6/7 pulumi-resource-docker v$DOCKER_VERSION"
# Even when served, the provider needs its patched terraform-provider-docker submodule (not in any
# module zip); the fallback is images built by `make images` and passed to the program as refs.
avail=$(module_available "github.com/pulumi/pulumi-docker/provider/v5@$DOCKER_PSEUDO")
if [[ -x "$CACHE_DIR/pulumi-resource-docker/$DOCKER_VERSION/pulumi-resource-docker" ]]; then
	install_plugin docker "$DOCKER_VERSION" "$CACHE_DIR/pulumi-resource-docker/$DOCKER_VERSION/pulumi-resource-docker"
	status "pulumi-resource-docker v$DOCKER_VERSION built"
else
	note "NOT BUILT: github.com/pulumi/pulumi-docker/provider/v5@$DOCKER_PSEUDO: $avail"
	status "pulumi-resource-docker v$DOCKER_VERSION missing: provider/v5@$DOCKER_PSEUDO not served by the Go module proxy"
fi

# ------------------------------------------------------------------------------------------------
step "7/7 pulumi-language-yaml v$YAML_VERSION"
# Built as released (its own go.mod, no replace directives: go install pkg@version works), niced
# and logged with the heartbeat; a few minutes cold on 2 cores.
YAML_OUT="$CACHE_DIR/pulumi-language-yaml/$YAML_VERSION/pulumi-language-yaml"
if [[ -x "$YAML_OUT" ]]; then
	note "cached: $YAML_OUT"
elif [[ "${WITH_YAML:-1}" == 0 ]]; then
	note "skipped (WITH_YAML=0); build it with: make toolchain-pulumi"
else
	avail=$(module_available "github.com/pulumi/pulumi-yaml@v$YAML_VERSION")
	if [[ "$avail" != ok ]]; then
		note "NOT BUILT: github.com/pulumi/pulumi-yaml@v$YAML_VERSION is not served by the Go module proxy: $avail"
	else
		BUILT_SOMETHING=1; t=$(date +%s)
		mkdir -p "$(dirname "$YAML_OUT")"
		# GOBIN receives the binary only when the install succeeds, so a half-built step leaves nothing.
		GOBIN="$(dirname "$YAML_OUT")" go_logged "$LOGS/pulumi-language-yaml-build.log" install -v -trimpath \
			-ldflags "-s -w -X github.com/pulumi/pulumi-yaml/pkg/version.Version=v$YAML_VERSION" \
			"github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml@v$YAML_VERSION"
		note "built in $(elapsed "$t")s"
	fi
fi
if [[ -x "$YAML_OUT" ]]; then
	# Next to the CLI, where it looks for bundled language hosts.
	ln -sfn "$YAML_OUT" "$BIN/pulumi-language-yaml"
	status "pulumi-language-yaml v$YAML_VERSION built"
else
	status "pulumi-language-yaml v$YAML_VERSION missing: github.com/pulumi/pulumi-yaml@v$YAML_VERSION not served by the Go module proxy"
fi

# ------------------------------------------------------------------------------------------------
mv "$STATUS_FILE.new" "$STATUS_FILE"
TOTAL=$(elapsed "$T0")
KIND=$([[ $BUILT_SOMETHING == 1 ]] && echo cold || echo warm)
echo "$(date -u +%FT%TZ) $KIND ${TOTAL}s" >>"$CACHE_DIR/pulumi/build-times.log"
step "artefacts"
sed 's/^/    /' "$STATUS_FILE"
"$BIN/pulumi" plugin ls 2>/dev/null | sed 's/^/    /' || true
echo
echo "pulumi toolchain ready ($KIND build, ${TOTAL}s); use it with: source e2e/toolchain/env.sh"
