"""The package as other projects use it, on a real KIND cluster with gVisor:

- ``examples/python`` (the package pip-installed into the example's own venv) and
  ``examples/yaml`` (the component package through the pulumi-language-yaml host) each go up --
  with this project's policy pack, as a foreign project would run it -- claim a sandbox through
  ``agent_sandbox_pulumi.client`` and go down, leaving nothing behind.

The cluster: this module makes its own (``agent-sandbox-ex``, one node, the way a cluster's owner
would: ``kind_harness.gvisor_kind_cluster``), loads the runtime and router images (minimal variant,
built by ``images/base/build-images.sh``, fast when cached) and the controller image built from the
controller's Go module, and deletes it at the end. With ``E2E_KUBE_CONTEXT`` set it uses that
cluster instead (it must have no Agent Sandbox install: the controller and the router Service are
cluster-wide); ``E2E_RUNTIME_IMAGE`` / ``E2E_ROUTER_IMAGE`` / ``E2E_CONTROLLER_IMAGE`` (default: the
images the nodes hold).

Everything offline: the toolchain of ``make tools`` / ``make toolchain`` (pulumi, the kubernetes
plugin, the language hosts), the project venv for dependencies. Anything missing skips loudly (the
YAML example alone when only the YAML host is missing). README's "Use it" snippet runs in
test_kind_single_node.py, against the gvisor stack that module deploys. Timings: printed and in
out/e2e/examples.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import yaml

from tests.e2e.kind_harness import (
    CACHE_DIR, CONTROLLER_ARCHIVE, CONTROLLER_LOCAL_IMAGE, OFFLINE_ENV, REPO_ROOT, PULUMI_BIN, Timings,
    gvisor_kind_cluster, require_caches,
)

PULUMI_BIN_DIR = PULUMI_BIN.parent
PULUMI_HOME = Path(os.environ.get("PULUMI_HOME") or CACHE_DIR / "pulumi" / "home")
KUBERNETES_PLUGIN = PULUMI_HOME / "plugins" / "resource-kubernetes-v4.25.0"
PROJECT_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
CONTROLLER_NAMESPACE = "agent-sandbox-system"
COMMAND_TIMEOUT = 1500
CLAIM_PROBE = "print(6 * 7)"
CLUSTER = "agent-sandbox-ex"
pytestmark = pytest.mark.timeout(3600)
REPORT = Timings("examples", nodes=1)


def skip_loudly(reason: str) -> None:
    print(f"\n*** SKIPPING the package e2e: {reason} ***\n", flush=True)
    pytest.skip(reason)


def timed(name: str, seconds: float) -> None:
    """Printed where CI logs show it, and kept in out/e2e/examples.json."""
    print(f"examples e2e timing: {name}: {seconds:.1f}s", flush=True)
    REPORT.check(name, seconds)


def tool(name: str) -> Optional[str]:
    """``name`` on PATH, in the toolchain's bin/ or next to its pulumi."""
    for candidate in (shutil.which(name), CACHE_DIR / "bin" / name, PULUMI_BIN_DIR / name):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


@dataclass
class Images:
    runtime: str
    router: str
    controller: Optional[str]
    """None: the release's own image (a cluster that can pull it)."""


