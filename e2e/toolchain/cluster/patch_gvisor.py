"""Patch a copy of gVisor's go-branch module so runsc and its shim work without CAP_SYS_RESOURCE.

This machine's root has no CAP_SYS_RESOURCE (its capability bounding set lacks it), so lowering an
oom_score_adj fails with EACCES. gVisor treats that as fatal in two places: the shim makes itself
nearly unkillable (-999) when it starts, and runsc copies a container's negative oom_score_adj
(Guaranteed pods) onto the sandbox. Both only tune OOM-kill order, so on such hosts the patched code
logs nothing and goes on, as containerd's own runc shim already does for permission errors.

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
