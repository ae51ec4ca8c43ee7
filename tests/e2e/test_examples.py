"""The package as other projects use it, on a real cluster (``E2E_KUBE_CONTEXT``):

- ``examples/python`` (the package pip-installed into the example's own venv) and
  ``examples/yaml`` (the component package through the pulumi-language-yaml host) each go up --
  with this project's policy pack, as a foreign project would run it -- claim a sandbox through
  ``agent_sandbox_pulumi.client`` and go down, leaving nothing behind. They need a cluster without
  an Agent Sandbox install (the controller and the router Service are cluster-wide).
- README's "use it" snippet runs as written against a deployed stack of this project
  (``E2E_STACK``, e.g. after ``make up STACK=gvisor``).

Environment: ``E2E_KUBE_CONTEXT`` (required), ``E2E_STACK`` (the snippet), ``E2E_RUNTIME_IMAGE`` /
``E2E_ROUTER_IMAGE`` (default: the ``agent-sandbox/runtime|router`` images the nodes report).
Everything offline: the toolchain of ``make toolchain`` (pulumi, the kubernetes plugin, the YAML
host), the project venv for dependencies. Anything missing skips loudly."""

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
from typing import Any, Optional

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("CACHE_DIR") or "/var/cache/agent-sandbox-iac")
PULUMI_VERSION = "3.259.0"
PULUMI_BIN_DIR = CACHE_DIR / "pulumi" / PULUMI_VERSION / "bin"
PULUMI_HOME = Path(os.environ.get("PULUMI_HOME") or CACHE_DIR / "pulumi" / "home")
KUBERNETES_PLUGIN = PULUMI_HOME / "plugins" / "resource-kubernetes-v4.25.0"
PROJECT_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
CONTROLLER_NAMESPACE = "agent-sandbox-system"
COMMAND_TIMEOUT = 1500
CLAIM_PROBE = "print(6 * 7)"


def skip_loudly(reason: str) -> None:
    print(f"\n*** SKIPPING the package e2e: {reason} ***\n", flush=True)
    pytest.skip(reason)


def tool(name: str) -> Optional[str]:
    """``name`` on PATH, in the toolchain's bin/ or next to its pulumi."""
    for candidate in (shutil.which(name), CACHE_DIR / "bin" / name, PULUMI_BIN_DIR / name):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


@dataclass
class Toolchain:
    context: str
    pulumi: str
    kubectl: str
    env: dict[str, str]

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


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory) -> Toolchain:
    context = os.environ.get("E2E_KUBE_CONTEXT")
    if not context:
        skip_loudly("E2E_KUBE_CONTEXT is not set (the kube context of the e2e cluster, e.g. kind-agent-sandbox)")
    missing = [name for name in ("pulumi", "kubectl", "pulumi-language-yaml", "pulumi-language-python") if not tool(name)]
    missing += [str(p) for p in (KUBERNETES_PLUGIN, PROJECT_PYTHON) if not p.exists()]
    if missing:
        skip_loudly(f"toolchain incomplete: {missing} (make venv; make toolchain)")
    state = tmp_path_factory.mktemp("pulumi-state")
    env = {
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
    chain = Toolchain(context, tool("pulumi"), tool("kubectl"), env)  # type: ignore[arg-type]
    reachable = chain.kubectl_run("get", "--raw", "/readyz", check=False)
    if reachable.returncode != 0:
        pytest.fail(f"E2E_KUBE_CONTEXT={context} is set but the cluster does not answer: {reachable.stderr.strip()}")
    return chain


def node_images(chain: Toolchain) -> tuple[str, str]:
    """The runtime and router images: from the environment, else the ones the nodes hold."""
    runtime, router = os.environ.get("E2E_RUNTIME_IMAGE"), os.environ.get("E2E_ROUTER_IMAGE")
    if runtime and router:
        return runtime, router
    nodes = json.loads(chain.kubectl_run("get", "nodes", "-o", "json").stdout)["items"]
    names = {name for node in nodes for image in node["status"].get("images") or [] for name in image.get("names") or []}
    found = {}
    for kind in ("runtime", "router"):
        tags = sorted({m.group(0).removeprefix("docker.io/library/") for n in names
                       if (m := re.search(rf"(docker\.io/library/)?agent-sandbox/{kind}:[0-9a-f]{{12}}$", n))})
        if len(tags) != 1:
            pytest.fail(f"cannot tell which agent-sandbox/{kind} image the nodes should run ({tags or 'none found'}): "
                        f"set E2E_{kind.upper()}_IMAGE (`make images` prints the refs; kind load them)")
        found[kind] = tags[0]
    return found["runtime"], found["router"]


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
    runtime, router = node_images(chain)
    chain.pulumi_run(example, "stack", "init", stack)
    try:
        for key, value in (("kubeContext", chain.context), ("runtimeImage", runtime), ("routerImage", router),
                           ("imagePullPolicy", "Never")):
            chain.pulumi_run(example, "config", "set", key, value, "--stack", stack)
        # The project's policy pack, used by another project as it is.
        chain.pulumi_run(example, "up", "--yes", "--skip-preview", "--stack", stack,
                         "--policy-pack", str(REPO_ROOT / "policy"))
        outputs = json.loads(chain.pulumi_run(example, "stack", "output", "--json", "--show-secrets",
                                              "--stack", stack).stdout)
        assert outputs["warmPoolReplicas"] == 1 and outputs["namespace"] == namespace
        assert claim_once(outputs, stack, chain.context) == "42"
    finally:
        chain.pulumi_run(example, "destroy", "--yes", "--skip-preview", "--stack", stack, check=False)
        chain.pulumi_run(example, "stack", "rm", stack, "--yes", check=False)
    wait_gone(chain, f"namespace/{CONTROLLER_NAMESPACE}", f"namespace/{namespace}", "runtimeclass/gvisor",
              "crd/sandboxes.agents.x-k8s.io", "crd/sandboxwarmpools.extensions.agents.x-k8s.io")


def test_python_example_goes_up_claims_and_down(toolchain: Toolchain, tmp_path: Path) -> None:
    require_no_install(toolchain)
    example = tmp_path / "python"
    shutil.copytree(REPO_ROOT / "examples" / "python", example, ignore=shutil.ignore_patterns(".venv", ".pulumi-state"))
    project_venv(example / ".venv", tmp_path / "package-build")
    up_claim_down(toolchain, example, "e2e-python", "example-python")


def test_yaml_example_goes_up_claims_and_down(toolchain: Toolchain, tmp_path: Path) -> None:
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


def readme_snippet() -> str:
    """The first python block of README's "Use it" section."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Use it", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's 'Use it' section has no python snippet"
    return match.group(1)


def test_readme_use_it_snippet_runs_as_written(toolchain: Toolchain, tmp_path: Path) -> None:
    stack = os.environ.get("E2E_STACK")
    if not stack:
        skip_loudly("E2E_STACK is not set (a deployed stack of this project on E2E_KUBE_CONTEXT, e.g. gvisor)")
    snippet = readme_snippet()
    assert 'connect("gvisor")' in snippet
    script = tmp_path / "snippet.py"
    # As written, for the stack under test (the README names the gvisor stack).
    script.write_text(snippet.replace('connect("gvisor")', f"connect({stack!r})"))
    env = {**toolchain.env, "PULUMI_BACKEND_URL": f"file://{REPO_ROOT / '.pulumi-state'}"}
    env.pop("PULUMI_PYTHON_CMD", None)
    done = subprocess.run([str(PROJECT_PYTHON), str(script)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    print(done.stdout[-3000:], done.stderr[-3000:], flush=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "42"
