"""Checks made before a KIND cluster is created, each failing with one line that names the fix.

Covered: the Docker engine (absent, not running, or unable to run privileged containers), memory
and disk for the nodes, a kind cluster of the same name that this project did not make, and a
container that already holds a node's name. Each check is a small function over values that the
caller reads from the machine (``docker info``, ``/proc/meminfo``, ``shutil.disk_usage``), so the
unit tests can give them every bad state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from automation.errors import PreflightError

GIB = 1 << 30
# Measured here: an idle one-node cluster with the controller, router and two warm gVisor
# sandboxes uses about 2.3 GiB; each more node about 0.8 GiB; a node-image build about 1 GiB.
MEMORY_FIRST_NODE = 3 * GIB
MEMORY_EACH_MORE_NODE = 1 * GIB
# The node image is ~1.2 GiB, its build needs ~4 GiB more while it runs; each node's /var grows
# with the images it unpacks (~1.5 GiB with the runtime image).
DISK_CLUSTER = 4 * GIB
DISK_NODE_IMAGE_BUILD = 6 * GIB


@dataclass(frozen=True)
class EngineState:
    """What ``docker info`` said (or that it could not be asked)."""

    client: Optional[str]
    """Path of the docker client, None when there is none."""
    answers: bool
    server_version: str = ""
    data_root: str = "/var/lib/docker"
    default_runtime: str = "runc"
    error: str = ""


def engine_state(client: Optional[str] = None, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> EngineState:
    """Ask the engine for its version, data root and default runtime."""
    client = client or shutil.which("docker")
    if client is None:
        return EngineState(None, False, error="no docker client on PATH")
    try:
        result = run([client, "info", "--format", "{{json .}}"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return EngineState(client, False, error=str(error))
    if result.returncode != 0:
        return EngineState(client, False, error=(result.stderr or result.stdout).strip().splitlines()[-1:][0]
                           if (result.stderr or result.stdout).strip() else f"exit {result.returncode}")
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        return EngineState(client, False, error="docker info printed no JSON")
    if not info.get("ServerVersion"):
        return EngineState(client, False, error="; ".join(info.get("ServerErrors") or ["no server answered"]))
    return EngineState(client, True, info.get("ServerVersion", ""), info.get("DockerRootDir", "/var/lib/docker"),
                       info.get("DefaultRuntime", "runc"))


def check_engine(state: EngineState, needs_capfilter: bool) -> None:
    """The engine answers and can run kind's privileged nodes on this host."""
    if state.client is None:
        raise PreflightError("no Docker engine: the `docker` command is not installed. Fix: `make docker-engine` "
                             "(installs and starts Debian's docker.io) or install Docker Engine yourself")
    if not state.answers:
        raise PreflightError(f"the Docker engine is not running ({state.error}). Fix: `make docker-engine` "
                             "(starts Debian's dockerd), or start your own engine and check `docker info`")
    if needs_capfilter and state.default_runtime != "agent-sandbox-runc":
        raise PreflightError(
            "this host's root lacks capabilities that `docker run --privileged` asks for (kind nodes fail with "
            "'unable to apply caps'), and the running engine is not ours. Fix: stop it and run `make docker-engine`, "
            "which registers e2e/engine/runc_capfilter.py as the default runtime")


def mem_available(meminfo: str) -> int:
    """Bytes of MemAvailable in a /proc/meminfo text."""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise PreflightError("cannot read MemAvailable from /proc/meminfo")


def check_memory(available: int, nodes: int) -> None:
    need = MEMORY_FIRST_NODE + max(nodes - 1, 0) * MEMORY_EACH_MORE_NODE
    if available < need:
        raise PreflightError(f"not enough memory for a {nodes}-node KIND cluster: {available / GIB:.1f} GiB available, "
                             f"{need / GIB:.1f} GiB needed. Fix: free memory, or use fewer nodes")


def check_disk(free: int, path: str, need: int, what: str) -> None:
    if free < need:
        raise PreflightError(f"not enough disk for {what}: {free / GIB:.1f} GiB free under {path}, "
                             f"{need / GIB:.1f} GiB needed. Fix: free space there (e.g. `docker system prune` "
                             f"removes unused images), or move the engine's data root")


def check_cluster_name(name: str, existing_clusters: Sequence[str], created_by_us: bool, has_runsc: bool) -> bool:
    """True when a kind cluster of this name exists and can be reused; raise when it cannot."""
    if name not in existing_clusters:
        return False
    if created_by_us or has_runsc:
        return True
    raise PreflightError(
        f"a kind cluster named {name!r} already exists, was not created by `make up` and has no gVisor runtime "
        f"(runsc) on its nodes. Fix: delete it (`kind delete cluster --name {name}`) or use another name "
        f"(`pulumi config set agent-sandbox:clusterName <name>` or --config clusterName=<name>)")


def check_node_names(names: Sequence[str], containers: Sequence[str]) -> None:
    """No container already holds a node's name (kind would fail half way)."""
    taken = sorted(set(names) & set(containers))
    if taken:
        raise PreflightError(f"container name(s) {', '.join(taken)} are taken by containers that are not nodes of a "
                             f"kind cluster. Fix: remove them (`docker rm -f {' '.join(taken)}`) or set another "
                             f"agent-sandbox:clusterName")


def node_container_names(cluster: str, workers: int) -> list[str]:
    """The container names kind gives a cluster's nodes."""
    return [f"{cluster}-control-plane"] + [f"{cluster}-worker" + ("" if i == 0 else str(i + 1)) for i in range(workers)]


def read_meminfo(path: Path = Path("/proc/meminfo")) -> str:
    return path.read_text()


def disk_free(path: str) -> int:
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def root_lacks_capabilities(status: Optional[str] = None, last_cap: Optional[int] = None) -> bool:
    """True when this process's bounding set lacks a capability the kernel knows."""
    status = status if status is not None else Path("/proc/self/status").read_text()
    if last_cap is None:
        last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16) != (1 << (last_cap + 1)) - 1
    return False


def running_as_root() -> bool:
    return os.geteuid() == 0


def host_cgroup_v1(cgroup_root: Path = Path("/sys/fs/cgroup")) -> bool:
    """True on a cgroup v1 (or hybrid) host: there, runsc needs kubelet's cgroupfs driver so that a
    sandbox lands in its pod's cgroup and the pod's limits apply to it."""
    return not (cgroup_root / "cgroup.controllers").exists()
