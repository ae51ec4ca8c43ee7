"""Where each tool ``up`` needs comes from, in a fixed order, and getting the ones that are missing.

For every tool a stack needs (the Pulumi CLI and its Python language host, ``kind``, ``kubectl``,
gVisor's ``runsc`` and ``containerd-shim-runsc-v1``) the order is:

1. ``path``: the one on ``PATH`` (the user's own install wins);
2. ``cache``: one this project built or downloaded before, under ``$CACHE_DIR`` (by version);
3. ``download``: the pinned release, checked against the checksum published beside it, when
   downloads are allowed (``AGENT_SANDBOX_OFFLINE`` unset or ``0``);
4. ``build``: built from Go modules into ``$CACHE_DIR`` by ``e2e/toolchain/*.sh`` (the offline path;
   the Go module proxy is the one source this needs).

Nothing is written to system paths: downloads go to ``$CACHE_DIR/downloads/<tool>/<version>/``,
builds to ``$CACHE_DIR/<component>/<version>/``, and both are linked from ``$CACHE_DIR/bin``, which
the driver searches after ``PATH``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from automation.errors import ToolError
from automation.paths import PROJECT_DIR as REPO_ROOT, cache_dir as default_cache_dir

Log = Callable[[str], None]
Which = Callable[[str], Optional[str]]
Fetch = Callable[[str, Path], None]
Runner = Callable[[Sequence[str]], int]

PULUMI_VERSION = "3.259.0"
KUBERNETES_PROVIDER_VERSION = "4.25.0"
KIND_VERSION = "v0.30.0"
KUBERNETES_VERSION = "v1.34.4"
# gVisor's dated release nearest to the go-branch commit the offline build pins.
GVISOR_RELEASE = "20260504.0"


@dataclass(frozen=True)
class Download:
    """A pinned release file and the checksum file published next to it."""

    url: str
    checksum_url: str
    algorithm: str = "sha256"
    archive_member: Optional[str] = None
    """For a .tar.gz release: the member that is the binary (``pulumi/pulumi``)."""


@dataclass(frozen=True)
class Tool:
    """One tool: the files it provides and the ways to get them."""

    name: str
    version: str
    binaries: tuple[str, ...]
    build_command: tuple[str, ...]
    """Run from the repository root; builds every binary into ``$CACHE_DIR``."""
    downloads: Mapping[str, Download] = field(default_factory=dict)
    """Binary name → release download (a binary without one is only found or built)."""
    why: str = ""
    plugins: tuple[str, ...] = ()
    """Pulumi plugin directories (``resource-<name>-v<version>``) that must be in the plugin home
    offline; online the engine fetches missing ones itself."""


@dataclass(frozen=True)
class Resolved:
    """Where a tool's binaries were found, and how."""

    tool: Tool
    source: str
    """``path``, ``cache``, ``download`` or ``build``."""
    paths: Mapping[str, str]


def _toolchain(*args: str) -> tuple[str, ...]:
    return ("bash", str(REPO_ROOT / "e2e" / "toolchain" / args[0]), *args[1:])


PULUMI = Tool(
    # without the YAML language host: only examples/yaml needs it (make toolchain-pulumi builds it)
    "pulumi", PULUMI_VERSION, ("pulumi", "pulumi-language-python"), ("env", "WITH_YAML=0", *_toolchain("pulumi.sh")),
    {"pulumi": Download(f"https://get.pulumi.com/releases/sdk/pulumi-v{PULUMI_VERSION}-linux-x64.tar.gz",
                        f"https://get.pulumi.com/releases/sdk/pulumi-{PULUMI_VERSION}-checksums.txt",
                        archive_member="pulumi/pulumi"),
     "pulumi-language-python": Download(
         f"https://get.pulumi.com/releases/sdk/pulumi-v{PULUMI_VERSION}-linux-x64.tar.gz",
         f"https://get.pulumi.com/releases/sdk/pulumi-{PULUMI_VERSION}-checksums.txt",
         archive_member="pulumi/pulumi-language-python")},
    why="the Pulumi engine and its Python language host run the program",
    plugins=(f"resource-kubernetes-v{KUBERNETES_PROVIDER_VERSION}",))
