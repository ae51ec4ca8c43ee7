"""The KIND node image, built locally when ``kindest/node`` cannot be pulled.

``kind build node-image`` pulls its base image and the control-plane, CNI and storage images, so
it cannot work offline. This module builds an equivalent image from parts made on this machine:

1. a Debian bookworm root filesystem (``debootstrap``) with the packages kind's base image
   installs, laid out as kind's base image lays it out (the files under ``images/base/files`` of the
   ``sigs.k8s.io/kind`` Go module: entrypoint, systemd units, containerd config);
2. containerd, runc, crictl and the CNI plugins, and the Kubernetes binaries (kubeadm, kubelet,
   kubectl), all built from Go modules by ``e2e/toolchain/cluster.sh``;
3. the images ``kubeadm config images list`` names (apiserver, controller-manager, scheduler,
   kube-proxy, etcd, CoreDNS, pause) made from our binaries under the tags kubeadm expects, plus the
   kube-router image of the default CNI (``images/kind-node/default-cni.yaml``), imported into the
   node's containerd as kind does (pinned, not unpacked).

The image is tagged ``agent-sandbox/kind-node:<kubernetes version>-<key>``, the key being a hash of
every input (binaries by content, the kind base files, our files, the package list, this recipe's
version), so it is rebuilt only when an input changes. A build that stops half way leaves only
intermediate objects under names of its own, removed by the next build; the final tag is written
last. Users with a registry keep the same cluster config: only ``kind create cluster --image``
differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

from automation.errors import NodeImageError

REPO_ROOT = Path(__file__).resolve().parent.parent
FILES_DIR = REPO_ROOT / "images" / "kind-node"
# Bumped when the recipe below changes what ends up in the image.
RECIPE_VERSION = "2"
# Bumped when the debootstrap roots change (their own cache key: packages and this).
ROOTFS_VERSION = "2"
IMAGE_REPOSITORY = "agent-sandbox/kind-node"
BUILD_LABEL = "io.agent-sandbox.build=kind-node"
BUILD_NAME_PREFIX = "agent-sandbox-kind-node-build-"
SUITE = "bookworm"
# What kind's base image installs (images/base/Dockerfile), less the storage clients (nfs-common,
# open-iscsi) and fuse-overlayfs, which only network storage and rootless nodes use.
NODE_PACKAGES = (
    "systemd", "conntrack", "iptables", "nftables", "iproute2", "ethtool", "util-linux", "mount", "kmod",
    "libseccomp2", "pigz", "bash", "ca-certificates", "curl", "jq", "procps",
)
# The root filesystem of the kube-proxy and kube-router images (they call iptables and ipset).
NET_PACKAGES = ("iptables", "ipset", "conntrack", "iproute2")
CONTROL_PLANE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
NODE_KUBE_BINARIES = ("kubeadm", "kubelet", "kubectl")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "ptp")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Versions:
    """The pinned versions the image is made of (``e2e/toolchain/cluster-versions.sh``)."""

    kubernetes: str
    kind: str
    etcd: str
    coredns: str
    coredns_build: str
    containerd: str
    runc: str
    crictl: str
    cni_plugins: str
    kube_router: str
    pause: str


@dataclass(frozen=True)
class NodeImageInputs:
    """Everything the image is built from; its hash is the image's cache key."""

    versions: Versions
    binaries: Mapping[str, Path]
    """Name → file: Kubernetes, etcd, CoreDNS, pause, kube-router, containerd, ctr, shim, runc, crictl."""
    cni_plugins: Mapping[str, Path]
    kind_base_files: Path
    """``images/base/files`` of the ``sigs.k8s.io/kind`` module at ``versions.kind``."""
    own_files: Sequence[Path] = field(default_factory=lambda: sorted(FILES_DIR.glob("*.yaml")) +
                                      sorted(FILES_DIR.glob("*.sh")))

    def missing(self) -> list[str]:
        """Inputs that do not exist, as ``name (path)``."""
        wanted = {**self.binaries, **{f"cni/{k}": v for k, v in self.cni_plugins.items()},
                  "kind base files": self.kind_base_files}
        return [f"{name} ({path})" for name, path in sorted(wanted.items()) if not Path(path).exists()]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(root: Path) -> str:
    """Hash of a directory's files (relative paths, modes and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}\0{path.stat().st_mode & 0o111:o}\0{_file_digest(path)}\n".encode())
    return digest.hexdigest()


def cache_key(inputs: NodeImageInputs) -> str:
    """12 hex digits that change whenever anything that goes into the image changes."""
    digest = hashlib.sha256()
    digest.update(f"recipe {RECIPE_VERSION}\nsuite {SUITE}\n".encode())
    digest.update(("packages " + " ".join(NODE_PACKAGES) + "\nnet " + " ".join(NET_PACKAGES) + "\n").encode())
    digest.update(json.dumps(inputs.versions.__dict__, sort_keys=True).encode())
    for name, path in sorted(inputs.binaries.items()):
        digest.update(f"bin {name} {_file_digest(Path(path))}\n".encode())
    for name, path in sorted(inputs.cni_plugins.items()):
        digest.update(f"cni {name} {_file_digest(Path(path))}\n".encode())
    digest.update(f"kind-base {tree_digest(inputs.kind_base_files)}\n".encode())
    for path in inputs.own_files:
        digest.update(f"own {Path(path).name} {_file_digest(Path(path))}\n".encode())
    return digest.hexdigest()[:12]


def image_tag(inputs: NodeImageInputs, key: Optional[str] = None) -> str:
    return f"{IMAGE_REPOSITORY}:{inputs.versions.kubernetes}-{key or cache_key(inputs)}"


# ----------------------------------------------------------------------------- toolchain layout

def read_versions(versions_file: Path = REPO_ROOT / "e2e" / "toolchain" / "cluster-versions.sh") -> Versions:
    """The pins, read by sourcing the toolchain's versions file (its one home)."""
    names = {
        "kubernetes": "KUBERNETES_VERSION", "kind": "KIND_VERSION", "etcd": "ETCD_VERSION",
        "coredns": "COREDNS_VERSION", "coredns_build": "COREDNS_BUILD", "containerd": "CONTAINERD_VERSION",
        "runc": "RUNC_VERSION", "crictl": "CRICTL_VERSION", "cni_plugins": "CNI_PLUGINS_VERSION",
        "kube_router": "KUBE_ROUTER_VERSION", "pause": "PAUSE_VERSION",
    }
    script = f". {versions_file}; " + "; ".join(f'echo "{var}=${var}"' for var in names.values())
    env = {k: v for k, v in os.environ.items() if k not in names.values()}
    output = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True, env=env).stdout
    values = dict(line.split("=", 1) for line in output.splitlines())
    return Versions(**{field_name: values[var] for field_name, var in names.items()})


