"""The KIND cluster configuration that gives every node gVisor's runtime."""

from __future__ import annotations

import yaml

from agent_sandbox_pulumi.sandbox_iac import constants

RUNSC_CONTAINERD_PATCH = (
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n'
    '  runtime_type = "io.containerd.runsc.v1"\n'
)
# Hosts whose root lacks CAP_SYS_RESOURCE cannot give a process a negative oom_score_adj, which
# kubelet asks for every pod sandbox (-998) and Guaranteed container (-997). This makes the node's
# containerd clamp such values to its own score instead of failing the pod (what kind itself does
# for rootless nodes).
RESTRICT_OOM_SCORE_PATCH = (
    '[plugins."io.containerd.grpc.v1.cri"]\n'
    '  restrict_oom_score_adj = true\n'
)
# On cgroup v1 hosts runsc understands only cgroupfs-style (absolute) cgroup paths: with kind's
# default systemd driver it puts each sandbox in a literal "slice:prefix:name" cgroup outside the
# pod's, where the pod's memory and CPU limits do not apply. These make kubelet and the runc
# runtimes use the cgroupfs driver (kind prepares the /kubelet cgroup root for either driver).
CGROUPFS_CONTAINERD_PATCH = (
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
    '  SystemdCgroup = false\n'
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.test-handler.options]\n'
    '  SystemdCgroup = false\n'
)
CGROUPFS_KUBELET_PATCH = (
    "kind: KubeletConfiguration\n"
    "apiVersion: kubelet.config.k8s.io/v1beta1\n"
    "cgroupDriver: cgroupfs\n"
)
# kind's defaults, written out because the stack's network policies and the router exclude them.
POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/16"


def kind_cluster_config(
    cluster_name: str,
    runsc_host_path: str = constants.RUNSC_NODE_PATH,
    shim_host_path: str = constants.RUNSC_SHIM_NODE_PATH,
    workers: int = 0,
    restrict_oom_score_adj: bool = False,
    cgroupfs_driver: bool = False,
) -> str:
    """YAML for ``kind create cluster --config``: registers the ``runsc`` handler in each node's
    containerd and mounts the host's runsc and shim binaries into each node. ``workers`` adds
    worker nodes next to the control plane (sandboxes then run on the workers: kind keeps the
    control-plane taint when a cluster has workers)."""
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    mounts = [
        {"hostPath": runsc_host_path, "containerPath": constants.RUNSC_NODE_PATH, "readOnly": True},
        {"hostPath": shim_host_path, "containerPath": constants.RUNSC_SHIM_NODE_PATH, "readOnly": True},
    ]
    patches = [RUNSC_CONTAINERD_PATCH]
    if restrict_oom_score_adj:
        patches.append(RESTRICT_OOM_SCORE_PATCH)
    if cgroupfs_driver:
        patches.append(CGROUPFS_CONTAINERD_PATCH)
    nodes = [{"role": "control-plane", "extraMounts": mounts}]
    nodes += [{"role": "worker", "extraMounts": mounts} for _ in range(workers)]
    config = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": cluster_name,
        "networking": {"podSubnet": POD_SUBNET, "serviceSubnet": SERVICE_SUBNET},
        "containerdConfigPatches": patches,
        "nodes": nodes,
    }
    if cgroupfs_driver:
        config["kubeadmConfigPatches"] = [CGROUPFS_KUBELET_PATCH]
    return yaml.safe_dump(config, sort_keys=False)
