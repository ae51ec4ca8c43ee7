"""Everything ``up`` does before the engine runs, for a KIND stack on a fresh machine.

In order: the tools (:mod:`automation.tools`), a Docker engine that can run kind's privileged
nodes, memory and disk, the node image (``kindest/node`` when it can be pulled, else built here by
:mod:`automation.node_image`), the cluster (``kind create cluster`` with the gVisor config), and
the images the cluster cannot pull: our runtime and router images (built with the docker CLI when
the pulumi-docker provider plugin cannot be had: the stack then runs with ``imageBuild:
prebuilt``, said loudly and visible in the outputs) and, offline, the controller image built from
its Go module. The result is the config overrides the engine run needs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from automation import cluster as clusters
from automation import node_image, preflight, tools
from automation.errors import SetupError
from automation.engine_env import pulumi_env
from automation.paths import PROJECT_DIR, ProjectPaths, cache_dir
from agent_sandbox_pulumi.sandbox_iac import versions
from agent_sandbox_pulumi.sandbox_iac.config import StackConfig

Log = Callable[[str], None]
# The node image kind v0.30.0 defaults to (Kubernetes v1.34.0), used when it can be pulled.
KINDEST_NODE_IMAGE = "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a"
CONTROLLER_LOCAL_IMAGE = "localhost/agent-sandbox-controller:{version}"
DOCKER_ENGINE_SCRIPT = PROJECT_DIR / "e2e" / "docker-engine.sh"
BUILD_IMAGES_SCRIPT = PROJECT_DIR / "images" / "base" / "build-images.sh"
CLUSTER_TOOLCHAIN = PROJECT_DIR / "e2e" / "toolchain" / "cluster.sh"
NODE_IMAGE_PARTS = ("kubernetes", "etcd", "coredns", "pause", "kube-router", "containerd", "runc", "crictl",
                    "cni-plugins")
# The order the parallel stream builds them in: Kubernetes last, as the tools step may be building
# it already for kubectl (cluster.sh holds a lock per part: the second builder waits, then finds it).
PARALLEL_PARTS = (*(p for p in NODE_IMAGE_PARTS if p != "kubernetes"), "kubernetes")
CONTROLLER_IMAGE_PARTS = ("pause", "agent-sandbox", "images")
# KEDA's two images (installKeda on a cluster we made, when the release's cannot be pulled): the
# config key each fills, the local tag (cluster-versions.sh) and the archive `cluster.sh keda` writes.
KEDA_LOCAL_IMAGES = {"kedaOperatorImage": ("localhost/keda:{version}", "keda-operator.tar"),
                     "kedaMetricsImage": ("localhost/keda-metrics-apiserver:{version}", "keda-metrics-apiserver.tar")}
PARALLEL_PREFIX = "  | "


@dataclass
class SetupResult:
    """What the set-up did, and the config the engine run needs because of it."""

    overrides: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    node_image: str = ""
    cluster_created: bool = False
    timings: dict[str, float] = field(default_factory=dict)


_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()


def _stream(command: list[str], log: Log, env: Optional[dict[str, str]] = None) -> tuple[int, list[str]]:
    """Run a command, echoing its output lines (they carry the long steps' progress)."""
    # its own process group, so a failure of the other stream stops the whole build (go and all)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=PROJECT_DIR, env=env, start_new_session=True)
    with _RUNNING_LOCK:
        _RUNNING.add(process)
    try:
        return _drain(process, log)
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(process)


def _stop_running() -> None:
    """Stop the builds still running (the other stream failed: their work would be thrown away)."""
    with _RUNNING_LOCK:
        for process in list(_RUNNING):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


def _drain(process: subprocess.Popen, log: Log) -> tuple[int, list[str]]:
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        log("  " + line.rstrip("\n"))
    return process.wait(), lines


class Setup:
    """The set-up of one KIND stack; each step logs what it does and how long it took."""

    def __init__(self, config: StackConfig, paths: ProjectPaths, log: Log = print, workers: int = 0):
        self.config, self.paths, self.log, self.workers = config, paths, log, workers
        self.cache = cache_dir()
        self.offline = tools.offline()
        self.result = SetupResult()
        self.docker = "docker"
        # asked once each, by whichever stream needs them first
        self._kindest_asked = False
        self._kindest: Optional[str] = None
        self._local_controller: Optional[bool] = None
        self._local_keda: Optional[bool] = None

    def _timed(self, name: str, step: Callable[[], None]) -> None:
        started = time.monotonic()
        step()
        self.result.timings[name] = round(time.monotonic() - started, 1)
        self.log(f"setup: {name} done in {self.result.timings[name]:.0f}s")

    def run(self) -> SetupResult:
        c = self.config
        self.log(f"setup: {c.stack} on kind cluster {c.cluster_name!r} ({1 + self.workers} node(s)), "
                 + ("offline: nothing is downloaded or pulled" if self.offline else "downloads allowed"))
        try:
            self._timed("engine", self.ensure_engine)
            # On a fresh machine the tools' build is CPU-bound for tens of minutes while the node
            # image's root filesystems and our images mostly wait on the network: the two streams
            # run side by side (lines of the second start with "|").
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="setup-parallel") as pool:
                parallel = pool.submit(self._timed, "parallel", self.prepare_in_parallel)
                try:
                    self._timed("tools", self.ensure_tools)
                except BaseException:
                    _stop_running()  # the other stream's work would be thrown away
                    raise
                if not parallel.done():
                    self.log("setup: tools ready; waiting for the parallel stream (node image parts, images)")
                parallel.result()
            self._timed("cluster", self.ensure_cluster)
            self._timed("images", self.ensure_images)
        except BaseException:
            # builds run in process groups of their own (so one stream can stop the other): an
            # interrupt or a failure stops them here rather than leaving them to the terminal
            _stop_running()
            raise
        return self.result

    def prepare_in_parallel(self) -> None:
        """Beside the tools: the node image's own parts and root filesystems, the controller image
        (offline) and our runtime and router images (when the docker CLI builds them)."""
        log = lambda line: self.log(PARALLEL_PREFIX + line)  # noqa: E731
        if not self._cluster_nodes_exist():
            self.prepare_node_image(log)
        self.prepare_images(log)

    def _cluster_nodes_exist(self) -> bool:
        # kind itself may still be building: the engine's labels say whether the cluster has nodes
        result = subprocess.run([self.docker, "ps", "-aq", "--filter",
                                 f"label=io.x-k8s.kind.cluster={self.config.cluster_name}"],
                                capture_output=True, text=True)
        return result.returncode == 0 and bool(result.stdout.split())

    # -- steps ------------------------------------------------------------------------------

    def ensure_tools(self) -> None:
        resolved = tools.resolve_all(tools.tools_for(self.config.cluster_flavour, self.config.runtime), log=self.log)
        self.tool_paths = {name: path for r in resolved for name, path in r.paths.items()}

    def ensure_engine(self) -> None:
        state = preflight.engine_state(self.docker)
        # a missing client is installed by the script too, which only root can do (ours to start)
        if not state.answers and self._engine_is_ours_to_start():
            self.log("setup: no Docker engine answers; starting Debian's dockerd (e2e/docker-engine.sh)")
            code, lines = _stream(["bash", str(DOCKER_ENGINE_SCRIPT), "start"], self.log)
            if code != 0:
                raise SetupError("could not start a Docker engine (see the lines above). Fix the cause, or start "
                                 "your own engine, then run `make up` again")
            state = preflight.engine_state(self.docker)
        elif state.answers and preflight.root_lacks_capabilities() and state.default_runtime != "agent-sandbox-runc":
            # our own engine from an earlier run, without the capability filter: the script restarts it
            code, _ = _stream(["bash", str(DOCKER_ENGINE_SCRIPT), "start"], self.log)
            state = preflight.engine_state(self.docker)
        preflight.check_engine(state, preflight.root_lacks_capabilities())
        self.engine = state
        self.log(f"setup: Docker engine {state.server_version} (data root {state.data_root})")

    def _engine_is_ours_to_start(self) -> bool:
        return preflight.running_as_root() and DOCKER_ENGINE_SCRIPT.is_file()

    def ensure_cluster(self) -> None:
        c = self.config
        existing = clusters.kind_clusters()
        record = clusters.read_record(self.paths, c.stack)
        reuse = preflight.check_cluster_name(
            c.cluster_name, existing, created_by_us=record is not None and record.name == c.cluster_name,
            has_runsc=c.cluster_name in existing and clusters.kind_node_has_runsc(c.cluster_name))
        if reuse:
            self.log(f"setup: kind cluster {c.cluster_name!r} exists, reusing it")
            return
        preflight.check_node_names(preflight.node_container_names(c.cluster_name, self.workers),
                                   clusters.container_names())
        preflight.check_memory(preflight.mem_available(preflight.read_meminfo()), 1 + self.workers)
        preflight.check_disk(preflight.disk_free(self.engine.data_root), self.engine.data_root,
                             preflight.DISK_CLUSTER, "the KIND nodes")
        image = self.ensure_node_image()
        self.result.node_image = image
        if clusters.ensure_lib_modules(self.paths, c.stack):
            self.log("setup: created the empty directory /lib/modules (this kernel has none; kind bind-mounts it "
                     "into every node); `make down-cluster` removes it again")
        self.result.cluster_created = clusters.create_kind_cluster(
            c, self.paths, image=image, runsc=self.tool_paths.get("runsc"),
            shim=self.tool_paths.get("containerd-shim-runsc-v1"), workers=self.workers,
            restrict_oom_score_adj=preflight.root_lacks_capabilities(),
            cgroupfs_driver=preflight.host_cgroup_v1(), log=self.log)

    def _kindest_node(self, log: Log) -> Optional[str]:
        """``kindest/node`` when it is here or can be pulled (never offline); the answer is kept."""
        if self.offline:
            return None
        if not self._kindest_asked:
            self._kindest_asked = True
            if subprocess.run([self.docker, "image", "inspect", KINDEST_NODE_IMAGE], capture_output=True).returncode == 0:
                self._kindest = KINDEST_NODE_IMAGE
            else:
                log(f"setup: pulling {KINDEST_NODE_IMAGE}")
                pulled = subprocess.run([self.docker, "pull", KINDEST_NODE_IMAGE], capture_output=True, text=True)
                if pulled.returncode == 0:
                    self._kindest = KINDEST_NODE_IMAGE
                else:
                    log(f"setup: cannot pull kindest/node ({(pulled.stderr or '').strip()[:160]}); "
                        "building the node image here")
        return self._kindest

    def _build_parts(self, parts: tuple[str, ...], log: Log) -> None:
        log("setup: building " + ", ".join(parts) + " from Go modules (cached by version)")
        code, _ = _stream(["bash", str(CLUSTER_TOOLCHAIN), *parts], log)
        if code != 0:
            raise SetupError(f"building {', '.join(parts)} failed (logs in {self.cache / 'logs'}); "
                             "fix the cause and run `make up` again (finished parts are kept)")

    def prepare_node_image(self, log: Log) -> None:
        """The node image's parts and its root filesystems."""
        if self._kindest_node(log):
            return
        if node_image.toolchain_inputs(self.cache).missing():
            self._build_parts(PARALLEL_PARTS, log)
        node_image.NodeImageBuilder(node_image.toolchain_inputs(self.cache), self.cache, docker=self.docker,
                                    log=log).ensure_root_filesystems()

    def ensure_node_image(self) -> str:
        kindest = self._kindest_node(self.log)
        if kindest:
            return kindest
        inputs = node_image.toolchain_inputs(self.cache)
        if inputs.missing():
            # kubectl came from PATH (so Kubernetes was not built), or a part was removed meanwhile
            self._build_parts(NODE_IMAGE_PARTS, self.log)
            inputs = node_image.toolchain_inputs(self.cache)
        preflight.check_disk(preflight.disk_free(str(self.cache)), str(self.cache), preflight.DISK_NODE_IMAGE_BUILD,
                             "building the node image")
        builder = node_image.NodeImageBuilder(inputs, self.cache, docker=self.docker, log=self.log)
        return builder.ensure()

    def images_only(self) -> SetupResult:
        """The image step alone, for clusters ``up`` does not create (``existing``, ``minikube``)."""
        self._timed("images", self.ensure_images)
        return self.result

    def prepare_images(self, log: Log) -> None:
        """Build what :meth:`ensure_images` needs, without touching the cluster (it may not exist yet)."""
        c = self.config
        if c.image_build == "docker" and not self._docker_provider_available() and not self._cli_images_built:
            self._build_images_with_cli(log)
        if self._needs_local_controller() and not self._controller_archive().is_file():
            log(f"setup: building the controller {versions.AGENT_SANDBOX_VERSION} image from its Go module")
            self._build_parts(CONTROLLER_IMAGE_PARTS, log)
        if self._needs_local_keda() and not all(path.is_file() for path in self._keda_archives().values()):
            log(f"setup: installKeda: building KEDA {versions.KEDA_VERSION}'s images from its Go module "
                "(cold: ~20-30 min on 2 cores)")
            self._build_parts(("keda",), log)

    def ensure_images(self) -> None:
        self.prepare_images(self.log)
        if self._needs_local_controller():
            self._load_local_controller_image()
        if self._needs_local_keda():
            self._load_local_keda_images()

    def _needs_local_keda(self) -> bool:
        # Like the controller: only a cluster we made, and only when the release's images are absent.
        c = self.config
        if self._local_keda is None:
            self._local_keda = c.install_keda and c.cluster_flavour == "kind" and (
                self.offline or not self._image_present(c.keda_operator_image)
                or not self._image_present(c.keda_metrics_image))
        return self._local_keda

    def _keda_archives(self) -> dict[str, Path]:
        folder = self.cache / "keda" / versions.KEDA_VERSION / "bin"
        return {key: folder / archive for key, (_, archive) in KEDA_LOCAL_IMAGES.items()}

    def _load_local_keda_images(self) -> None:
        for key, archive in self._keda_archives().items():
            if not archive.is_file():
                raise SetupError(f"building KEDA's images left no {archive} (logs in {self.cache / 'logs'})")
            clusters.kind_load_archive(self.config.cluster_name, archive, log=self.log)
            self.result.overrides[key] = KEDA_LOCAL_IMAGES[key][0].format(version=versions.KEDA_VERSION)
        self.result.notices.append(f"installKeda: KEDA {versions.KEDA_VERSION}'s images built here from its Go module "
                                   "(the release images cannot be pulled)")

    def _needs_local_controller(self) -> bool:
        # Only a cluster we made gets the locally built controller; on other clusters the
        # controllerImage key says where it comes from (a mirror, a registry).
        if self._local_controller is None:
            self._local_controller = self.config.cluster_flavour == "kind" and (
                self.offline or not self._controller_image_pullable())
        return self._local_controller

    def _controller_archive(self) -> Path:
        return self.cache / "images" / versions.AGENT_SANDBOX_VERSION / "bin" / "agent-sandbox-controller.tar"

    def _docker_provider_available(self) -> bool:
        home = Path(pulumi_env(self.paths).get("PULUMI_HOME") or Path.home() / ".pulumi")
        version = versions.PYTHON_PACKAGE_PINS.get("pulumi-docker", "")
        return (home / "plugins" / f"resource-docker-v{version}").is_dir()

    _cli_images_built = False

    def _build_images_with_cli(self, log: Optional[Log] = None) -> None:
        log = log or self.log
        c = self.config
        notice = ("imageBuild: the pulumi-docker provider plugin is not installed (its source is not served here), "
                  "so the runtime and router images are built with the docker CLI (make images) and this run uses "
                  "imageBuild=prebuilt")
        log("*" * 100)
        log("setup: " + notice)
        log("*" * 100)
        self.result.notices.append(notice)
        env = {**os.environ, "PY": str(Path(os.sys.executable))}
        code, lines = _stream(["bash", str(BUILD_IMAGES_SCRIPT), "--variant", c.image_variant,
                               "--router", c.router_implementation], log, env=env)
        refs = dict(line.split("=", 1) for line in lines if line.startswith(("runtime=", "router=")))
        if code != 0 or not {"runtime", "router"} <= refs.keys():
            raise SetupError("building the runtime and router images failed (see the lines above)")
        self.result.overrides.update({"imageBuild": "prebuilt", "sandboxImage": refs["runtime"],
                                      "routerImage": refs["router"]})
        self._cli_images_built = True

    def _controller_image_pullable(self) -> bool:
        return self._image_present(self.config.controller_image)

    def _image_present(self, image: str) -> bool:
        return subprocess.run([self.docker, "image", "inspect", image], capture_output=True).returncode == 0

    def _load_local_controller_image(self) -> None:
        version = versions.AGENT_SANDBOX_VERSION
        local = CONTROLLER_LOCAL_IMAGE.format(version=version)
        archive = self._controller_archive()
        if not archive.is_file():
            raise SetupError(f"building the controller image left no {archive} (logs in {self.cache / 'logs'})")
        clusters.kind_load_archive(self.config.cluster_name, archive, log=self.log)
        self.result.overrides["controllerImage"] = local
        self.result.notices.append(f"controllerImage: {local} built here from the controller's Go module "
                                   f"(the release image cannot be pulled)")


def summary(result: SetupResult) -> str:
    return json.dumps({"node_image": result.node_image, "cluster_created": result.cluster_created,
                       "overrides": result.overrides, "timings_s": result.timings}, indent=2)