def toolchain_inputs(cache_dir: Path, versions: Optional[Versions] = None) -> NodeImageInputs:
    """Where ``e2e/toolchain/cluster.sh`` puts each part, for the pinned versions."""
    v = versions or read_versions()
    cache_dir = Path(cache_dir)

    def built(component: str, version: str, name: str) -> Path:
        return cache_dir / component / version / "bin" / name

    binaries = {name: built("kubernetes", v.kubernetes, name) for name in (*CONTROL_PLANE_BINARIES, *NODE_KUBE_BINARIES)}
    binaries.update({
        "etcd": built("etcd", v.etcd, "etcd"),
        "coredns": built("coredns", v.coredns_build, "coredns"),
        "pause": built("pause", v.pause, "pause"),
        "kube-router": built("kube-router", v.kube_router, "kube-router"),
        "containerd": built("containerd", v.containerd, "containerd"),
        "ctr": built("containerd", v.containerd, "ctr"),
        "containerd-shim-runc-v2": built("containerd", v.containerd, "containerd-shim-runc-v2"),
        "runc": built("runc", v.runc, "runc"),
        "crictl": built("crictl", v.crictl, "crictl"),
    })
    cni = {name: built("cni-plugins", v.cni_plugins, name) for name in CNI_PLUGINS}
    kind_files = cache_dir / "go" / "mod" / "sigs.k8s.io" / f"kind@{v.kind}" / "images" / "base" / "files"
    return NodeImageInputs(versions=v, binaries=binaries, cni_plugins=cni, kind_base_files=kind_files)


