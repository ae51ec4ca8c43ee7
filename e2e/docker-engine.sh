#!/usr/bin/env bash
# Make a Docker engine available on this machine, idempotently, and stop only what we started.
#
#   e2e/docker-engine.sh [start]   install Debian's docker.io when dockerd is absent, start a dedicated
#                                  containerd + dockerd in the background unless an engine already answers,
#                                  wait until `docker info` answers; prints what it did, last line DOCKER=<client>
#   e2e/docker-engine.sh stop      stop the dockerd/containerd this script started (by PID file), nothing else
#   e2e/docker-engine.sh status    say whether an engine answers and who started it
#   e2e/docker-engine.sh client    print the docker client path that talks to this engine
#
# It can also be sourced (`. e2e/docker-engine.sh`) for the functions docker_engine_start/_stop/_client.
#
# Why these choices:
# - Debian's engine is 20.10 (API 1.41). /usr/local/bin/docker on these machines is a 28.x client only;
#   we use Debian's own /usr/bin/docker client, which matches the daemon exactly.
# - dockerd gets its own containerd (own socket, root and state dirs). Otherwise dockerd attaches to any
#   containerd at /run/containerd/containerd.sock, e.g. one a Kubernetes node runs, and would break when
#   that one is stopped or reconfigured.
# - By default dockerd runs with --iptables=false --ip-forward=false: enabling ip_forward makes dockerd set
#   the FORWARD policy to DROP, which would cut other engineers' bridged pod traffic. Published ports on
#   127.0.0.1 still work through docker-proxy; containers get no outbound NAT, which builds here don't need
#   (no network from inside builds). DOCKER_ENGINE_IPTABLES=true restores Docker's defaults.
set -euo pipefail

CACHE_DIR=${CACHE_DIR:-/var/cache/agent-sandbox-iac}
DOCKER_ENGINE_RUN_DIR=${DOCKER_ENGINE_RUN_DIR:-/run/agent-sandbox-docker}
DOCKER_ENGINE_DATA_DIR=${DOCKER_ENGINE_DATA_DIR:-/var/lib/docker}
DOCKER_ENGINE_LOG_DIR=${DOCKER_ENGINE_LOG_DIR:-$CACHE_DIR/logs}
DOCKER_ENGINE_IPTABLES=${DOCKER_ENGINE_IPTABLES:-false}
DOCKER_ENGINE_WAIT_SECONDS=${DOCKER_ENGINE_WAIT_SECONDS:-90}
DOCKER_ENGINE_SOCKET=${DOCKER_ENGINE_SOCKET:-/var/run/docker.sock}

_de_say() { echo "docker-engine: $*" >&2; }

_DE_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DOCKER_ENGINE_CAPFILTER=$_DE_HERE/engine/runc_capfilter.py
# Every capability bit the kernel knows (cap_last_cap) set in a mask: what root normally has.
_de_full_capmask() { printf '%x' $(( (1 << ($(cat /proc/sys/kernel/cap_last_cap) + 1)) - 1 )); }

# True when root's bounding set lacks a capability (this machine: CAP_SYS_RESOURCE). Then
# `docker run --privileged` (kind's nodes) fails in runc with "unable to apply caps" unless the
# engine's default runtime drops what cannot be granted (e2e/engine/runc_capfilter.py).
docker_engine_needs_capfilter() {
	local bnd
	bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
	[[ $(printf '%x' "0x$bnd") != "$(_de_full_capmask)" ]]
}

# Whether the answering engine's default runtime is the capability filter.
_de_engine_has_capfilter() {
	DOCKER_HOST=unix://$DOCKER_ENGINE_SOCKET timeout 10 "$(docker_engine_client)" info \
		--format '{{.DefaultRuntime}}' 2>/dev/null | grep -qx agent-sandbox-runc
}

