"""Upstream's Go ``sandbox-router`` (module ``sigs.k8s.io/agent-sandbox`` v0.5.6, main package
``sandbox-router/cmd``), built from the Go module for the side-by-side router bench.

Owns: where the binary lives (``$CACHE_DIR/agent-sandbox-router/<version>/bin/sandbox-router``,
CACHE_DIR defaulting to /var/cache/agent-sandbox-iac), the build (a throw-away wrapper module
that requires the upstream module at exactly that version, then ``go mod tidy`` and a niced
``go build`` with GOFLAGS=-mod=mod, GOMODCACHE=$CACHE_DIR/go/mod, CGO_ENABLED=0,
GOTOOLCHAIN=local), and the command line that runs it on loopback. Cached and idempotent: a
binary whose stamp names the same module version and Go toolchain is reused; concurrent callers
serialise on a lock file; the binary is renamed into place only when the build succeeded.

Run ``python bench/go_router.py`` to build (or find) it and print its path.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

MODULE = "sigs.k8s.io/agent-sandbox"
VERSION = "v0.5.6"
MAIN_PACKAGE = f"{MODULE}/sandbox-router/cmd"
BINARY = "sandbox-router"
DEFAULT_CACHE_DIR = "/var/cache/agent-sandbox-iac"
# The same version stamp upstream's release build writes (internal/version), so `--version`
# of our build says what it is.
LDFLAGS = f"-s -w -X {MODULE}/internal/version.gitVersion={VERSION}"


def cache_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("CACHE_DIR") or DEFAULT_CACHE_DIR)


def build_dir(cache: Path, version: str = VERSION) -> Path:
    return cache / "agent-sandbox-router" / version


def binary_path(cache: Path, version: str = VERSION) -> Path:
    return build_dir(cache, version) / "bin" / BINARY


def go_env(cache: Path, base: Mapping[str, str]) -> dict[str, str]:
    """The build environment: the shared module and build caches of the toolchain scripts, no
    cgo (a static binary), no toolchain download, and -mod=mod so the wrapper's go.mod/go.sum
    may be completed from the module cache or the Go module proxy."""
    env = dict(base)
    env.update(GOFLAGS="-mod=mod", GOMODCACHE=str(cache / "go" / "mod"),
               GOCACHE=env.get("GOCACHE") or str(cache / "go" / "build"),
               CGO_ENABLED="0", GOTOOLCHAIN="local")
    return env


def wrapper_files(module: str = MODULE, version: str = VERSION, package: str = MAIN_PACKAGE) -> dict[str, str]:
    """go.mod and tools.go of the wrapper module. tools.go (build tag ``tools``, never compiled)
    makes ``go mod tidy`` keep the requirement and record every dependency's checksum; building
    the package by import path from a module that requires it at ``version`` is what pins it
    (``go install pkg@version`` would also ask the proxy for version lists)."""
    return {
        "go.mod": f"module local.test/wrap\n\ngo 1.26\n\nrequire {module} {version}\n",
        "tools.go": f'//go:build tools\n\npackage tools\n\nimport (\n\t_ "{package}"\n)\n',
    }


def build_commands(go: str, output: Path, package: str = MAIN_PACKAGE, ldflags: str = LDFLAGS,
                   nice: int = 10) -> list[list[str]]:
    """Commands run in the wrapper directory, in order; the compile is niced because the machine
    is shared with other long builds."""
    niced = ["nice", "-n", str(nice)] if shutil.which("nice") else []
    return [
        [go, "mod", "tidy"],
        [*niced, go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(output), package],
    ]


def stamp(go_version: str, version: str = VERSION) -> dict[str, str]:
    """What a cached binary must have been built from to be reused."""
    return {"module": MODULE, "version": version, "package": MAIN_PACKAGE, "go": go_version}


def is_current(binary: Path, wanted: Mapping[str, str]) -> bool:
    stamp_file = binary.with_suffix(".stamp.json")
    if not (binary.is_file() and os.access(binary, os.X_OK) and stamp_file.is_file()):
        return False
    try:
        return json.loads(stamp_file.read_text()) == dict(wanted)
    except (OSError, ValueError):
        return False


def router_command(binary: Path, http_port: int, metrics_port: int, probe_port: int) -> list[str]:
    """The Go router on loopback only, in the mode our bench compares against: the caller's
    X-Sandbox-Pod-IP is the target (``--allow-loopback-pod-ip`` lets it be 127.0.0.1, so no DNS
    and no cluster is needed), no pod cache, no authz (its default allow-all), no access log
    (ours logs nothing per request either), no retries (none is ever needed on loopback)."""
    return [str(binary), f"--http-bind-address=127.0.0.1:{http_port}",
            f"--metrics-bind-address=127.0.0.1:{metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{probe_port}",
            "--allow-loopback-pod-ip=true", "--cache-enabled=false", "--access-log=false",
            "--upstream-max-retries=0", "--zap-log-level=error"]


def ensure_router(env: Optional[Mapping[str, str]] = None, log=print) -> Path:
    """The path of a built Go router, building it first when needed (idempotent)."""
    env = dict(os.environ if env is None else env)
    go = env.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists() and not shutil.which(go):
        raise SystemExit("go not found: install Go (the toolchain scripts use /usr/local/go) or set GO=")
    cache = cache_dir(env)
    binary = binary_path(cache)
    build_env = go_env(cache, env)
    go_version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True,
                                env=build_env).stdout.strip()
    wanted = stamp(go_version)
    if is_current(binary, wanted):
        return binary
    root = build_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another bench may be building it right now
        if is_current(binary, wanted):
            return binary
        src, log_path = root / "src", root / "build.log"
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        for name, text in wrapper_files().items():
            (src / name).write_text(text)
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(BINARY + ".tmp")
        log(f"go router: building {MAIN_PACKAGE}@{VERSION} with {go_version} (log {log_path})")
        with open(log_path, "w") as out:
            for command in build_commands(go, partial):
                out.write(f"$ {' '.join(command)}\n")
                out.flush()
                done = subprocess.run(command, cwd=src, env=build_env, stdout=out, stderr=subprocess.STDOUT)
                if done.returncode != 0:
                    tail = log_path.read_text().splitlines()[-15:]
                    raise SystemExit(f"go router build failed ({' '.join(command[:4])}…), see {log_path}:\n"
                                     + "\n".join(tail))
        partial.replace(binary)
        binary.with_suffix(".stamp.json").write_text(json.dumps(wanted, indent=2) + "\n")
    return binary


def main(argv: Optional[Sequence[str]] = None) -> int:
    print(ensure_router())
    return 0


if __name__ == "__main__":
    sys.exit(main())
