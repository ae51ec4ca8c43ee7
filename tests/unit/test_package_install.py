"""`pip install .` gives a working package: built as a wheel from a copy of the project, installed
into an empty folder and imported from elsewhere, it carries the components, the provider's
PulumiPlugin.yaml and launcher, and the vendored controller manifest (package data)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.pulumi_harness import REPO_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    try:  # setuptools < 70.1 builds wheels only with the `wheel` package next to it
        import wheel as _wheel  # noqa: F401
    except ImportError:
        print("\n*** SKIPPING the package build: the venv has no `wheel` package (pip install wheel) ***", flush=True)
        pytest.skip("building a wheel offline needs the `wheel` package in the venv")
    source = tmp_path_factory.mktemp("src")
    # A copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "agent_sandbox_pulumi", source / "agent_sandbox_pulumi",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    # No index and no build isolation: the venv's setuptools builds it, nothing is downloaded.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(out), str(source)], check=True, capture_output=True, text=True, timeout=300)
    (built,) = out.glob("agent_sandbox_pulumi-*.whl")
    return built


def test_the_wheel_carries_code_provider_and_package_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        launcher = archive.getinfo("agent_sandbox_pulumi/bin/pulumi-resource-agent-sandbox")
    for expected in ("agent_sandbox_pulumi/__main__.py", "agent_sandbox_pulumi/provider.py",
                     "agent_sandbox_pulumi/client.py", "agent_sandbox_pulumi/PulumiPlugin.yaml",
                     "agent_sandbox_pulumi/components/agent_sandbox.py", "agent_sandbox_pulumi/sandbox_iac/config.py",
                     "agent_sandbox_pulumi/vendor/agent-sandbox/v0.5.6/sandbox-with-extensions.yaml",
                     "agent_sandbox_pulumi/vendor/agent-sandbox/v0.5.6/README.md"):
        assert expected in names, expected
    assert (launcher.external_attr >> 16) & stat.S_IXUSR, "the binary-plugin launcher must stay executable"
    assert not [n for n in names if n.startswith(("automation/", "policy/", "tests/", "images/"))]


def test_the_installed_package_works_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    probe = (
        "import agent_sandbox_pulumi, json\n"
        "from agent_sandbox_pulumi.sandbox_iac import manifests\n"
        "from agent_sandbox_pulumi.provider import schema\n"
        "objects = manifests.load_release()\n"
        "print(json.dumps({'file': agent_sandbox_pulumi.__file__, 'manifest': str(manifests.VENDORED_MANIFEST),\n"
        "                  'objects': len(objects), 'resources': list(schema()['resources'])}))\n"
    )
    # The venv's site-packages give the dependencies; the checkout is not on the path.
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import json

    facts = json.loads(done.stdout)
    assert facts["file"].startswith(str(target)) and facts["manifest"].startswith(str(target))
    assert facts["objects"] > 10 and facts["resources"] == ["agent-sandbox:index:AgentSandbox"]
