"""Local clusters the driver creates for ``kind`` / ``minikube`` stacks, and the memory of
having created them (so ``down --cluster`` never deletes a cluster it did not make)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from automation.errors import ClusterError
from automation.paths import ProjectPaths, find_tool
from agent_sandbox_pulumi.sandbox_iac import constants
from agent_sandbox_pulumi.sandbox_iac.config import StackConfig
from agent_sandbox_pulumi.sandbox_iac.kind_config import kind_cluster_config

Runner = Callable[..., subprocess.CompletedProcess]
# minikube's default CNI does not enforce NetworkPolicy, so the sandboxes' and the router's
# policies would be ignored; Calico enforces them (egress endPort ranges included).
MINIKUBE_START_FLAGS = ("--driver=kvm2", "--container-runtime=containerd", "--cni=calico", "--cpus=4", "--memory=8192")


@dataclass(frozen=True)
class CreatedCluster:
    """Record of a cluster this driver created (``.pulumi-state/driver/<stack>-cluster.json``)."""

    flavour: str
    name: str
    created_at: float
    kubeconfig: Optional[str] = None


def _run(run: Runner, command: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    tool = find_tool(command[0]) or command[0]
    result = run([tool, *command[1:]], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ClusterError(f"`{' '.join(command)}` failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")
    return result


def record_path(paths: ProjectPaths, stack: str) -> Path:
    return paths.driver_state_dir / f"{stack}-cluster.json"


def _record_created(config: StackConfig, paths: ProjectPaths, started: float, log: Callable[[str], None]) -> None:
    """Remember that this driver made the stack's cluster (only such a cluster is ever deleted)."""
    record = CreatedCluster(config.cluster_flavour, config.cluster_name, time.time(),
                            str(Path(config.kubeconfig).expanduser()) if config.kubeconfig else None)
    record_path(paths, config.stack).write_text(json.dumps(asdict(record), indent=2))
    log(f"cluster: created in {time.monotonic() - started:.0f}s (recorded in {record_path(paths, config.stack)})")


def read_record(paths: ProjectPaths, stack: str) -> Optional[CreatedCluster]:
    """The cluster this driver created for ``stack``, if any."""
    path = record_path(paths, stack)
    if not path.is_file():
        return None
    return CreatedCluster(**json.loads(path.read_text()))


def cluster_exists(config: StackConfig, run: Runner = subprocess.run) -> bool:
    """Whether the stack's KIND cluster / minikube profile exists (``existing``: always true)."""
    if config.cluster_flavour == "kind":
        names = _run(run, ["kind", "get", "clusters"]).stdout.split()
        return config.cluster_name in names
    if config.cluster_flavour == "minikube":
        result = _run(run, ["minikube", "profile", "list", "-o", "json"], check=False)
        try:
            profiles = json.loads(result.stdout or "{}").get("valid") or []
        except json.JSONDecodeError:
            return False
        return any(p.get("Name") == config.cluster_name for p in profiles)
    return True


def create_command(config: StackConfig, kind_config_file: Optional[Path] = None) -> list[str]:
    """The command that creates the stack's cluster with its secure runtime prepared."""
    if config.cluster_flavour == "kind":
        command = ["kind", "create", "cluster", "--name", config.cluster_name, "--wait", "180s"]
        if config.runtime == "gvisor" and kind_config_file is not None:
            command += ["--config", str(kind_config_file)]
        if config.kubeconfig:
            command += ["--kubeconfig", str(Path(config.kubeconfig).expanduser())]
        return command
    if config.cluster_flavour == "minikube":
        return ["minikube", "start", *MINIKUBE_START_FLAGS, f"--profile={config.cluster_name}"]
    raise ClusterError(f"clusterFlavour {config.cluster_flavour!r} is not created by the driver")


def kind_clusters(run: Runner = subprocess.run) -> list[str]:
    """Names of the kind clusters on this engine."""
    return _run(run, ["kind", "get", "clusters"]).stdout.split()


def container_names(run: Runner = subprocess.run) -> list[str]:
    """Names of every container on the engine that is not a node of a kind cluster."""
    result = run(["docker", "ps", "-a", "--format", "{{.Names}}\t{{.Label \"io.x-k8s.kind.cluster\"}}"],
                 capture_output=True, text=True)
    names = []
    for line in result.stdout.splitlines():
        name, _, kind_cluster = line.partition("\t")
        if name and not kind_cluster:
            names.append(name)
    return names


def kind_node_has_runsc(cluster_name: str, run: Runner = subprocess.run) -> bool:
    """Whether the cluster's control-plane node has gVisor's runsc (mounted by our config)."""
    result = run(["docker", "exec", f"{cluster_name}-control-plane", "test", "-x", "/usr/local/bin/runsc"],
                 capture_output=True, text=True)
    return result.returncode == 0


