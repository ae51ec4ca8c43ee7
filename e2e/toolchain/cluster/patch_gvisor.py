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

A fourth patch stops idle sandboxes from burning CPU: the systrap platform re-decides its
fast-path state every 400 us, forever, from the syscall latencies recorded in the period. An idle
sandbox records none, and then the state machine has nothing to decide, yet the loop still wakes
2,500 times a second (measured: ~41 ms of CPU per second per idle sandbox running only `sleep`,
~3,000 context switches a second; 8% of a 500m CPU limit, and N x 4% of a core for a warm pool of
N). The patched loop doubles its sleep, up to 10 ms, while periods record nothing and no fast path
spun, and goes back to 400 us at the first period with work; the state machine is unchanged.

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
    (
        "pkg/sentry/platform/systrap/metrics.go",
        "func controlFastPath() {\n"
        "\tfastPathContextLimit = uint32(maxSysmsgThreads * 2)\n"
        "\n"
        "\tfor {\n"
        "\t\ttime.Sleep(recordingPeriod)\n"
        "\n"
        "\t\tfastpath.curState(&fastpath)\n",
        "func controlFastPath() {\n"
        "\tfastPathContextLimit = uint32(maxSysmsgThreads * 2)\n"
        "\n"
        "\tperiod := recordingPeriod\n"
        "\tfor {\n"
        "\t\ttime.Sleep(period)\n"
        "\n"
        "\t\t// Patched (agent-sandbox e2e): a period that recorded nothing and spun no fast path\n"
        "\t\t// gives the state machine nothing to decide; back off while idle.\n"
        "\t\tif idlePeriod() {\n"
        "\t\t\tperiod = min(2*period, idleRecordingPeriodMax)\n"
        "\t\t\tcontinue\n"
        "\t\t}\n"
        "\t\tperiod = recordingPeriod\n"
        "\n"
        "\t\tfastpath.curState(&fastpath)\n",
    ),
    (
        "pkg/sentry/platform/systrap/metrics_idle.go",
        "",
        "package systrap\n"
        "\n"
        "import \"time\"\n"
        "\n"
        "// idleRecordingPeriodMax bounds how long the fast-path control loop sleeps while idle\n"
        "// (patched in by agent-sandbox's e2e toolchain).\n"
        "const idleRecordingPeriodMax = 10 * time.Millisecond\n"
        "\n"
        "// idlePeriod reports whether the last period recorded no latency and spun no fast path.\n"
        "func idlePeriod() bool {\n"
        "\tif fastpath.usedStubFastPath.Load() || fastpath.usedSentryFastPath.Load() {\n"
        "\t\treturn false\n"
        "\t}\n"
        "\tfor i := 0; i < numLatencyBuckets; i++ {\n"
        "\t\tif latencies.stubBound[i].Load() != 0 || latencies.sentryBound[i].Load() != 0 {\n"
        "\t\t\treturn false\n"
        "\t\t}\n"
        "\t}\n"
        "\treturn true\n"
        "}\n",
    ),
]


def apply(module_dir: Path) -> None:
    """Apply every patch once; a second run is a no-op; a mismatch is an error naming the file."""
    for relative, old, new in PATCHES:
        path = module_dir / relative
        if not old:  # a new file of ours
            if not path.is_file() or path.read_text() != new:
                path.write_text(new)
                print(f"added {relative}")
            continue
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
