"""Patch a copy of gVisor's go-branch module so runsc and its shim work without CAP_SYS_RESOURCE.

This machine's root has no CAP_SYS_RESOURCE (its capability bounding set lacks it), so lowering an
oom_score_adj fails with EACCES. gVisor treats that as fatal in two places: the shim makes itself
nearly unkillable (-999) when it starts, and runsc copies a container's negative oom_score_adj
(Guaranteed pods) onto the sandbox. Both only tune OOM-kill order, so on such hosts the patched code
logs nothing and goes on, as containerd's own runc shim already does for permission errors.

A third patch fixes runsc's cgroup v1 path discovery inside KIND nodes: on cgroup v1 kind bind-mounts
/kubelet and /kubelet.slice sub-hierarchies next to each controller's root mount, and runsc rewrote
the process's cgroup path relative to every such mount, also those the path is not inside, ending in
"Rel: can't make ../system.slice/containerd.service relative to /kubelet.slice" for every pod. Only a
mount whose root contains the path now rewrites it, once.

Usage: patch_gvisor.py MODULE_COPY_DIR   (edits files in place; fails if the code no longer matches)
"""

from __future__ import annotations

import sys
from pathlib import Path

PATCHES: list[tuple[str, str, str]] = [
    (
        "pkg/shim/v1/manager.go",
        "\tif err := sys.SetOOMScore(cmd.Process.Pid, oomScoreMax); err != nil {\n",
        "\tif err := sys.SetOOMScore(cmd.Process.Pid, oomScoreMax); err != nil && !os.IsPermission(err) {\n",
    ),
    (
        "runsc/container/container.go",
        "\t\tif errors.Is(err, unix.ESRCH) {\n\t\t\tlog.Warningf(\"Process (%d) exited while setting oom_score_adj\", pid)",
        "\t\tif errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {\n"
        "\t\t\tlog.Warningf(\"No permission to set oom_score_adj of %d to %d (no CAP_SYS_RESOURCE?)\", pid, scoreAdj)\n"
        "\t\t\treturn nil\n\t\t}\n"
        "\t\tif errors.Is(err, unix.ESRCH) {\n\t\t\tlog.Warningf(\"Process (%d) exited while setting oom_score_adj\", pid)",
    ),
    (
        "runsc/cgroup/cgroup.go",
        "\t\t\t\tif cgroupPath, ok := paths[opt]; ok {\n"
        "\t\t\t\t\trootDir := fields[3]\n"
        "\t\t\t\t\tif rootDir != \"/\" {\n",
        "\t\t\t\tif cgroupPath, ok := paths[opt]; ok && filepath.IsAbs(cgroupPath) {\n"
        "\t\t\t\t\trootDir := fields[3]\n"
        "\t\t\t\t\tif rootDir != \"/\" && (cgroupPath == rootDir || strings.HasPrefix(cgroupPath, rootDir+\"/\")) {\n",
    ),
]


def apply(module_dir: Path) -> None:
    """Apply every patch once; a second run is a no-op; a mismatch is an error naming the file."""
    for relative, old, new in PATCHES:
        path = module_dir / relative
        text = path.read_text()
        if new in text:
            continue
        if text.count(old) != 1:
            sys.exit(f"patch_gvisor: expected code not found exactly once in {path}; "
                     "the pinned gVisor version changed, update e2e/toolchain/cluster/patch_gvisor.py")
        path.write_text(text.replace(old, new))
        print(f"patched {relative}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: patch_gvisor.py MODULE_COPY_DIR")
    apply(Path(sys.argv[1]))
