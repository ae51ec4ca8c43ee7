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
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from automation import cluster as clusters
from automation import node_image, preflight, tools
from automation.project import PROJECT_DIR, ProjectPaths, cache_dir, pulumi_env
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


class SetupError(RuntimeError):
    """A set-up step failed; the message says which and what to do."""


@dataclass
class SetupResult:
    """What the set-up did, and the config the engine run needs because of it."""

    overrides: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    node_image: str = ""
    cluster_created: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def _stream(command: list[str], log: Log, env: Optional[dict[str, str]] = None) -> tuple[int, list[str]]:
    """Run a command, echoing its output lines (they carry the long steps' progress)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=PROJECT_DIR, env=env)
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

    def _timed(self, name: str, step: Callable[[], None]) -> None:
        started = time.monotonic()
        step()
        self.result.timings[name] = round(time.monotonic() - started, 1)
        self.log(f"setup: {name} done in {self.result.timings[name]:.0f}s")

    def run(self) -> SetupResult:
        c = self.config
        self.log(f"setup: {c.stack} on kind cluster {c.cluster_name!r} ({1 + self.workers} node(s)), "
                 + ("offline: nothing is downloaded or pulled" if self.offline else "downloads allowed"))
        self._timed("tools", self.ensure_tools)
        self._timed("engine", self.ensure_engine)
        self._timed("cluster", self.ensure_cluster)
        self._timed("images", self.ensure_images)
        return self.result

    # -- steps ------------------------------------------------------------------------------

    def ensure_tools(self) -> None:
        resolved = tools.resolve_all(tools.tools_for(self.config.cluster_flavour, self.config.runtime), log=self.log)
        self.tool_paths = {name: path for r in resolved for name, path in r.paths.items()}

    def ensure_engine(self) -> None:
        state = preflight.engine_state(self.docker)
        if not state.answers and (state.client is None or self._engine_is_ours_to_start()):
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

    def ensure_node_image(self) -> str:
        if not self.offline:
            if subprocess.run([self.docker, "image", "inspect", KINDEST_NODE_IMAGE], capture_output=True).returncode == 0:
                return KINDEST_NODE_IMAGE
            self.log(f"setup: pulling {KINDEST_NODE_IMAGE}")
            pulled = subprocess.run([self.docker, "pull", KINDEST_NODE_IMAGE], capture_output=True, text=True)
            if pulled.returncode == 0:
                return KINDEST_NODE_IMAGE
            self.log(f"setup: cannot pull kindest/node ({(pulled.stderr or '').strip()[:160]}); building the node image here")
        inputs = node_image.toolchain_inputs(self.cache)
        if inputs.missing():
            self.log("setup: building the node image's parts from Go modules (cached by version; "
                     "cold: about 30 min on 2 cores)")
            code, _ = _stream(["bash", str(CLUSTER_TOOLCHAIN), *NODE_IMAGE_PARTS], self.log)
            if code != 0:
                raise SetupError(f"building the node image's parts failed (logs in {self.cache / 'logs'}); "
                                 "fix the cause and run `make up` again (finished parts are kept)")
            inputs = node_image.toolchain_inputs(self.cache)
        preflight.check_disk(preflight.disk_free(str(self.cache)), str(self.cache), preflight.DISK_NODE_IMAGE_BUILD,
                             "building the node image")
        builder = node_image.NodeImageBuilder(inputs, self.cache, docker=self.docker, log=self.log)
        return builder.ensure()

    def images_only(self) -> SetupResult:
        """The image step alone, for clusters ``up`` does not create (``existing``, ``minikube``)."""
        self._timed("images", self.ensure_images)
        return self.result

    def ensure_images(self) -> None:
        c = self.config
        if c.image_build == "docker" and not self._docker_provider_available():
            self._build_images_with_cli()
        # Only a cluster we made gets the locally built controller; on other clusters the
        # controllerImage key says where it comes from (a mirror, a registry).
        if c.cluster_flavour == "kind" and (self.offline or not self._controller_image_pullable()):
            self._load_local_controller_image()

    def _docker_provider_available(self) -> bool:
        home = Path(pulumi_env(self.paths).get("PULUMI_HOME") or Path.home() / ".pulumi")
        version = versions.PYTHON_PACKAGE_PINS.get("pulumi-docker", "")
        return (home / "plugins" / f"resource-docker-v{version}").is_dir()

    def _build_images_with_cli(self) -> None:
        c = self.config
        notice = ("imageBuild: the pulumi-docker provider plugin is not installed (its source is not served here), "
                  "so the runtime and router images are built with the docker CLI (make images) and this run uses "
                  "imageBuild=prebuilt")
        self.log("*" * 100)
        self.log("setup: " + notice)
        self.log("*" * 100)
        self.result.notices.append(notice)
        env = {**os.environ, "PY": str(Path(os.sys.executable))}
        code, lines = _stream(["bash", str(BUILD_IMAGES_SCRIPT), "--variant", c.image_variant], self.log, env=env)
        refs = dict(line.split("=", 1) for line in lines if line.startswith(("runtime=", "router=")))
        if code != 0 or not {"runtime", "router"} <= refs.keys():
            raise SetupError("building the runtime and router images failed (see the lines above)")
        self.result.overrides.update({"imageBuild": "prebuilt", "sandboxImage": refs["runtime"],
                                      "routerImage": refs["router"]})

    def _controller_image_pullable(self) -> bool:
        return subprocess.run([self.docker, "image", "inspect", self.config.controller_image],
                              capture_output=True).returncode == 0

    def _load_local_controller_image(self) -> None:
        version = versions.AGENT_SANDBOX_VERSION
        local = CONTROLLER_LOCAL_IMAGE.format(version=version)
        archive = self.cache / "images" / version / "bin" / "agent-sandbox-controller.tar"
        if not archive.is_file():
            self.log(f"setup: building the controller {version} image from its Go module")
            code, _ = _stream(["bash", str(CLUSTER_TOOLCHAIN), "pause", "agent-sandbox", "images"], self.log)
            if code != 0 or not archive.is_file():
                raise SetupError(f"building the controller image failed (logs in {self.cache / 'logs'})")
        clusters.kind_load_archive(self.config.cluster_name, archive, log=self.log)
        self.result.overrides["controllerImage"] = local
        self.result.notices.append(f"controllerImage: {local} built here from the controller's Go module "
                                   f"(the release image cannot be pulled)")


def summary(result: SetupResult) -> str:
    return json.dumps({"node_image": result.node_image, "cluster_created": result.cluster_created,
                       "overrides": result.overrides, "timings_s": result.timings}, indent=2)
