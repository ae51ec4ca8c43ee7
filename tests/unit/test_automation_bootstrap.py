"""The KIND set-up's decisions with fakes: which node image, whether the images are built with the
CLI (and said), when the controller image is built locally, and the one-line failures."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from automation import bootstrap, preflight
from automation.bootstrap import Setup, SetupError
from automation.paths import ProjectPaths
from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "pulumi-home"))
    config = parse_stack_config({"clusterName": "demo"}, "gvisor")
    return Setup(config, ProjectPaths(root=tmp_path, out_dir=tmp_path / "out"), log=lambda _: None)


def test_engine_absent_and_cannot_be_started(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "engine_state", lambda client=None: preflight.EngineState(None, False))
    monkeypatch.setattr(setup, "_engine_is_ours_to_start", lambda: False)
    # not ours to start: the engine script (which installs and starts dockerd) must not run
    monkeypatch.setattr(bootstrap, "_stream", lambda *a, **k: pytest.fail(f"ran {a[0]}"))
    with pytest.raises(preflight.PreflightError, match="no Docker engine"):
        setup.ensure_engine()


def test_engine_is_started_when_it_is_ours_to_start(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    states = iter([preflight.EngineState("/usr/bin/docker", False, error="down"),
                   preflight.EngineState("/usr/bin/docker", True, "20.10", default_runtime="agent-sandbox-runc")])
    monkeypatch.setattr(preflight, "engine_state", lambda client=None: next(states))
    monkeypatch.setattr(setup, "_engine_is_ours_to_start", lambda: True)
    started = []
    monkeypatch.setattr(bootstrap, "_stream", lambda command, log, env=None: (started.append(command) or (0, [])))
    setup.ensure_engine()
    assert started and started[0][-1] == "start"


def test_engine_that_fails_to_start_is_one_line(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "engine_state", lambda client=None: preflight.EngineState("/usr/bin/docker", False))
    monkeypatch.setattr(setup, "_engine_is_ours_to_start", lambda: True)
    monkeypatch.setattr(bootstrap, "_stream", lambda command, log, env=None: (1, []))
    with pytest.raises(SetupError, match="could not start a Docker engine"):
        setup.ensure_engine()


def test_images_without_the_docker_provider_are_built_with_the_cli_and_said(setup: Setup,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    setup.offline = True
    monkeypatch.setattr(bootstrap, "_stream", lambda command, log, env=None: (
        0, ["...", "runtime=agent-sandbox/runtime:aaa", "router=agent-sandbox/router:bbb"]))
    monkeypatch.setattr(setup, "_load_local_controller_image", lambda: setup.result.overrides.update(
        controllerImage="localhost/agent-sandbox-controller:v0.5.6"))
    setup.ensure_images()
    assert setup.result.overrides == {"imageBuild": "prebuilt", "sandboxImage": "agent-sandbox/runtime:aaa",
                                      "routerImage": "agent-sandbox/router:bbb",
                                      "controllerImage": "localhost/agent-sandbox-controller:v0.5.6"}
    assert any("imageBuild=prebuilt" in notice for notice in setup.result.notices)


def test_images_with_the_docker_provider_are_left_to_pulumi(setup: Setup, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pulumi-home" / "plugins" / "resource-docker-v5.1.0").mkdir(parents=True)
    setup.offline = False
    monkeypatch.setattr(setup, "_controller_image_pullable", lambda: True)
    monkeypatch.setattr(bootstrap, "_stream", lambda *a, **k: pytest.fail("must not build images with the CLI"))
    setup.ensure_images()
    assert setup.result.overrides == {}


def test_failed_cli_image_build_is_one_line(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootstrap, "_stream", lambda command, log, env=None: (2, ["boom"]))
    with pytest.raises(SetupError, match="building the runtime and router images failed"):
        setup._build_images_with_cli()


def test_offline_never_pulls_kindest_node(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    setup.offline = True
    calls = []
    monkeypatch.setattr(bootstrap.subprocess, "run", lambda command, **k: calls.append(command) or pytest.fail(
        f"offline must not run {command}"))

    class Builder:
        def __init__(self, *a, **k):
            pass

        def ensure(self):
            return "agent-sandbox/kind-node:v1.34.4-abc"

    monkeypatch.setattr(bootstrap.node_image, "NodeImageBuilder", Builder)
    monkeypatch.setattr(bootstrap.node_image, "toolchain_inputs", lambda cache: type("I", (), {"missing": lambda self: []})())
    monkeypatch.setattr(preflight, "disk_free", lambda path: 100 * preflight.GIB)
    assert setup.ensure_node_image() == "agent-sandbox/kind-node:v1.34.4-abc"
    assert calls == []


def test_missing_node_image_parts_are_built_then_used(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    setup.offline = True
    missing = iter([["kubeadm (x)"], []])
    monkeypatch.setattr(bootstrap.node_image, "toolchain_inputs",
                        lambda cache: type("I", (), {"missing": lambda self: next(missing)})())
    built = []
    monkeypatch.setattr(bootstrap, "_stream", lambda command, log, env=None: (built.append(command) or (0, [])))
    monkeypatch.setattr(preflight, "disk_free", lambda path: 100 * preflight.GIB)
    monkeypatch.setattr(bootstrap.node_image, "NodeImageBuilder",
                        type("B", (), {"__init__": lambda self, *a, **k: None, "ensure": lambda self: "img:1"}))
    assert setup.ensure_node_image() == "img:1"
    assert built[0][-len(bootstrap.NODE_IMAGE_PARTS):] == list(bootstrap.NODE_IMAGE_PARTS)


def test_tools_and_the_parallel_stream_run_side_by_side(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    side_started = threading.Event()
    order = []
    monkeypatch.setattr(setup, "ensure_engine", lambda: order.append("engine"))

    def tools() -> None:
        # passes only when the parallel stream runs while the tools are still building
        assert side_started.wait(5), "the parallel stream did not start beside the tools"
        order.append("tools")

    def side() -> None:
        side_started.set()
        order.append("side")

    monkeypatch.setattr(setup, "ensure_tools", tools)
    monkeypatch.setattr(setup, "prepare_in_parallel", side)
    monkeypatch.setattr(setup, "ensure_cluster", lambda: order.append("cluster"))
    monkeypatch.setattr(setup, "ensure_images", lambda: order.append("images"))
    setup.run()
    assert order[0] == "engine" and set(order[1:3]) == {"tools", "side"} and order[3:] == ["cluster", "images"]
    assert {"engine", "tools", "parallel", "cluster", "images"} <= setup.result.timings.keys()


def test_a_failed_tools_step_stops_the_parallel_builds(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(setup, "ensure_engine", lambda: None)
    results = []
    monkeypatch.setattr(setup, "prepare_in_parallel",
                        lambda: results.append(bootstrap._stream(["sh", "-c", "sleep 30 & wait"], lambda _: None)))

    def tools() -> None:
        deadline = time.monotonic() + 5
        while not bootstrap._RUNNING and time.monotonic() < deadline:
            time.sleep(0.02)
        raise SetupError("tools failed")

    monkeypatch.setattr(setup, "ensure_tools", tools)
    started = time.monotonic()
    with pytest.raises(SetupError, match="tools failed"):
        setup.run()
    assert time.monotonic() - started < 10, "the parallel build was waited for instead of stopped"
    assert results and results[0][0] != 0


def test_the_parallel_stream_builds_kubernetes_last(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    setup.offline = True
    monkeypatch.setattr(bootstrap.node_image, "toolchain_inputs",
                        lambda cache: type("I", (), {"missing": lambda self: ["containerd (x)"]})())
    built, roots = [], []
    monkeypatch.setattr(bootstrap, "_stream", lambda command, log, env=None: (built.append(command) or (0, [])))
    monkeypatch.setattr(bootstrap.node_image, "NodeImageBuilder", type("B", (), {
        "__init__": lambda self, *a, **k: None, "ensure_root_filesystems": lambda self: roots.append(True)}))
    setup.prepare_node_image(lambda _: None)
    parts = built[0][2:]
    # last: the tools step may be building it for kubectl (the part's lock makes the second wait)
    assert parts[-1] == "kubernetes" and set(parts) == set(bootstrap.NODE_IMAGE_PARTS)
    assert roots == [True]


def test_images_built_beside_the_tools_are_not_built_again(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    setup.offline = True
    calls = []

    def stream(command, log, env=None):
        calls.append(command)
        if "build-images.sh" in command[1]:
            return 0, ["runtime=agent-sandbox/runtime:aaa", "router=agent-sandbox/router:bbb"]
        archive = setup._controller_archive()
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(b"tar")
        return 0, []

    monkeypatch.setattr(bootstrap, "_stream", stream)
    loaded = []
    monkeypatch.setattr(bootstrap.clusters, "kind_load_archive", lambda name, archive, log: loaded.append(archive))
    setup.prepare_images(lambda _: None)
    assert [c[1].rsplit("/", 1)[-1] for c in calls] == ["build-images.sh", "cluster.sh"]
    # the stack's router implementation decides which router image the script builds
    assert calls[0][2:] == ["--variant", setup.config.image_variant, "--router", setup.config.router_implementation]
    assert setup.config.router_implementation == "compiled"
    assert calls[1][2:] == list(bootstrap.CONTROLLER_IMAGE_PARTS)
    setup.ensure_images()
    assert len(calls) == 2, "ensure_images rebuilt what the parallel stream had built"
    assert loaded == [setup._controller_archive()]
    assert setup.result.overrides["controllerImage"] == "localhost/agent-sandbox-controller:v0.5.6"


def _keda_setup(tmp_path: Path) -> Setup:
    config = parse_stack_config({"clusterName": "demo", "warmPoolAutoscaling": "keda", "installKeda": "true"}, "gvisor")
    return Setup(config, ProjectPaths(root=tmp_path, out_dir=tmp_path / "out"), log=lambda _: None)


def test_offline_install_keda_builds_and_loads_its_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "cache"))
    setup = _keda_setup(tmp_path)
    setup.offline = True
    monkeypatch.setattr(setup, "_needs_local_controller", lambda: False)
    monkeypatch.setattr(setup, "_docker_provider_available", lambda: True)
    built, loaded = [], []

    def build(command, log, env=None):
        built.append(command[2:])
        for archive in setup._keda_archives().values():
            archive.parent.mkdir(parents=True, exist_ok=True)
            archive.write_text("tar")
        return 0, []

    monkeypatch.setattr(bootstrap, "_stream", build)
    monkeypatch.setattr(bootstrap.clusters, "kind_load_archive", lambda name, archive, log=None: loaded.append(archive.name))
    setup.ensure_images()
    assert built == [["keda"]]
    assert loaded == ["keda-operator.tar", "keda-metrics-apiserver.tar"]
    assert setup.result.overrides == {"kedaOperatorImage": "localhost/keda:v2.21.0",
                                      "kedaMetricsImage": "localhost/keda-metrics-apiserver:v2.21.0"}
    # built once: a second run finds the archives
    setup.ensure_images()
    assert built == [["keda"]]


def test_keda_images_that_are_here_are_used_as_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "cache"))
    setup = _keda_setup(tmp_path)
    setup.offline = False
    monkeypatch.setattr(setup, "_image_present", lambda image: True)
    assert not setup._needs_local_keda()
    # and without installKeda nothing about KEDA is asked at all
    plain = Setup(parse_stack_config({}, "gvisor"), ProjectPaths(root=tmp_path, out_dir=tmp_path / "out"), log=lambda _: None)
    monkeypatch.setattr(plain, "_image_present", lambda image: pytest.fail("asked for a KEDA image"))
    assert not plain._needs_local_keda()
