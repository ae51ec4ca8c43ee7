"""Prerequisites of ``up``: which tools a stack needs, and an exact message for each missing one
saying why it is needed and how to get it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Callable, Optional

from automation.paths import tool_search_path
from agent_sandbox_pulumi.sandbox_iac import constants
from agent_sandbox_pulumi.sandbox_iac.config import StackConfig

KVM_DEVICE = "/dev/kvm"


@dataclass(frozen=True)
class Requirement:
    """One thing ``up`` needs on this machine."""

    name: str
    """Tool name or file that must exist."""
    reason: str
    """Why this stack needs it."""
    how_to_get: str
    """The command or page that provides it."""
    kind: str = "tool"
    """``tool`` (searched on PATH and in the toolchain cache), ``file`` (exact path) or ``device``."""

    def message(self) -> str:
        what = {"tool": "command not found", "file": "file not found", "device": "device not usable"}[self.kind]
        return f"missing {self.name} ({what}): needed {self.reason}. Get it: {self.how_to_get}"


PULUMI = Requirement(
    "pulumi", "to run the Pulumi engine for every command",
    "`make toolchain-pulumi` (offline build into $CACHE_DIR, then `source e2e/toolchain/env.sh`) "
    "or https://www.pulumi.com/docs/install/")
KUBECTL = Requirement(
    "kubectl", "for the router tunnel (kubectl port-forward) and cluster checks",
    "`make toolchain-cluster` (puts it in $CACHE_DIR/bin) or https://kubernetes.io/docs/tasks/tools/")
DOCKER = Requirement(
    "docker", "to build the runtime/router images (imageBuild=docker) and to run KIND nodes",
    "`bash e2e/docker-engine.sh` (local dockerd) or https://docs.docker.com/engine/install/; "
    "or set agent-sandbox:imageBuild prebuilt with refs from `make images`")
KIND = Requirement(
    "kind", "to create the KIND cluster (clusterFlavour=kind)",
    "`go install sigs.k8s.io/kind@v0.29.0` or https://kind.sigs.k8s.io/docs/user/quick-start/#installation")
MINIKUBE = Requirement(
    "minikube", "to create the minikube VM for Kata (clusterFlavour=minikube)",
    "https://minikube.sigs.k8s.io/docs/start/ (the kvm2 driver also needs libvirt: apt-get install libvirt-daemon-system)")
RUNSC = Requirement(
    constants.RUNSC_NODE_PATH, "on the host: the KIND node mounts gVisor's runsc from this path (runtime=gvisor)",
    "install gVisor per https://gvisor.dev/docs/user_guide/install/ (runsc into /usr/local/bin)", kind="file")
RUNSC_SHIM = Requirement(
    constants.RUNSC_SHIM_NODE_PATH, "on the host: the KIND node mounts gVisor's containerd shim from this path",
    "install gVisor per https://gvisor.dev/docs/user_guide/install/ (containerd-shim-runsc-v1 into /usr/local/bin)",
    kind="file")
KVM = Requirement(
    KVM_DEVICE, "for Kata Containers' QEMU VMs (runtime=kata-qemu) and minikube's kvm2 driver",
    "enable virtualization (VT-x/AMD-V, nested virtualization on a VM), `modprobe kvm_intel` or `kvm_amd`, "
    "and add your user to the kvm group", kind="device")


def requirements_for(config: StackConfig) -> list[Requirement]:
    """Everything ``up`` needs for this stack, in the order it is used."""
    needed = [PULUMI, KUBECTL]
    if config.image_build == "docker" or config.cluster_flavour == "kind":
        needed.append(DOCKER)
    if config.cluster_flavour == "kind":
        needed.append(KIND)
        if config.runtime == "gvisor":
            needed += [RUNSC, RUNSC_SHIM]
    if config.cluster_flavour == "minikube":
        needed.append(MINIKUBE)
    if config.runtime.startswith("kata"):
        needed.append(KVM)
    return needed


def _kvm_usable(path: str = KVM_DEVICE) -> bool:
    return os.path.exists(path) and os.access(path, os.R_OK | os.W_OK)


def missing_prerequisites(
    config: StackConfig,
    which: Optional[Callable[[str], Optional[str]]] = None,
    file_exists: Callable[[str], bool] = os.path.isfile,
    device_usable: Callable[[str], bool] = _kvm_usable,
) -> list[str]:
    """One message per missing requirement (empty list: all present)."""
    which = which or (lambda name: shutil.which(name, path=tool_search_path()))
    missing = []
    for requirement in requirements_for(config):
        if requirement.kind == "tool":
            present = which(requirement.name) is not None
        elif requirement.kind == "file":
            present = file_exists(requirement.name)
        else:
            present = device_usable(requirement.name)
        if not present:
            missing.append(requirement.message())
    return missing