# The client that matches the daemon: Debian's when installed, else whatever `docker` is on PATH.
docker_engine_client() {
	if [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker; else command -v docker || echo docker; fi
}

_de_answers() {
	local client
	client=$(docker_engine_client)
	DOCKER_HOST=unix://$DOCKER_ENGINE_SOCKET timeout 10 "$client" info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

# A PID file is ours and live only when the PID runs the expected binary (guards against reused PIDs).
_de_pid_alive() {
	local pidfile=$1 name=$2 pid
	[[ -s $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/cmdline ]] || return 1
	# cmdline, not comm: right after the fork it still reads "setsid <name> ...", then "<name> ...".
	[[ " $(tr '\0' ' ' <"/proc/$pid/cmdline") " =~ [\ /]$name\  ]]
}

_de_install() {
	if command -v dockerd >/dev/null && command -v containerd >/dev/null && [[ -x /usr/bin/docker ]]; then
		return 0
	fi
	[[ $(id -u) == 0 ]] || { _de_say "dockerd is absent and installing it needs root (run as root)"; return 1; }
	_de_say "installing Debian's docker.io (engine 20.10) with apt-get"
	# policy-rc.d style start prevention is not needed: without an init system invoke-rc.d starts nothing.
	# Retried: a concurrent apt run may hold the lists lock (DPkg::Lock::Timeout covers dpkg's lock only).
	local attempt
	for attempt in 1 2 3 4 5 6; do
		apt-get -o DPkg::Lock::Timeout=600 update -q >&2 && break
		[[ $attempt == 6 ]] && { _de_say "apt-get update kept failing"; return 1; }
		sleep 10
	done
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
		docker.io >&2
}

_de_write_containerd_config() {
	local cfg=$DOCKER_ENGINE_RUN_DIR/containerd.toml
	cat >"$cfg" <<EOF
# Dedicated containerd for the agent-sandbox dockerd (written by e2e/docker-engine.sh).
version = 2
root = "$DOCKER_ENGINE_DATA_DIR/agent-sandbox-containerd"
state = "$DOCKER_ENGINE_RUN_DIR/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$DOCKER_ENGINE_RUN_DIR/containerd.sock"
[ttrpc]
  address = "$DOCKER_ENGINE_RUN_DIR/containerd.sock.ttrpc"
[debug]
  address = ""
EOF
	echo "$cfg"
}

# Running and not a zombie. Only for a child we just forked: until it has exec'd, its cmdline is still
# the forked shell's, so _de_pid_alive's name check would race.
_de_child_running() {
	local state
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z ]]
}

_de_wait_for() {
	local what=$1 check=$2 pid=$3 log=$4 i
	for ((i = 0; i < DOCKER_ENGINE_WAIT_SECONDS * 2; i++)); do
		if $check; then return 0; fi
		if ! _de_child_running "$pid"; then
			_de_say "$what exited during startup; last lines of $log:"
			tail -n 20 "$log" >&2 || true
			return 1
		fi
		sleep 0.5
	done
	_de_say "$what did not become ready in ${DOCKER_ENGINE_WAIT_SECONDS}s; last lines of $log:"
	tail -n 20 "$log" >&2 || true
	return 1
}

_de_containerd_ready() { [[ -S $DOCKER_ENGINE_RUN_DIR/containerd.sock ]]; }

