#!/usr/bin/python3
"""OCI runtime wrapper for dockerd: drops capabilities the host cannot grant, then runs runc.

Why: on hosts whose root lacks a capability in its bounding set (here CAP_SYS_RESOURCE),
`docker run --privileged` — what kind does for every node — asks runc for every capability Docker
knows, and runc fails with "unable to apply caps". Registered as dockerd's default runtime by
e2e/docker-engine.sh only on such hosts, this wrapper removes the capabilities missing from its own
bounding set from the spec runc is about to apply: the bundle's config.json for `create`/`run`, the
`--process` file for `exec`. Everything else passes through to the real runc unchanged.
"""

from __future__ import annotations

import json
import os
import sys

REAL_RUNC = os.environ.get("CAPFILTER_RUNC", "/usr/sbin/runc")
# runc global options that take a value (the subcommand is the first other non-option word)
VALUE_OPTIONS = {"--root", "--log", "--log-format", "--criu", "--rootless"}
CAP_NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]


def bounding_set(status_path: str = "/proc/self/status") -> set[str]:
    """Names of the capabilities in this process's bounding set."""
    with open(status_path) as status:
        for line in status:
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
                return {name for bit, name in enumerate(CAP_NAMES) if mask >> bit & 1}
    return set(CAP_NAMES)


def filter_process(process: dict, allowed: set[str]) -> bool:
    """Remove capabilities not in ``allowed`` from an OCI process object; True if it changed."""
    caps = process.get("capabilities") or {}
    changed = False
    for kind, names in caps.items():
        if isinstance(names, list):
            kept = [name for name in names if name in allowed or name not in CAP_NAMES]
            changed |= len(kept) != len(names)
            caps[kind] = kept
    return changed


def rewrite(path: str, allowed: set[str], whole_spec: bool) -> None:
    with open(path) as handle:
        document = json.load(handle)
    process = document.get("process", {}) if whole_spec else document
    if filter_process(process, allowed):
        with open(path + ".capfilter", "w") as handle:
            json.dump(document, handle)
        os.replace(path + ".capfilter", path)


def option_value(argv: list[str], name: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def subcommand(argv: list[str]) -> str | None:
    """runc's subcommand: the first word that is neither a global option nor its value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str]) -> None:
    allowed = bounding_set()
    command = subcommand(argv)
    if command in ("create", "run"):
        bundle = option_value(argv, "--bundle") or option_value(argv, "-b") or os.getcwd()
        spec = os.path.join(bundle, "config.json")
        if os.path.isfile(spec):
            rewrite(spec, allowed, whole_spec=True)
    elif command == "exec":
        process_file = option_value(argv, "--process") or option_value(argv, "-p")
        if process_file and os.path.isfile(process_file):
            rewrite(process_file, allowed, whole_spec=False)
    os.execv(REAL_RUNC, [REAL_RUNC, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
