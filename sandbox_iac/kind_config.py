"""The KIND cluster configuration that gives the node gVisor's runtime."""

from __future__ import annotations

import yaml

from sandbox_iac import constants

RUNSC_CONTAINERD_PATCH = (
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n'
    '  runtime_type = "io.containerd.runsc.v1"\n'
)


def kind_cluster_config(
    cluster_name: str,
    runsc_host_path: str = constants.RUNSC_NODE_PATH,
    shim_host_path: str = constants.RUNSC_SHIM_NODE_PATH,
) -> str:
    """YAML for ``kind create cluster --config``: registers the ``runsc`` handler in the
    node's containerd and mounts the host's runsc and shim binaries into the node."""
    config = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": cluster_name,
        "containerdConfigPatches": [RUNSC_CONTAINERD_PATCH],
        "nodes": [{
            "role": "control-plane",
            "extraMounts": [
                {"hostPath": runsc_host_path, "containerPath": constants.RUNSC_NODE_PATH, "readOnly": True},
                {"hostPath": shim_host_path, "containerPath": constants.RUNSC_SHIM_NODE_PATH, "readOnly": True},
            ],
        }],
    }
    return yaml.safe_dump(config, sort_keys=False)