def create_kind_cluster(config: StackConfig, paths: ProjectPaths, *, image: str, runsc: Optional[str],
                        shim: Optional[str], workers: int = 0, restrict_oom_score_adj: bool = False,
                        cgroupfs_driver: bool = False, run: Runner = subprocess.run,
                        log: Callable[[str], None] = print) -> bool:
    """``kind create cluster`` with the gVisor config, ``image`` and ``workers`` worker nodes; records it."""
    paths.driver_state_dir.mkdir(parents=True, exist_ok=True)
    kind_file = paths.driver_state_dir / f"{config.stack}-kind-config.yaml"
    kind_file.write_text(kind_cluster_config(
        config.cluster_name,
        runsc_host_path=str(Path(runsc).resolve()) if runsc else constants.RUNSC_NODE_PATH,
        shim_host_path=str(Path(shim).resolve()) if shim else constants.RUNSC_SHIM_NODE_PATH,
        workers=workers, restrict_oom_score_adj=restrict_oom_score_adj, cgroupfs_driver=cgroupfs_driver))
    command = create_command(config, kind_file) + ["--image", image]
    log(f"cluster: creating with `{' '.join(command)}`")
    started = time.monotonic()
    try:
        _run(run, command)
    except ClusterError:
        # kind leaves the node containers of a failed create behind; remove them so the next try starts clean
        run([find_tool("kind") or "kind", "delete", "cluster", "--name", config.cluster_name], capture_output=True, text=True)
        raise
    _record_created(config, paths, started, log)
    return True


def kind_load_archive(cluster_name: str, archive: Path, run: Runner = subprocess.run,
                      log: Callable[[str], None] = print) -> None:
    """Import a docker-archive tarball into every node of a kind cluster."""
    log(f"cluster: loading {archive.name} into the nodes of {cluster_name!r}")
    _run(run, ["kind", "load", "image-archive", str(archive), "--name", cluster_name])


def delete_command(record: CreatedCluster) -> list[str]:
    if record.flavour == "kind":
        command = ["kind", "delete", "cluster", "--name", record.name]
        if record.kubeconfig:
            command += ["--kubeconfig", record.kubeconfig]
        return command
    return ["minikube", "delete", f"--profile={record.name}"]


def ensure_cluster(config: StackConfig, paths: ProjectPaths, run: Runner = subprocess.run,
                   log: Callable[[str], None] = print) -> bool:
    """Create the stack's cluster when its flavour is kind/minikube and it does not exist.

    Returns True when this call created it (and records that)."""
    if config.cluster_flavour == "existing":
        log(f"cluster: using the existing cluster (context {config.kube_context or 'current'})")
        return False
    if cluster_exists(config, run):
        log(f"cluster: {config.cluster_flavour} cluster {config.cluster_name!r} exists, reusing it")
        return False
    paths.driver_state_dir.mkdir(parents=True, exist_ok=True)
    kind_file = None
    if config.cluster_flavour == "kind" and config.runtime == "gvisor":
        kind_file = paths.driver_state_dir / f"{config.stack}-kind-config.yaml"
        kind_file.write_text(kind_cluster_config(config.cluster_name))
    command = create_command(config, kind_file)
    log(f"cluster: creating with `{' '.join(command)}`")
    started = time.monotonic()
    _run(run, command)
    _record_created(config, paths, started, log)
    return True


def delete_created_cluster(paths: ProjectPaths, stack: str, run: Runner = subprocess.run,
                           log: Callable[[str], None] = print) -> bool:
    """Delete the stack's cluster only if this driver created it; True when deleted."""
    record = read_record(paths, stack)
    if record is None:
        log("cluster: not deleted: the driver did not create this stack's cluster (delete it yourself if wanted)")
        return False
    _run(run, delete_command(record))
    record_path(paths, stack).unlink()
    log(f"cluster: deleted {record.flavour} cluster {record.name!r}")
    if record.flavour == "kind":
        remove_empty_kind_network(run, log)
        remove_created_lib_modules(paths, stack, log)
    return True


LIB_MODULES = Path("/lib/modules")


def _lib_modules_marker(paths: ProjectPaths, stack: str) -> Path:
    return paths.driver_state_dir / f"{stack}-created-lib-modules"


def ensure_lib_modules(paths: ProjectPaths, stack: str, lib_modules: Path = LIB_MODULES) -> bool:
    """kind bind-mounts the host's /lib/modules into each node; a kernel without modules has none,
    and Docker would create it silently. Create it ourselves, remember that, so down can remove it.
    True when this call created it."""
    if lib_modules.exists():
        return False
    lib_modules.mkdir(parents=True)
    paths.driver_state_dir.mkdir(parents=True, exist_ok=True)
    _lib_modules_marker(paths, stack).write_text(str(lib_modules))
    return True


def remove_created_lib_modules(paths: ProjectPaths, stack: str, log: Callable[[str], None] = print) -> bool:
    marker = _lib_modules_marker(paths, stack)
    if not marker.is_file():
        return False
    directory = Path(marker.read_text().strip())
    marker.unlink()
    try:
        directory.rmdir()  # only when still empty
    except OSError:
        return False
    log(f"cluster: removed the empty {directory} that up created")
    return True


def remove_empty_kind_network(run: Runner = subprocess.run, log: Callable[[str], None] = print) -> bool:
    """kind leaves its ``kind`` Docker network behind; remove it when no container uses it any more."""
    inspect = run(["docker", "network", "inspect", "kind", "--format", "{{len .Containers}}"],
                  capture_output=True, text=True)
    if inspect.returncode != 0 or inspect.stdout.strip() != "0":
        return False
    removed = run(["docker", "network", "rm", "kind"], capture_output=True, text=True).returncode == 0
    if removed:
        log("cluster: removed the empty `kind` Docker network")
    return removed