KIND = Tool(
    "kind", KIND_VERSION, ("kind",), _toolchain("cluster.sh", "kind"),
    {"kind": Download(f"https://kind.sigs.k8s.io/dl/{KIND_VERSION}/kind-linux-amd64",
                      f"https://kind.sigs.k8s.io/dl/{KIND_VERSION}/kind-linux-amd64.sha256sum")},
    why="creates the KIND cluster")
KUBECTL = Tool(
    "kubectl", KUBERNETES_VERSION, ("kubectl",), _toolchain("cluster.sh", "kubernetes"),
    {"kubectl": Download(f"https://dl.k8s.io/release/{KUBERNETES_VERSION}/bin/linux/amd64/kubectl",
                         f"https://dl.k8s.io/release/{KUBERNETES_VERSION}/bin/linux/amd64/kubectl.sha256")},
    why="the router tunnel (kubectl port-forward) and cluster checks")
_GVISOR_URL = f"https://storage.googleapis.com/gvisor/releases/release/{GVISOR_RELEASE}/x86_64"
RUNSC = Tool(
    "runsc", GVISOR_RELEASE, ("runsc", "containerd-shim-runsc-v1"), _toolchain("cluster.sh", "gvisor"),
    {name: Download(f"{_GVISOR_URL}/{name}", f"{_GVISOR_URL}/{name}.sha512", algorithm="sha512")
     for name in ("runsc", "containerd-shim-runsc-v1")},
    why="gVisor: the KIND nodes mount runsc and its containerd shim from the host")


def tools_for(cluster_flavour: str, runtime: str) -> list[Tool]:
    """The tools a stack needs, in the order ``up`` uses them."""
    needed = [PULUMI, KUBECTL]
    if cluster_flavour == "kind":
        needed.append(KIND)
        if runtime == "gvisor":
            needed.append(RUNSC)
    return needed


