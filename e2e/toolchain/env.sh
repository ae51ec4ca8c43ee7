# Source this file to use the toolchain built by `make toolchain-pulumi` (and the cluster toolchain's
# $CACHE_DIR/bin symlinks):   source e2e/toolchain/env.sh
# Exports PATH, PULUMI_HOME and the PULUMI_* settings for offline use; prints them unless
# TOOLCHAIN_ENV_QUIET=1. Existing values of PULUMI_CONFIG_PASSPHRASE and PULUMI_PYTHON_CMD are kept.
# Works from bash and zsh; executing it (instead of sourcing) just prints the export lines.

_toolchain_env_here="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
CACHE_DIR="${CACHE_DIR:-/var/cache/agent-sandbox-iac}"
TOOLCHAIN_PULUMI_VERSION="3.259.0"
TOOLCHAIN_PULUMI_BIN="$CACHE_DIR/pulumi/$TOOLCHAIN_PULUMI_VERSION/bin"

case ":$PATH:" in
*":$CACHE_DIR/bin:"*) ;;
*) PATH="$CACHE_DIR/bin:$PATH" ;;
esac
PULUMI_HOME="$CACHE_DIR/pulumi/home"
PULUMI_SKIP_UPDATE_CHECK=true
PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-}"
# Programs run by the language host use the project's venv unless Pulumi.yaml names a virtualenv.
if [ -z "${PULUMI_PYTHON_CMD:-}" ] && [ -x "$_toolchain_env_here/../../.venv/bin/python" ]; then
	PULUMI_PYTHON_CMD="$(cd "$_toolchain_env_here/../.." && pwd)/.venv/bin/python"
fi
export CACHE_DIR PATH PULUMI_HOME PULUMI_SKIP_UPDATE_CHECK PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION
export PULUMI_CONFIG_PASSPHRASE TOOLCHAIN_PULUMI_VERSION TOOLCHAIN_PULUMI_BIN
[ -n "${PULUMI_PYTHON_CMD:-}" ] && export PULUMI_PYTHON_CMD

if [ ! -x "$TOOLCHAIN_PULUMI_BIN/pulumi" ]; then
	echo "env.sh: no Pulumi toolchain at $TOOLCHAIN_PULUMI_BIN; build it with: make toolchain-pulumi" >&2
fi
if [ "${TOOLCHAIN_ENV_QUIET:-0}" != 1 ]; then
	for _v in PATH PULUMI_HOME PULUMI_SKIP_UPDATE_CHECK PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION \
		PULUMI_CONFIG_PASSPHRASE PULUMI_PYTHON_CMD; do
		eval "[ -n \"\${$_v+x}\" ] && printf 'export %s=%q\n' \"$_v\" \"\${$_v}\""
	done
	unset _v
fi
unset _toolchain_env_here