docker_engine_start() {
	if _de_answers && docker_engine_needs_capfilter && ! _de_engine_has_capfilter; then
		if _de_pid_alive "$DOCKER_ENGINE_RUN_DIR/dockerd.pid" dockerd; then
			_de_say "restarting our dockerd with the capability-filtering runtime (root lacks capabilities that --privileged asks for)"
			_de_stop_pid "$DOCKER_ENGINE_RUN_DIR/dockerd.pid" dockerd
		else
			_de_say "WARNING: the running engine is not ours and root lacks capabilities that 'docker run --privileged' asks for;"
			_de_say "  kind nodes will fail with 'unable to apply caps'. Fix: register $DOCKER_ENGINE_CAPFILTER as its default runtime"
			_de_say "  (dockerd --add-runtime agent-sandbox-runc=$DOCKER_ENGINE_CAPFILTER --default-runtime agent-sandbox-runc)"
		fi
	fi
	if _de_answers; then
		if _de_pid_alive "$DOCKER_ENGINE_RUN_DIR/dockerd.pid" dockerd; then
			_de_say "engine already running (started earlier by this script, pid $(<"$DOCKER_ENGINE_RUN_DIR/dockerd.pid"))"
		else
			_de_say "engine already running (not started by this script; left as is)"
		fi
		echo "DOCKER=$(docker_engine_client)"
		return 0
	fi
	_de_install
	[[ $(id -u) == 0 ]] || { _de_say "starting dockerd needs root"; return 1; }
	mkdir -p "$DOCKER_ENGINE_RUN_DIR" "$DOCKER_ENGINE_LOG_DIR" "$DOCKER_ENGINE_DATA_DIR"
	# Serialise concurrent starters (several engineers/tests may call this at once).
	exec {lockfd}>"$DOCKER_ENGINE_RUN_DIR/start.lock"
	flock -w 300 "$lockfd"
	if _de_answers; then
		_de_say "engine came up while waiting for the start lock"
		flock -u "$lockfd"
		echo "DOCKER=$(docker_engine_client)"
		return 0
	fi

	local ctr_log=$DOCKER_ENGINE_LOG_DIR/containerd-docker.log dockerd_log=$DOCKER_ENGINE_LOG_DIR/dockerd.log
	if _de_pid_alive "$DOCKER_ENGINE_RUN_DIR/containerd.pid" containerd; then
		_de_say "dedicated containerd already running (pid $(<"$DOCKER_ENGINE_RUN_DIR/containerd.pid"))"
	else
		local cfg
		cfg=$(_de_write_containerd_config)
		rm -f "$DOCKER_ENGINE_RUN_DIR/containerd.sock"
		# setsid: the daemons must outlive the calling shell, make, or pytest process group.
		setsid containerd --config "$cfg" >>"$ctr_log" 2>&1 </dev/null {lockfd}>&- &
		echo $! >"$DOCKER_ENGINE_RUN_DIR/containerd.pid"
		_de_say "started containerd pid $! (config $cfg, log $ctr_log)"
		_de_wait_for containerd _de_containerd_ready "$(<"$DOCKER_ENGINE_RUN_DIR/containerd.pid")" "$ctr_log" ||
			{ flock -u "$lockfd"; return 1; }
	fi

	local net_flags=()
	if [[ $DOCKER_ENGINE_IPTABLES != true ]]; then net_flags=(--iptables=false --ip-forward=false); fi
	local runtime_flags=()
	if docker_engine_needs_capfilter; then
		# a copy outside the clone: the engine outlives the checkout that started it
		mkdir -p "$DOCKER_ENGINE_RUN_DIR"
		install -m 0755 "$DOCKER_ENGINE_CAPFILTER" "$DOCKER_ENGINE_RUN_DIR/agent-sandbox-runc"
		runtime_flags=(--add-runtime "agent-sandbox-runc=$DOCKER_ENGINE_RUN_DIR/agent-sandbox-runc" --default-runtime agent-sandbox-runc)
		_de_say "root lacks capabilities in its bounding set: default runtime agent-sandbox-runc drops them before runc ($DOCKER_ENGINE_CAPFILTER)"
	fi
	setsid dockerd \
		--host "unix://$DOCKER_ENGINE_SOCKET" \
		--containerd "$DOCKER_ENGINE_RUN_DIR/containerd.sock" \
		--data-root "$DOCKER_ENGINE_DATA_DIR" \
		--exec-root "$DOCKER_ENGINE_RUN_DIR/exec" \
		--pidfile "$DOCKER_ENGINE_RUN_DIR/dockerd.daemon.pid" \
		"${net_flags[@]}" "${runtime_flags[@]}" >>"$dockerd_log" 2>&1 </dev/null {lockfd}>&- &
	echo $! >"$DOCKER_ENGINE_RUN_DIR/dockerd.pid"
	_de_say "started dockerd pid $! (${net_flags[*]:-docker default networking}, log $dockerd_log)"
	_de_wait_for dockerd _de_answers "$(<"$DOCKER_ENGINE_RUN_DIR/dockerd.pid")" "$dockerd_log" ||
		{ flock -u "$lockfd"; return 1; }
	flock -u "$lockfd"
	_de_say "engine ready: $(DOCKER_HOST=unix://$DOCKER_ENGINE_SOCKET "$(docker_engine_client)" version --format 'server {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}')"
	echo "DOCKER=$(docker_engine_client)"
}

_de_stop_pid() {
	local pidfile=$1 name=$2 pid i
	if ! _de_pid_alive "$pidfile" "$name"; then
		[[ -e $pidfile ]] && rm -f "$pidfile"
		_de_say "$name: not started by this script (no live PID file); nothing to stop"
		return 0
	fi
	pid=$(<"$pidfile")
	kill -TERM "$pid"
	for ((i = 0; i < 60; i++)); do
		[[ -d /proc/$pid ]] || break
		sleep 0.5
	done
	if [[ -d /proc/$pid ]]; then
		_de_say "$name pid $pid ignored SIGTERM for 30s; sending SIGKILL"
		kill -KILL "$pid" || true
	fi
	rm -f "$pidfile"
	_de_say "stopped $name pid $pid"
}

docker_engine_stop() {
	_de_stop_pid "$DOCKER_ENGINE_RUN_DIR/dockerd.pid" dockerd
	_de_stop_pid "$DOCKER_ENGINE_RUN_DIR/containerd.pid" containerd
}

docker_engine_status() {
	if _de_answers; then
		if _de_pid_alive "$DOCKER_ENGINE_RUN_DIR/dockerd.pid" dockerd; then
			echo "running (started by e2e/docker-engine.sh, pid $(<"$DOCKER_ENGINE_RUN_DIR/dockerd.pid"))"
		else
			echo "running (not started by e2e/docker-engine.sh)"
		fi
	else
		echo "not running"
		return 1
	fi
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	case ${1:-start} in
	start) docker_engine_start ;;
	stop) docker_engine_stop ;;
	status) docker_engine_status ;;
	client) docker_engine_client ;;
	*)
		echo "usage: $0 [start|stop|status|client]" >&2
		exit 2
		;;
	esac
fi