@dataclass
class Toolchain:
    context: str
    pulumi: str
    kubectl: str
    env: dict[str, str]
    images: Optional[Images] = None

    def kubectl_run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.kubectl, "--context", self.context, *args], capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def pulumi_run(self, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run([self.pulumi, *args, "--non-interactive"], cwd=cwd, env=self.env, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT)
        print(f"$ pulumi {' '.join(a for a in args if 'Token' not in a)}  ({time.monotonic() - started:.0f}s, "
              f"exit {done.returncode})\n{done.stdout[-4000:]}\n{done.stderr[-3000:]}", flush=True)
        if check and done.returncode != 0:
            raise AssertionError(f"pulumi {args[0]} in {cwd.name} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                                 f"{done.stderr[-2000:]}")
        return done


def pulumi_env(state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": os.pathsep.join([str(PULUMI_BIN_DIR), str(CACHE_DIR / "bin"), os.environ.get("PATH", "")]),
        "PULUMI_HOME": str(PULUMI_HOME),
        # The examples' state stays out of the checkout.
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE": "",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        # The interpreter of the component provider (and of the policy pack): the project venv.
        "PULUMI_PYTHON_CMD": str(PROJECT_PYTHON),
    }


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory) -> Iterator[Toolchain]:
    """pulumi and kubectl on the e2e cluster, the images loaded onto its nodes: E2E_KUBE_CONTEXT's
    cluster, else a KIND cluster made here (deleted at the end, also on failure)."""
    missing = [name for name in ("pulumi", "kubectl", "pulumi-language-python") if not tool(name)]
    missing += [str(p) for p in (KUBERNETES_PLUGIN, PROJECT_PYTHON) if not p.exists()]
    if missing:
        skip_loudly(f"toolchain incomplete: {missing} (make venv; make tools; make toolchain)")
    env = pulumi_env(tmp_path_factory.mktemp("pulumi-state"))
    context = os.environ.get("E2E_KUBE_CONTEXT")
    if context:
        chain = Toolchain(context, tool("pulumi"), tool("kubectl"), env)  # type: ignore[arg-type]
        reachable = chain.kubectl_run("get", "--raw", "/readyz", check=False)
        if reachable.returncode != 0:
            pytest.fail(f"E2E_KUBE_CONTEXT={context} is set but the cluster does not answer: {reachable.stderr.strip()}")
        chain.images = node_images(chain)
        yield chain
        return
    require_caches()
    with gvisor_kind_cluster(CLUSTER) as cluster:
        timed("cluster create (node image + kind create)", cluster.create_seconds)
        started = time.monotonic()
        runtime, router = build_images()
        timed("runtime + router images (build-images.sh --variant minimal)", time.monotonic() - started)
        loaded = cluster.load(runtime, router) + cluster.load(str(CONTROLLER_ARCHIVE), archive=True)
        timed("kind load (runtime, router, controller)", loaded)
        chain = Toolchain(cluster.context, tool("pulumi"), tool("kubectl"), env,  # type: ignore[arg-type]
                          Images(runtime, router, CONTROLLER_LOCAL_IMAGE))
        yield chain
        started = time.monotonic()
    # the with block deleted the cluster
    timed("cluster delete", time.monotonic() - started)


@pytest.fixture(scope="module")
def yaml_host() -> str:
    """The Pulumi YAML language host; `make up`'s tools step does not build it, `make toolchain-pulumi` does."""
    found = tool("pulumi-language-yaml")
    if not found:
        skip_loudly(f"the Pulumi YAML language host (pulumi-language-yaml) is not in the cache ({PULUMI_BIN_DIR}, "
                    f"{CACHE_DIR / 'bin'}) nor on PATH: build it with `make toolchain-pulumi`")
    return found  # type: ignore[return-value]


def build_images() -> tuple[str, str]:
    """The runtime (minimal variant) and router images, as `make images` builds them (cached tags are kept)."""
    done = subprocess.run(["bash", str(REPO_ROOT / "images" / "base" / "build-images.sh"), "--variant", "minimal"],
                          cwd=REPO_ROOT, env={**os.environ, **OFFLINE_ENV, "PY": str(PROJECT_PYTHON)},
                          capture_output=True, text=True, timeout=3000)
    refs = dict(line.split("=", 1) for line in done.stdout.splitlines() if line.startswith(("runtime=", "router=")))
    if done.returncode != 0 or not {"runtime", "router"} <= refs.keys():
        pytest.fail(f"images/base/build-images.sh --variant minimal failed ({done.returncode}):\n"
                    f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    print(f"images: runtime={refs['runtime']} router={refs['router']}", flush=True)
    return refs["runtime"], refs["router"]


def node_images(chain: Toolchain) -> Images:
    """The runtime, router and controller images: from the environment, else the ones the nodes hold
    (no controller image of ours there: the release's own)."""
    nodes = json.loads(chain.kubectl_run("get", "nodes", "-o", "json").stdout)["items"]
    names = {name for node in nodes for image in node["status"].get("images") or [] for name in image.get("names") or []}
    controller = os.environ.get("E2E_CONTROLLER_IMAGE") or (CONTROLLER_LOCAL_IMAGE if CONTROLLER_LOCAL_IMAGE in names
                                                            else None)
    runtime, router = os.environ.get("E2E_RUNTIME_IMAGE"), os.environ.get("E2E_ROUTER_IMAGE")
    if runtime and router:
        return Images(runtime, router, controller)
    found = {}
    for kind in ("runtime", "router"):
        tags = sorted({m.group(0).removeprefix("docker.io/library/") for n in names
                       if (m := re.search(rf"(docker\.io/library/)?agent-sandbox/{kind}:[0-9a-f]{{12}}$", n))})
        if len(tags) != 1:
            pytest.fail(f"cannot tell which agent-sandbox/{kind} image the nodes should run ({tags or 'none found'}): "
                        f"set E2E_{kind.upper()}_IMAGE (`make images` prints the refs; kind load them)")
        found[kind] = tags[0]
    return Images(found["runtime"], found["router"], controller)


def require_no_install(chain: Toolchain) -> None:
    present = chain.kubectl_run("get", "namespace", CONTROLLER_NAMESPACE, check=False)
    if present.returncode == 0:
        pytest.fail(f"the cluster of {chain.context} already has an Agent Sandbox install (namespace "
                    f"{CONTROLLER_NAMESPACE}); the examples install their own: `make down STACK=...` first")


def project_venv(target: Path, work: Path) -> Path:
    """A venv for the Python example with the package pip-installed from a wheel of this checkout.
    Offline: the dependencies come from the project venv (a .pth file), the wheel is built from a
    copy of the package with the project venv's setuptools."""
    source = work / "package-src"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "agent_sandbox_pulumi", source / "agent_sandbox_pulumi", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    dist = work / "dist"
    subprocess.run([str(PROJECT_PYTHON), "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(dist), str(source)], check=True, timeout=600)
    subprocess.run([str(PROJECT_PYTHON), "-m", "venv", str(target)], check=True, timeout=300)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    deps = subprocess.run([str(PROJECT_PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (target / "lib" / version / "site-packages" / "project-deps.pth").write_text(deps + "\n")
    (wheel,) = dist.glob("agent_sandbox_pulumi-*.whl")
    subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300)
    return target


def claim_once(outputs: dict[str, Any], stack: str, context: str) -> str:
    """Claim a sandbox from the stack through the client helper and run one command in it."""
    from agent_sandbox_pulumi.client import connect

    with connect(stack, outputs=outputs, kube_context=context) as client:
        sandbox = client.create_sandbox()
        return sandbox.commands.run(f"python3 -c '{CLAIM_PROBE}'").stdout.strip()


def wait_gone(chain: Toolchain, *objects: str, timeout: float = 180) -> None:
    """Namespaces and CRDs finish deleting after the engine returns; wait for each to be gone."""
    deadline = time.monotonic() + timeout
    remaining = list(objects)
    while remaining and time.monotonic() < deadline:
        remaining = [o for o in remaining if chain.kubectl_run("get", o, check=False).returncode == 0]
        time.sleep(2)
    assert not remaining, f"left behind after destroy: {remaining}"


def up_claim_down(chain: Toolchain, example: Path, stack: str, namespace: str) -> None:
    assert chain.images is not None
    images = chain.images
    name = example.name
    chain.pulumi_run(example, "stack", "init", stack)
    try:
        settings = {"kubeContext": chain.context, "runtimeImage": images.runtime, "routerImage": images.router,
                    "imagePullPolicy": "Never"}
        if images.controller:
            settings["controllerImage"] = images.controller
        for key, value in settings.items():
            chain.pulumi_run(example, "config", "set", key, value, "--stack", stack)
        started = time.monotonic()
        # The project's policy pack, used by another project as it is.
        chain.pulumi_run(example, "up", "--yes", "--skip-preview", "--stack", stack,
                         "--policy-pack", str(REPO_ROOT / "policy"))
        timed(f"{name}: up", time.monotonic() - started)
        outputs = json.loads(chain.pulumi_run(example, "stack", "output", "--json", "--show-secrets",
                                              "--stack", stack).stdout)
        assert outputs["warmPoolReplicas"] == 1 and outputs["namespace"] == namespace
        started = time.monotonic()
        assert claim_once(outputs, stack, chain.context) == "42"
        timed(f"{name}: claim + command + release", time.monotonic() - started)
    finally:
        started = time.monotonic()
        destroyed = chain.pulumi_run(example, "destroy", "--yes", "--skip-preview", "--stack", stack, check=False)
        timed(f"{name}: destroy", time.monotonic() - started)
        chain.pulumi_run(example, "stack", "rm", stack, "--yes", check=False)
    assert destroyed.returncode == 0, f"pulumi destroy in {name} failed:\n{destroyed.stdout[-3000:]}"
    started = time.monotonic()
    wait_gone(chain, f"namespace/{CONTROLLER_NAMESPACE}", f"namespace/{namespace}", "runtimeclass/gvisor",
              "crd/sandboxes.agents.x-k8s.io", "crd/sandboxwarmpools.extensions.agents.x-k8s.io")
    timed(f"{name}: deletions finished after destroy", time.monotonic() - started)


def test_python_example_goes_up_claims_and_down(toolchain: Toolchain, tmp_path: Path) -> None:
    require_no_install(toolchain)
    example = tmp_path / "python"
    shutil.copytree(REPO_ROOT / "examples" / "python", example, ignore=shutil.ignore_patterns(".venv", ".pulumi-state"))
    project_venv(example / ".venv", tmp_path / "package-build")
    up_claim_down(toolchain, example, "e2e-python", "example-python")


def test_yaml_example_goes_up_claims_and_down(yaml_host: str, toolchain: Toolchain, tmp_path: Path) -> None:
    require_no_install(toolchain)
    example = tmp_path / "yaml"
    shutil.copytree(REPO_ROOT / "examples" / "yaml", example, ignore=shutil.ignore_patterns(".pulumi-state"))
    project = yaml.safe_load((example / "Pulumi.yaml").read_text())
    # The copy lives elsewhere: point its package entry at this checkout's component package.
    assert project["packages"] == {"agent-sandbox": "../../agent_sandbox_pulumi"}
    text = (example / "Pulumi.yaml").read_text().replace("agent-sandbox: ../../agent_sandbox_pulumi",
                                                         f"agent-sandbox: {REPO_ROOT / 'agent_sandbox_pulumi'}")
    (example / "Pulumi.yaml").write_text(text)
    up_claim_down(toolchain, example, "e2e-yaml", "example-yaml")