# ----------------------------------------------------------------------------- running things

class Steps:
    """Runs the build's commands with a progress line per step and a heartbeat every ``beat`` s."""

    def __init__(self, log: Log, log_file: Path, beat: float = 20.0):
        self.log, self.log_file, self.beat = log, log_file, beat
        self.started = time.monotonic()

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.0f}s"

    def run(self, what: str, command: Sequence[str], *, input_path: Optional[Path] = None,
            capture: bool = False, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run ``command``; output goes to the log file (or is returned with ``capture``)."""
        self.log(f"node-image: {what} [{self.elapsed()}]")
        done = threading.Event()
        step_start = time.monotonic()

        def heartbeat() -> None:
            while not done.wait(self.beat):
                self.log(f"node-image:   ... {what}: {time.monotonic() - step_start:.0f}s (log: {self.log_file})")

        thread = threading.Thread(target=heartbeat, daemon=True)
        thread.start()
        try:
            with open(self.log_file, "a") as log_handle:
                log_handle.write(f"\n$ {' '.join(map(str, command))}\n")
                log_handle.flush()
                stdin = open(input_path, "rb") if input_path else subprocess.DEVNULL
                try:
                    result = subprocess.run(list(map(str, command)), stdin=stdin,
                                            stdout=subprocess.PIPE if capture else log_handle,
                                            stderr=log_handle, text=capture, **kwargs)
                finally:
                    if input_path:
                        stdin.close()
        finally:
            done.set()
            thread.join()
        if check and result.returncode != 0:
            raise NodeImageError(f"{what} failed (exit {result.returncode}); last lines of {self.log_file}:\n"
                                 + _tail(self.log_file, 15))
        return result


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def debian_mirror(sources: Iterable[Path] = (Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*")))) -> str:
    """apt's configured Debian mirror (``DEBIAN_MIRROR`` overrides)."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    for source in sources:
        try:
            text = Path(source).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "URIs:" and words[1].rstrip("/").endswith("/debian"):
                return words[1]
            if len(words) >= 3 and words[0] == "deb" and words[1].rstrip("/").endswith("/debian"):
                return words[1]
    return "http://deb.debian.org/debian"


# ----------------------------------------------------------------------------- the build

@dataclass
class NodeImageBuilder:
    """Builds (or finds) the node image for ``inputs`` with ``docker``."""

    inputs: NodeImageInputs
    cache_dir: Path
    docker: str = "docker"
    log: Log = print

    @property
    def work_dir(self) -> Path:
        return Path(self.cache_dir) / "kind-node"

    def image_present(self, tag: str) -> bool:
        return subprocess.run([self.docker, "image", "inspect", tag], capture_output=True).returncode == 0

    def ensure(self) -> str:
        """The node image's tag, building it first when it is not in the engine."""
        missing = self.inputs.missing()
        if missing:
            raise NodeImageError("cannot build the KIND node image, parts are missing: " + ", ".join(missing)
                                 + ". Build them with: make tools (or bash e2e/toolchain/cluster.sh)")
        key = cache_key(self.inputs)
        tag = image_tag(self.inputs, key)
        if self.image_present(tag):
            self.log(f"node-image: {tag} present (inputs unchanged)")
            return tag
        self.work_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.work_dir / ".lock", "w")
        import fcntl

        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.log("node-image: another build holds the lock; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if self.image_present(tag):
                return tag
            self._build(key, tag)
        finally:
            lock.close()
        return tag

    def ensure_root_filesystems(self) -> None:
        """The two debootstrap roots alone, cached (they wait on the network, not the CPU, so ``up``
        makes them while the tools build)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        steps = Steps(self.log, self.work_dir / "rootfs.log")
        self._rootfs(steps, "node", NODE_PACKAGES)
        self._rootfs(steps, "net", NET_PACKAGES)

    # The steps -------------------------------------------------------------------------------

    def _build(self, key: str, tag: str) -> None:
        log_file = self.work_dir / f"build-{key}.log"
        log_file.write_text("")
        steps = Steps(self.log, log_file)
        self.log(f"node-image: building {tag} (log: {log_file})")
        build_name = f"{BUILD_NAME_PREFIX}{key}"
        stage_tag = f"{IMAGE_REPOSITORY}-stage:{key}"
        self._remove_leftovers(steps, build_name)
        node_rootfs = self._rootfs(steps, "node", NODE_PACKAGES)
        net_rootfs = self._rootfs(steps, "net", NET_PACKAGES)
        images_tar = self._component_images(steps, key, net_rootfs)
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix="stage-") as stage:
            root = Path(stage) / "rootfs"
            root.mkdir()
            steps.run("unpacking the node root filesystem", ["tar", "-C", root, "--numeric-owner", "-xf", node_rootfs])
            self._lay_out_node(steps, root)
            stage_tar = Path(stage) / "node.tar"
            steps.run("packing the node root filesystem", ["tar", "-C", root, "--numeric-owner", "-cf", stage_tar, "."])
            steps.run("importing the node root filesystem", [
                self.docker, "import", "--change", "ENV container=docker",
                "--change", 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
                stage_tar, stage_tag])
        self._import_images(steps, build_name, stage_tag, images_tar, tag)
        steps.run("removing the intermediate image", [self.docker, "rmi", stage_tag], check=False)
        self._verify(steps, tag)
        self.log(f"node-image: built {tag} in {steps.elapsed()}")

    def _remove_leftovers(self, steps: Steps, build_name: str) -> None:
        # Both the label and the name: nothing but a build container of ours matches (the final image
        # clears the label, so kind nodes made from it never carry it).
        result = subprocess.run([self.docker, "ps", "-aq", "--filter", f"label={BUILD_LABEL}",
                                 "--filter", f"name={BUILD_NAME_PREFIX}"], capture_output=True, text=True)
        for container in result.stdout.split():
            steps.run(f"removing a half-finished build container {container}", [self.docker, "rm", "-f", "-v", container],
                      check=False)

    def _rootfs(self, steps: Steps, name: str, packages: Sequence[str]) -> Path:
        """A debootstrap root filesystem tarball, cached by suite and package list."""
        key = hashlib.sha256(f"{SUITE} {' '.join(packages)} {ROOTFS_VERSION}".encode()).hexdigest()[:12]
        tarball = self.work_dir / f"rootfs-{name}-{SUITE}-{key}.tar"
        if tarball.is_file():
            self.log(f"node-image: {name} root filesystem cached ({tarball.name})")
            return tarball
        if shutil.which("debootstrap") is None:
            steps.run("installing debootstrap (apt-get)", ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                                           "debootstrap"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix=f"rootfs-{name}-") as tmp:
            root = Path(tmp) / "root"
            mirror = debian_mirror()
            steps.run(f"debootstrap {SUITE} ({name}: {', '.join(packages)}) from {mirror}", [
                "debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, root, mirror])
            _trim(root, mirror)
            steps.run(f"packing the {name} root filesystem", ["tar", "-C", root, "--numeric-owner", "-cf",
                                                             f"{tarball}.tmp", "."])
        os.replace(f"{tarball}.tmp", tarball)
        return tarball

    def _lay_out_node(self, steps: Steps, root: Path) -> None:
        """kind's base-image layout plus our binaries, as kind's Dockerfile and node build do."""
        files = Path(self.inputs.kind_base_files)
        b = self.inputs.binaries

        def put(source: Path, dest: str, mode: int) -> None:
            target = root / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            os.chmod(target, mode)

        for source in sorted(p for p in files.rglob("*") if p.is_file()):
            relative = source.relative_to(files)
            if relative.parts[0] == "LICENSES":
                dest = "/LICENSES/" + "/".join(relative.parts[1:])
            else:
                dest = "/" + str(relative)
            executable = relative.parts[:3] == ("usr", "local", "bin") or relative.parts[:2] == ("kind", "bin")
            put(source, dest, 0o755 if executable else 0o644)
        os.chmod(root / "kind" / "bin", 0o755)
        for name in ("containerd", "ctr", "containerd-shim-runc-v2", "crictl"):
            put(b[name], f"/usr/local/bin/{name}", 0o755)
        put(b["runc"], "/usr/local/sbin/runc", 0o755)
        for name in NODE_KUBE_BINARIES:
            put(b[name], f"/usr/bin/{name}", 0o755)
        for name, path in self.inputs.cni_plugins.items():
            put(path, f"/opt/cni/bin/{name}", 0o755)
        (root / "etc" / "kubernetes" / "manifests").mkdir(parents=True, exist_ok=True)
        (root / "kind" / "version").write_text(self.inputs.versions.kubernetes)
        manifest = (FILES_DIR / "default-cni.yaml").read_text().replace(
            "KUBE_ROUTER_VERSION", self.inputs.versions.kube_router)
        (root / "kind" / "manifests").mkdir(parents=True, exist_ok=True)
        (root / "kind" / "manifests" / "default-cni.yaml").write_text(manifest)
        # The base OCI spec kind's containerd config names: ctr's default plus kind's product-files
        # hook, without rlimits (as kind's base image derives it).
        spec = json.loads(steps.run("generating the base OCI spec", [b["ctr"], "oci", "spec"], capture=True).stdout)
        spec.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
        spec["process"].pop("rlimits", None)
        (root / "etc" / "containerd" / "cri-base.json").write_text(json.dumps(spec, indent=2))
        # systemd as kind's base image sets it up: only the units a node needs start.
        for pattern in ("lib/systemd/system/multi-user.target.wants/*", "etc/systemd/system/*.wants/*",
                        "lib/systemd/system/local-fs.target.wants/*", "lib/systemd/system/sockets.target.wants/*udev*",
                        "lib/systemd/system/sockets.target.wants/*initctl*", "lib/systemd/system/basic.target.wants/*",
                        "lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service"):
            for path in root.glob(pattern):
                path.unlink()
        with open(root / "etc" / "systemd" / "journald.conf", "a") as journald:
            journald.write("ReadKMsg=no\n")
        init = root / "sbin" / "init"
        if init.is_symlink() or init.exists():
            init.unlink()
        init.symlink_to("/lib/systemd/systemd")
        steps.run("enabling the node's services", ["chroot", root, "systemctl", "enable", "kubelet.service",
                                                   "containerd.service", "undo-mount-hacks.service"])
        steps.run("masking systemd-binfmt", ["chroot", root, "systemctl", "mask", "systemd-binfmt.service"])

    def _component_images(self, steps: Steps, key: str, net_rootfs: Path) -> Path:
        """One docker-archive with every image the node preloads, under the tags kubeadm expects."""
        archive = self.work_dir / f"images-{key}.tar"
        if archive.is_file():
            self.log(f"node-image: component images cached ({archive.name})")
            return archive
        v = self.inputs.versions
        b = self.inputs.binaries
        listed = steps.run("asking kubeadm which images it expects",
                           [b["kubeadm"], "config", "images", "list", "--kubernetes-version", v.kubernetes],
                           capture=True).stdout.split()
        net_base = f"{IMAGE_REPOSITORY}-netbase:{key}"
        steps.run("importing the iptables base", [self.docker, "import", net_rootfs, net_base])
        plans = component_image_plans(listed, v)
        tags: list[str] = []
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix="images-") as tmp:
            for plan in plans:
                context = Path(tmp) / plan.binary
                context.mkdir()
                shutil.copyfile(b[plan.binary], context / plan.binary)
                os.chmod(context / plan.binary, 0o755)
                if plan.needs_iptables:
                    shutil.copyfile(FILES_DIR / "iptables-wrapper.sh", context / "iptables-wrapper")
                    os.chmod(context / "iptables-wrapper", 0o755)
                (context / "Dockerfile").write_text(plan.dockerfile(net_base))
                command = [self.docker, "build", "--network", "none", "-q"]
                for tag in plan.tags:
                    command += ["-t", tag]
                steps.run(f"image {' '.join(plan.tags)}", [*command, context],
                          env={**os.environ, "DOCKER_BUILDKIT": "0"})
                tags += plan.tags
            steps.run(f"saving {len(tags)} images", [self.docker, "save", "-o", f"{archive}.tmp", *tags])
        os.replace(f"{archive}.tmp", archive)
        steps.run("removing the build-only image tags", [self.docker, "rmi", *tags, net_base], check=False)
        return archive

    def _import_images(self, steps: Steps, build_name: str, stage_tag: str, images_tar: Path, tag: str) -> None:
        """Start the staged node, import the images into its containerd, commit the result."""
        steps.run("starting the staged node", [
            self.docker, "run", "-d", "--privileged", "--name", build_name, "--label", BUILD_LABEL,
            "--entrypoint", "sleep", stage_tag, "infinity"])
        try:
            steps.run("starting containerd in the staged node",
                      [self.docker, "exec", build_name, "bash", "-c", "nohup containerd >/var/log/containerd-build.log 2>&1 &"])
            steps.run("waiting for containerd", [self.docker, "exec", build_name, "bash", "-c",
                      "for i in $(seq 1 60); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 "
                      "&& exit 0; sleep 0.5; done; cat /var/log/containerd-build.log; exit 1"])
            steps.run("importing the images into the node's containerd", [
                self.docker, "exec", "-i", build_name, "ctr", "--namespace=k8s.io", "images", "import",
                "--label=io.cri-containerd.pinned=pinned", "--all-platforms", "--no-unpack", "--digests", "-"],
                input_path=images_tar)
            steps.run("stopping containerd", [self.docker, "exec", build_name, "bash", "-c",
                      "pkill containerd; for i in $(seq 1 40); do pgrep containerd >/dev/null || exit 0; sleep 0.25; done"])
            committed = f"{IMAGE_REPOSITORY}-committed:{tag.rsplit('-', 1)[-1]}"
            steps.run("committing the node image", [
                self.docker, "commit", "--change", 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
                "--change", "CMD []", "--change", "ENV container=docker",
                # a commit keeps the build container's labels: clear ours, so no node ever looks like a build
                "--change", "LABEL io.agent-sandbox.build=", build_name, committed])
        finally:
            steps.run("removing the build container", [self.docker, "rm", "-f", "-v", build_name], check=False)
        # `docker commit --change` takes no STOPSIGNAL on every engine: a metadata-only build adds it
        # (systemd stops on SIGRTMIN+3; SIGTERM would make it re-execute) and writes the final tag.
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix="final-") as context:
            (Path(context) / "Dockerfile").write_text(
                f"FROM {committed}\nSTOPSIGNAL SIGRTMIN+3\n"
                f"LABEL io.agent-sandbox.kind-node.key={tag.rsplit('-', 1)[-1]}\n")
            steps.run("tagging the node image", [self.docker, "build", "-q", "--network", "none", "-t", tag, context],
                      env={**os.environ, "DOCKER_BUILDKIT": "0"})
        steps.run("removing the intermediate commit", [self.docker, "rmi", committed], check=False)

    def _verify(self, steps: Steps, tag: str) -> None:
        out = steps.run("checking the image", [self.docker, "run", "--rm", "--entrypoint", "cat", tag, "/kind/version"],
                        capture=True).stdout.strip()
        if out != self.inputs.versions.kubernetes:
            raise NodeImageError(f"the built node image says Kubernetes {out!r}, expected {self.inputs.versions.kubernetes}")


@dataclass(frozen=True)
class ImagePlan:
    """One preloaded image: which binary, where it goes, under which tags."""

    binary: str
    tags: tuple[str, ...]
    path: str
    entrypoint: Optional[str] = None
    needs_iptables: bool = False
    version: str = ""

    def dockerfile(self, net_base: str) -> str:
        lines = [f"FROM {net_base if self.needs_iptables else 'scratch'}",
                 f"COPY {self.binary} {self.path}"]
        if self.needs_iptables:
            lines.append("COPY iptables-wrapper /usr/sbin/iptables-wrapper")
            lines.append("RUN for c in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; "
                         "do ln -sf iptables-wrapper /usr/sbin/$c; done")
        lines.append("ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin")
        if self.entrypoint:
            lines.append(f'ENTRYPOINT ["{self.entrypoint}"]')
        lines.append(f'LABEL org.opencontainers.image.version="{self.version}" '
                     f'org.opencontainers.image.description="built locally by agent-sandbox (automation/node_image.py)"')
        return "\n".join(lines) + "\n"


def component_image_plans(kubeadm_images: Sequence[str], v: Versions) -> list[ImagePlan]:
    """Map ``kubeadm config images list`` to our binaries. etcd and CoreDNS carry kubeadm's tags
    but our pinned builds (their image labels say which version is inside)."""
    plans: list[ImagePlan] = []
    pause_tags = [f"registry.k8s.io/pause:{v.pause}"]
    for image in kubeadm_images:
        repository = image.rsplit(":", 1)[0]
        name = repository.rsplit("/", 1)[-1]
        if name in CONTROL_PLANE_BINARIES:
            plans.append(ImagePlan(name, (image,), f"/usr/local/bin/{name}",
                                   needs_iptables=name == "kube-proxy", version=v.kubernetes))
        elif name == "etcd":
            plans.append(ImagePlan("etcd", (image,), "/usr/local/bin/etcd", version=v.etcd))
        elif name == "coredns":
            plans.append(ImagePlan("coredns", (image,), "/coredns", entrypoint="/coredns", version=v.coredns))
        elif name == "pause":
            pause_tags.append(image)
        else:
            raise NodeImageError(f"kubeadm expects an image this build does not know how to make: {image}")
    plans.append(ImagePlan("pause", tuple(dict.fromkeys(pause_tags)), "/pause", entrypoint="/pause", version=v.pause))
    plans.append(ImagePlan("kube-router", (f"localhost/agent-sandbox/kube-router:{v.kube_router}",),
                           "/usr/local/bin/kube-router", entrypoint="/usr/local/bin/kube-router",
                           needs_iptables=True, version=v.kube_router))
    return plans


def _trim(root: Path, mirror: str) -> None:
    """Drop what a node never reads (docs, man pages, apt lists), as kind's clean-install does."""
    if not (root / "usr" / "bin").is_dir() or str(root) in ("/", ""):
        raise NodeImageError(f"refusing to trim {root}: not a bootstrapped root filesystem")
    subprocess.run(["chroot", str(root), "apt-get", "clean"], check=False, capture_output=True)
    for relative in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/lib/apt/lists",
                     "var/log", "tmp", "var/tmp"):
        directory = root / relative
        if directory.is_dir():
            for child in directory.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    (root / "etc" / "apt" / "sources.list").write_text(f"deb {mirror} {SUITE} main\n")
    machine_id = root / "etc" / "machine-id"
    if machine_id.exists():
        machine_id.write_text("")
