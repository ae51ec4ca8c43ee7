"""What the KIND e2e modules share: the driver run as a user runs it, kubectl on a kind context,
the caches the e2e needs (it never builds the toolchain itself), and the timings report.

Every profile runs offline (``AGENT_SANDBOX_OFFLINE=1``): nothing is downloaded or pulled, so the
same run works on this machine and on any machine whose caches are warm.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "out"
E2E_REPORT_DIR = OUT_DIR / "e2e"
CACHE_DIR = Path(os.environ.get("CACHE_DIR") or "/var/cache/agent-sandbox-iac")
sys.path.insert(0, str(REPO_ROOT))

from automation import node_image  # noqa: E402

PULUMI_BIN = CACHE_DIR / "pulumi" / "3.259.0" / "bin" / "pulumi"
KUBERNETES_PLUGIN = CACHE_DIR / "pulumi" / "home" / "plugins" / "resource-kubernetes-v4.25.0"
CRDS = ("sandboxes.agents.x-k8s.io", "sandboxtemplates.extensions.agents.x-k8s.io",
        "sandboxclaims.extensions.agents.x-k8s.io", "sandboxwarmpools.extensions.agents.x-k8s.io")
OFFLINE_ENV = {"AGENT_SANDBOX_OFFLINE": "1", "CACHE_DIR": str(CACHE_DIR)}
KIND = str(CACHE_DIR / "bin" / "kind")
# The controller image the toolchain builds from the controller's Go module (what `up` loads
# offline): a docker archive holding the local ref below.
CONTROLLER_ARCHIVE = CACHE_DIR / "images" / "v0.5.6" / "bin" / "agent-sandbox-controller.tar"
CONTROLLER_LOCAL_IMAGE = "localhost/agent-sandbox-controller:v0.5.6"


def skip_loudly(reason: str) -> None:
    """Print the reason where CI logs show it, then skip."""
    print(f"\n*** SKIPPING KIND e2e: {reason} ***\n", flush=True)
    pytest.skip(reason)


def missing_caches() -> list[str]:
    """What the e2e needs already built (``make tools`` + the node image's parts); empty when ready."""
    missing = [str(p) for p in (PULUMI_BIN, KUBERNETES_PLUGIN, CACHE_DIR / "bin" / "kind",
                                CACHE_DIR / "bin" / "kubectl", CACHE_DIR / "bin" / "runsc",
                                CACHE_DIR / "bin" / "containerd-shim-runsc-v1") if not p.exists()]
    missing += node_image.toolchain_inputs(CACHE_DIR).missing()
    for path in (CONTROLLER_ARCHIVE, CONTROLLER_ARCHIVE.with_name("busybox.tar")):
        if not path.exists():
            missing.append(str(path))
    return missing


def require_caches() -> None:
    if os.geteuid() != 0:
        skip_loudly("KIND nodes need a Docker engine run as root on this machine")
    missing = missing_caches()
    if missing:
        skip_loudly(f"caches incomplete ({len(missing)} parts missing, e.g. {missing[0]}); run `make tools` and "
                    "`make toolchain` once (about 40 min cold), then `make e2e`")
    # Every profile needs the engine, also those that make their cluster without the driver's set-up.
    started = subprocess.run(["bash", str(REPO_ROOT / "e2e" / "docker-engine.sh"), "start"], capture_output=True,
                             text=True, timeout=600)
    if started.returncode != 0:
        pytest.fail(f"could not start a Docker engine: {started.stderr[-2000:]}")


@dataclass
class DriverRun:
    stdout: str
    stderr: str
    returncode: int
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def driver(*args: str, timeout: float = 900, check: bool = True, env: Optional[dict[str, str]] = None) -> DriverRun:
    """``python -m automation ARGS`` as ``make`` runs it (offline), echoing its output."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "automation", "--out-dir", str(OUT_DIR), *args], cwd=REPO_ROOT,
                            env={**os.environ, **OFFLINE_ENV, **(env or {})}, capture_output=True, text=True,
                            timeout=timeout)
    run = DriverRun(result.stdout, result.stderr, result.returncode, time.monotonic() - started)
    print(f"$ python -m automation {' '.join(args)}  ({run.elapsed:.1f}s, exit {run.returncode})\n"
          f"{run.stdout[-6000:]}\n{run.stderr[-4000:]}", flush=True)
    if check and run.returncode != 0:
        raise AssertionError(f"driver {' '.join(args)} failed with exit {run.returncode}:\n"
                             f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run


def change_summary(up_output: str) -> dict[str, int]:
    """The ``changes {...}`` summary the driver prints after ``up``."""
    match = re.search(r"changes (\{.*\})", up_output)
    assert match, f"no change summary in driver output:\n{up_output[-2000:]}"
    # `read` is the program looking up an existing object (the API server's EndpointSlice), not a change
    return {kind: count for kind, count in ast.literal_eval(match.group(1)).items() if kind != "read"}


def config_args(pairs: dict[str, str]) -> list[str]:
    return [item for key, value in pairs.items() for item in ("--config", f"{key}={value}")]


@dataclass
class Kube:
    """kubectl bound to one kind cluster's context."""

    context: str
    kubectl_path: str = str(CACHE_DIR / "bin" / "kubectl")

    def kubectl(self, *args: str, stdin: Optional[str] = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [self.kubectl_path, "--context", self.context, *args]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def get_json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, *documents: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))

    def wait_ready(self, namespace: str, pod: str, timeout: int = 180) -> None:
        result = self.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"--timeout={timeout}s",
                              f"pod/{pod}", check=False, timeout=timeout + 30)
        if result.returncode != 0:
            described = self.kubectl("describe", "pod", "-n", namespace, pod, check=False).stdout
            raise AssertionError(f"pod {pod} not Ready in {timeout}s:\n{result.stderr}\n{described[-4000:]}")

    def exec(self, namespace: str, pod: str, *command: str, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.kubectl("exec", "-n", namespace, pod, "--", *command, check=check, timeout=timeout)


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def kind_leftovers(cluster: str) -> list[str]:
    """Containers, volumes and networks of a deleted kind cluster that are still there."""
    left = []
    containers = docker("ps", "-a", "--filter", f"label=io.x-k8s.kind.cluster={cluster}", "--format", "{{.Names}}").stdout
    left += [f"container {name}" for name in containers.split()]
    volumes = docker("volume", "ls", "--filter", f"label=io.x-k8s.kind.cluster={cluster}", "--format", "{{.Name}}").stdout
    left += [f"volume {name}" for name in volumes.split()]
    return left


def host_iptables_rules() -> set[str]:
    """This host's iptables rules (both backends), to compare before and after a cluster."""
    rules: set[str] = set()
    for tool in ("iptables-nft-save", "iptables-legacy-save"):
        result = subprocess.run([tool], capture_output=True, text=True)
        rules |= {line for line in result.stdout.splitlines() if line.startswith("-A")}
    return rules


@dataclass
class KindCluster:
    """A KIND cluster an e2e module made itself (``gvisor_kind_cluster``)."""

    name: str
    work: Path
    """Scratch folder of the cluster (its kind config), removed with it."""
    create_seconds: float
    """Node image (ensured) + ``kind create cluster``."""

    @property
    def context(self) -> str:
        return f"kind-{self.name}"

    @property
    def node(self) -> str:
        return f"{self.name}-control-plane"

    def load(self, *what: str, archive: bool = False, timeout: float = 900) -> float:
        """``kind load docker-image`` (or ``image-archive``) onto the nodes; returns the seconds it took."""
        started = time.monotonic()
        subcommand = "image-archive" if archive else "docker-image"
        result = subprocess.run([KIND, "load", subcommand, *what, "--name", self.name], capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"kind load {subcommand} {' '.join(what)} failed ({result.returncode}):\n"
                                 f"{result.stderr[-3000:]}")
        return time.monotonic() - started


@contextlib.contextmanager
def gvisor_kind_cluster(name: str, containerd_patches: Sequence[str] = ()) -> Iterator[KindCluster]:
    """A one-node KIND cluster with gVisor, made the way a cluster's owner would (not by the
    driver): the node image this machine builds from its caches, the generated gVisor config with
    runsc and its shim from the cache (``containerd_patches`` appended to its containerd patches).

    A cluster of that name left by an aborted run is deleted first; on leaving (also on failure)
    the cluster is deleted and kind's network removed once empty. Call ``require_caches()`` first."""
    from agent_sandbox_pulumi.sandbox_iac.kind_config import kind_cluster_config
    from automation import preflight
    from automation.cluster import remove_empty_kind_network

    from automation.cluster import LIB_MODULES

    subprocess.run([KIND, "delete", "cluster", "--name", name], capture_output=True)
    work = Path(tempfile.mkdtemp(prefix=f"e2e-{name}-"))
    # kind bind-mounts the host's /lib/modules into the node; a kernel without modules has none
    # (what `make up` does too): made here when missing, removed again when left empty
    made_lib_modules = not LIB_MODULES.exists()
    if made_lib_modules:
        LIB_MODULES.mkdir(parents=True)
    try:
        started = time.monotonic()
        image = node_image.NodeImageBuilder(node_image.toolchain_inputs(CACHE_DIR), CACHE_DIR, log=print).ensure()
        print(f"kind: node image {image} ready in {time.monotonic() - started:.0f}s", flush=True)
        config = yaml.safe_load(kind_cluster_config(name, str((CACHE_DIR / "bin" / "runsc").resolve()),
                                                    str((CACHE_DIR / "bin" / "containerd-shim-runsc-v1").resolve()),
                                                    restrict_oom_score_adj=preflight.root_lacks_capabilities(),
                                                    cgroupfs_driver=preflight.host_cgroup_v1()))
        config["containerdConfigPatches"].extend(containerd_patches)
        (work / "kind.yaml").write_text(yaml.safe_dump(config))
        subprocess.run([KIND, "create", "cluster", "--name", name, "--image", image, "--config",
                        str(work / "kind.yaml"), "--wait", "180s"], check=True)
        cluster = KindCluster(name, work, time.monotonic() - started)
        print(f"kind: cluster {name} made in {cluster.create_seconds:.0f}s (node image included)", flush=True)
        yield cluster
    finally:
        subprocess.run([KIND, "delete", "cluster", "--name", name], capture_output=True)
        remove_empty_kind_network(log=print)
        shutil.rmtree(work, ignore_errors=True)
        if made_lib_modules and LIB_MODULES.is_dir() and not any(LIB_MODULES.iterdir()):
            LIB_MODULES.rmdir()


def readme_use_it_snippet() -> str:
    """The first python block of README's "Use it" section, as written."""
    section = (REPO_ROOT / "README.md").read_text().split("## Use it", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's 'Use it' section has no python snippet"
    return match.group(1)


class Timings:
    """One JSON report per profile in out/e2e/<profile>.json."""

    def __init__(self, profile: str, nodes: int):
        self.profile = profile
        self.data: dict[str, Any] = {"profile": profile, "nodes": nodes, "checks": {}}
        self.started = time.monotonic()

    def check(self, name: str, seconds: float, **details: Any) -> None:
        self.data["checks"][name] = {"seconds": round(seconds, 1), **details}
        self.write()

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.write()

    def write(self) -> None:
        E2E_REPORT_DIR.mkdir(parents=True, exist_ok=True)
        self.data["total_seconds"] = round(time.monotonic() - self.started, 1)
        (E2E_REPORT_DIR / f"{self.profile}.json").write_text(json.dumps(self.data, indent=2))


@contextlib.contextmanager
def sdk_session(stack: str) -> Iterator[tuple[Any, Any]]:
    """The official SDK connected to the stack's router through the driver's managed tunnel, as
    ``smoke`` connects it: ``with sdk_session(stack) as (client, target): ...``."""
    from automation.paths import default_paths
    from automation.session import stack_session

    with stack_session(default_paths(str(OUT_DIR)), stack) as session:
        yield session.client, session.target


def probe_connect(sandbox: Any, host: str, port: int, timeout: float = 3.0) -> str:
    """From inside a sandbox: 'open', 'refused' or 'timeout' for a TCP connect to host:port."""
    code = (f"import socket\ns=socket.socket(socket.AF_INET6 if ':' in {host!r} else socket.AF_INET)\n"
            f"s.settimeout({timeout})\n"
            f"try:\n s.connect(({host!r},{port})); print('open')\n"
            f"except socket.timeout: print('timeout')\nexcept OSError as e: print('refused' if e.errno==111 else "
            f"'error-'+str(e.errno))\n")
    result = sandbox.commands.run(f"python3 -c \"{code}\"", timeout=30)
    return result.stdout.strip()