def offline(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when downloads and image pulls are off (``AGENT_SANDBOX_OFFLINE=1``)."""
    value = (os.environ if environ is None else environ).get("AGENT_SANDBOX_OFFLINE", "0").strip().lower()
    return value not in ("", "0", "false", "no")


# ----------------------------------------------------------------------------- resolution

def _path_which(name: str) -> Optional[str]:
    return shutil.which(name)


def _cache_which(cache: Path) -> Which:
    def which(name: str) -> Optional[str]:
        candidate = cache / "bin" / name
        return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
    return which


def _all_found(tool: Tool, which: Which) -> Optional[dict[str, str]]:
    found = {name: which(name) for name in tool.binaries}
    return found if all(found.values()) else None  # type: ignore[return-value]


def fetch_url(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` (urllib; honours the usual proxy variables)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:  # noqa: S310 - pinned https URLs
        shutil.copyfileobj(response, out)


def expected_digest(checksum_text: str, filename: str) -> str:
    """The digest for ``filename`` in a checksum file (``<hex>  <name>`` lines, or one bare digest)."""
    lines = [line.split() for line in checksum_text.splitlines() if line.strip()]
    for words in lines:
        if len(words) >= 2 and words[-1].lstrip("*").rsplit("/", 1)[-1] == filename:
            return words[0].lower()
    if len(lines) == 1 and len(lines[0]) >= 1:
        return lines[0][0].lower()
    raise ToolError(f"the checksum file has no entry for {filename}")


def download_tool(tool: Tool, cache: Path, fetch: Fetch = fetch_url, log: Log = print) -> dict[str, str]:
    """Download and verify every binary of ``tool`` into the cache; return their paths."""
    dest_dir = cache / "downloads" / tool.name / tool.version
    dest_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for name in tool.binaries:
        spec = tool.downloads.get(name)
        if spec is None:
            raise ToolError(f"{tool.name}: no release download for {name}")
        filename = spec.url.rsplit("/", 1)[-1]
        artefact = dest_dir / filename
        if not artefact.is_file():
            log(f"tools: downloading {spec.url}")
            fetch(spec.url, artefact.with_suffix(artefact.suffix + ".part"))
            checksum_file = dest_dir / (filename + "." + spec.algorithm)
            fetch(spec.checksum_url, checksum_file)
            want = expected_digest(checksum_file.read_text(), filename)
            got = hashlib.new(spec.algorithm, artefact.with_suffix(artefact.suffix + ".part").read_bytes()).hexdigest()
            if got != want:
                artefact.with_suffix(artefact.suffix + ".part").unlink()
                raise ToolError(f"{tool.name}: {filename} does not match its published {spec.algorithm} "
                                f"(expected {want}, got {got}); refusing it. Retry, or build it offline: "
                                f"AGENT_SANDBOX_OFFLINE=1 make tools")
            os.replace(artefact.with_suffix(artefact.suffix + ".part"), artefact)
        binary = dest_dir / name
        if spec.archive_member:
            with tarfile.open(artefact) as archive:
                member = archive.getmember(spec.archive_member)
                source = archive.extractfile(member)
                if source is None:
                    raise ToolError(f"{tool.name}: {spec.archive_member} is not a file in {filename}")
                binary.write_bytes(source.read())
        elif artefact != binary:
            shutil.copyfile(artefact, binary)
        binary.chmod(0o755)
        (cache / "bin").mkdir(parents=True, exist_ok=True)
        link = cache / "bin" / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(binary)
        paths[name] = str(binary)
    return paths


def _run_build(command: Sequence[str]) -> int:
    return subprocess.run(list(command), cwd=REPO_ROOT).returncode


def plugin_home(cache: Path, environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where the engine looks for plugins: ``PULUMI_HOME``, else the toolchain's, else ``~/.pulumi``."""
    environ = os.environ if environ is None else environ
    if environ.get("PULUMI_HOME"):
        return Path(environ["PULUMI_HOME"])
    cached = cache / "pulumi" / "home"
    return cached if cached.is_dir() else Path.home() / ".pulumi"


def missing_plugins(tool: Tool, cache: Path) -> list[str]:
    home = plugin_home(cache)
    return [name for name in tool.plugins
            if not (home / "plugins" / name).is_dir() or (home / "plugins" / f"{name}.partial").exists()]


def resolve_tool(
    tool: Tool,
    cache: Optional[Path] = None,
    *,
    allow_download: Optional[bool] = None,
    allow_build: bool = True,
    path_which: Which = _path_which,
    fetch: Fetch = fetch_url,
    build: Runner = _run_build,
    log: Log = print,
) -> Resolved:
    """Find or get ``tool`` in the documented order; raise :class:`ToolError` when nothing works."""
    cache = Path(cache or default_cache_dir())
    allow_download = (not offline()) if allow_download is None else allow_download
    # Offline, the engine cannot fetch a plugin itself: a missing one sends the tool to its build.
    plugins_ok = allow_download or not missing_plugins(tool, cache)
    found = _all_found(tool, path_which)
    if found and plugins_ok:
        return Resolved(tool, "path", found)
    cached = _cache_which(cache)
    found = _all_found(tool, cached)
    if found and plugins_ok:
        return Resolved(tool, "cache", found)
    if found and not allow_build:
        raise ToolError(f"missing Pulumi plugins {', '.join(missing_plugins(tool, cache))} in "
                        f"{plugin_home(cache)}: needed because {tool.why}. Get them: make tools")
    download_error = ""
    if allow_download and all(name in tool.downloads for name in tool.binaries):
        try:
            return Resolved(tool, "download", download_tool(tool, cache, fetch, log))
        except (OSError, ToolError) as error:  # no network, refused, or a bad checksum: fall back to building
            download_error = f"download failed ({error}); "
            log(f"tools: {tool.name}: {download_error}building it from Go modules instead")
    if not allow_build:
        raise ToolError(f"missing {tool.name} ({', '.join(tool.binaries)}): needed because {tool.why}. "
                        f"{download_error}Get it: make tools")
    log(f"tools: {tool.name} {tool.version}: not on PATH or in {cache}; building it from Go modules "
        f"(`{' '.join(tool.build_command)}`)")
    code = build(tool.build_command)
    found = _all_found(tool, cached) or _all_found(tool, path_which)
    if code != 0 or not found or (not allow_download and missing_plugins(tool, cache)):
        raise ToolError(f"building {tool.name} failed (exit {code}); see the output above and "
                        f"{cache / 'logs'}. Fix the cause and run `make tools` again (finished parts are kept)")
    return Resolved(tool, "build", found)


def resolve_all(tools: Sequence[Tool], log: Log = print, **kwargs) -> list[Resolved]:
    """Resolve each tool and say where it came from, one line each."""
    resolved = []
    for tool in tools:
        result = resolve_tool(tool, log=log, **kwargs)
        where = ", ".join(result.paths.values())
        log(f"tools: {tool.name:8} {result.source:8} {where}")
        resolved.append(result)
    return resolved
