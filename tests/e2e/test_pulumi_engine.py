"""The Pulumi engine built by `make toolchain-pulumi` works offline, for real.

With the toolchain cached under $CACHE_DIR these tests run the real CLI against a throw-away file
backend (empty passphrase, automatic plugin acquisition disabled):
- `pulumi version` is the pinned release;
- a local Python program (through our Python language host) does `pulumi up` then `pulumi destroy`,
  with a pulumi.dynamic resource (a file) and with the real pulumi-resource-kubernetes plugin in
  render-to-directory mode (no cluster needed);
- an Automation API inline program does the same in-process;
- a trivial policy pack lets a compliant preview pass and blocks a violating one.
Without the toolchain they skip, naming `make toolchain-pulumi`. The language host's helpers are also
checked directly (no toolchain needed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLCHAIN_DIR = REPO / "e2e" / "toolchain"
CACHE_DIR = Path(os.environ.get("CACHE_DIR", "/var/cache/agent-sandbox-iac"))
PULUMI_VERSION = "3.259.0"
PULUMI_ROOT = CACHE_DIR / "pulumi" / PULUMI_VERSION
KUBERNETES_PLUGIN = CACHE_DIR / "pulumi" / "home" / "plugins" / "resource-kubernetes-v4.25.0"

sys.path.insert(0, str(TOOLCHAIN_DIR))


def _toolchain_env() -> dict[str, str]:
    """The environment e2e/toolchain/env.sh exports, as every user of the toolchain gets it."""
    out = subprocess.run(
        ["bash", "-c", f"source {TOOLCHAIN_DIR / 'env.sh'} && env -0"],
        env={**os.environ, "TOOLCHAIN_ENV_QUIET": "1", "CACHE_DIR": str(CACHE_DIR)},
        capture_output=True,
        check=True,
    ).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    # Programs and policy packs run with the interpreter running this test (it has pulumi installed).
    env["PULUMI_PYTHON_CMD"] = sys.executable
    return env


@pytest.fixture(scope="module")
def toolchain_env() -> dict[str, str]:
    """Skip loudly unless the toolchain is built; else the env.sh environment."""
    missing = [p for p in (PULUMI_ROOT / "bin" / "pulumi", PULUMI_ROOT / "bin" / "pulumi-language-python") if not p.exists()]
    if missing:
        _skip_loudly(f"Pulumi toolchain not built (missing {', '.join(map(str, missing))}): run `make toolchain-pulumi`")
    return _toolchain_env()


def _skip_loudly(reason: str) -> None:
    """Print the reason where a CI log reader sees it, then skip."""
    print(f"\n*** SKIP test_pulumi_engine: {reason}", flush=True)
    pytest.skip(reason)


def _require_kubernetes_plugin() -> None:
    """Skip unless pulumi-resource-kubernetes is installed in the toolchain's PULUMI_HOME."""
    if not KUBERNETES_PLUGIN.exists():
        _skip_loudly(f"kubernetes provider not installed at {KUBERNETES_PLUGIN}: run `make toolchain-pulumi`")


@pytest.fixture()
def backend(tmp_path: Path, toolchain_env: dict[str, str]) -> dict[str, str]:
    """An env whose backend is a fresh file:// state directory."""
    state = tmp_path / "state"
    state.mkdir()
    return {**toolchain_env, "PULUMI_BACKEND_URL": f"file://{state}", "PULUMI_CONFIG_PASSPHRASE": ""}


def _pulumi(env: dict[str, str], cwd: Path, *args: str, check: bool = True, timeout: int = 300):
    """Run the cached pulumi CLI non-interactively and return the completed process."""
    proc = subprocess.run(
        ["pulumi", *args, "--non-interactive"] if args[0] != "version" else ["pulumi", "version"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"pulumi {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


RENDER_PROGRAM = textwrap.dedent(
    """
    import pulumi
    import pulumi_kubernetes as k8s

    config = pulumi.Config()
    render = k8s.Provider("render", render_yaml_to_directory=config.require("renderDir"))
    cm = k8s.core.v1.ConfigMap(
        "engine-check",
        metadata={"name": "engine-check", "labels": {"runtime": config.get("runtime") or "gvisor"}},
        data={"greeting": config.require("greeting")},
        opts=pulumi.ResourceOptions(provider=render),
    )
    pulumi.export("configmap", cm.metadata["name"])
    pulumi.export("greeting", config.require("greeting"))
    """
)


def _local_project(tmp_path: Path, env: dict[str, str], greeting: str) -> tuple[Path, Path]:
    """Write a local Python program and init its stack; return (program dir, render dir)."""
    project = tmp_path / "program"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: engine-check\nruntime: python\n")
    (project / "__main__.py").write_text(RENDER_PROGRAM)
    render_dir = tmp_path / "rendered"
    _pulumi(env, project, "stack", "init", "dev", "--secrets-provider", "passphrase")
    _pulumi(env, project, "config", "set", "renderDir", str(render_dir))
    _pulumi(env, project, "config", "set", "greeting", greeting)
    return project, render_dir


def test_pulumi_version_is_the_pinned_release(toolchain_env: dict[str, str], tmp_path: Path) -> None:
    """The CLI on PATH after sourcing env.sh reports the pinned version (the Automation API needs it)."""
    proc = _pulumi(toolchain_env, tmp_path, "version")
    assert proc.stdout.strip() == f"v{PULUMI_VERSION}"


def test_local_program_up_then_destroy(backend: dict[str, str], tmp_path: Path) -> None:
    """A local program runs through the language host and the real kubernetes provider, then is destroyed."""
    _require_kubernetes_plugin()
    project, render_dir = _local_project(tmp_path, backend, greeting="hello-from-up")

    up = _pulumi(backend, project, "up", "--yes", "--skip-preview")
    assert "engine-check" in up.stdout
    outputs = json.loads(_pulumi(backend, project, "stack", "output", "--json").stdout)
    assert outputs == {"configmap": "engine-check", "greeting": "hello-from-up"}
    rendered = list(render_dir.rglob("*.yaml"))
    assert rendered, f"the provider rendered nothing into {render_dir}"
    assert any("hello-from-up" in p.read_text() for p in rendered)

    _pulumi(backend, project, "destroy", "--yes", "--skip-preview")
    state = json.loads(_pulumi(backend, project, "stack", "export").stdout)
    assert not state["deployment"].get("resources"), "destroy left resources in the state"
    assert not any(p.is_file() for p in render_dir.rglob("*.yaml")), "destroy left rendered manifests"
    _pulumi(backend, project, "stack", "rm", "dev", "--yes")


DYNAMIC_PROGRAM = textwrap.dedent(
    """
    import pathlib
    import pulumi
    import pulumi.dynamic as dyn

    class FileProvider(dyn.ResourceProvider):
        def create(self, props):
            pathlib.Path(props["path"]).write_text(props["text"])
            return dyn.CreateResult(id_=props["path"], outs=props)

        def delete(self, id, props):
            pathlib.Path(id).unlink()

    class File(dyn.Resource):
        def __init__(self, name, path, text):
            super().__init__(FileProvider(), name, {"path": path, "text": text})

    config = pulumi.Config()
    marker = File("marker", config.require("path"), config.require("text"))
    pulumi.export("path", marker.id)
    """
)


def test_local_program_with_dynamic_provider_creates_and_destroys_a_file(backend: dict[str, str], tmp_path: Path) -> None:
    """No provider build needed: a pulumi.dynamic resource (bundled pulumi-resource-pulumi-python) has a real side effect."""
    project = tmp_path / "dynamic"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: engine-dynamic\nruntime: python\n")
    (project / "__main__.py").write_text(DYNAMIC_PROGRAM)
    marker = tmp_path / "marker.txt"
    _pulumi(backend, project, "stack", "init", "dev", "--secrets-provider", "passphrase")
    _pulumi(backend, project, "config", "set", "path", str(marker))
    _pulumi(backend, project, "config", "set", "text", "created-by-pulumi-up")

    _pulumi(backend, project, "up", "--yes", "--skip-preview")
    assert marker.read_text() == "created-by-pulumi-up"
    assert json.loads(_pulumi(backend, project, "stack", "output", "--json").stdout) == {"path": str(marker)}

    _pulumi(backend, project, "destroy", "--yes", "--skip-preview")
    assert not marker.exists(), "destroy did not run the provider's delete"
    _pulumi(backend, project, "stack", "rm", "dev", "--yes")


def test_automation_api_inline_program(backend: dict[str, str], tmp_path: Path) -> None:
    """An inline program runs in-process through the Automation API against the cached CLI."""
    from pulumi import automation as auto
    import pulumi

    _require_kubernetes_plugin()
    render_dir = tmp_path / "inline-rendered"

    def program() -> None:
        import pulumi_kubernetes as k8s

        render = k8s.Provider("render", render_yaml_to_directory=str(render_dir))
        ns = k8s.core.v1.Namespace("sandboxes", metadata={"name": "sandboxes"}, opts=pulumi.ResourceOptions(provider=render))
        pulumi.export("namespace", ns.metadata["name"])

    env_vars = {k: v for k, v in backend.items() if k.startswith("PULUMI_")}
    stack = auto.create_or_select_stack(
        stack_name="inline",
        project_name="engine-check-inline",
        program=program,
        opts=auto.LocalWorkspaceOptions(
            work_dir=str(tmp_path),
            pulumi_home=backend["PULUMI_HOME"],
            env_vars=env_vars,
            secrets_provider="passphrase",
            pulumi_command=auto.PulumiCommand(root=str(PULUMI_ROOT)),
            project_settings=auto.ProjectSettings(name="engine-check-inline", runtime="python"),
        ),
    )
    result = stack.up(on_output=print)
    assert result.outputs["namespace"].value == "sandboxes"
    assert result.summary.result == "succeeded"
    assert any("sandboxes" in p.read_text() for p in render_dir.rglob("*.yaml"))
    stack.destroy(on_output=print)
    assert not stack.outputs()
    stack.workspace.remove_stack("inline")


POLICY_PACK = textwrap.dedent(
    """
    from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy

    def no_forbidden_greeting(args, report_violation):
        if args.resource_type == "kubernetes:core/v1:ConfigMap":
            if (args.props.get("data") or {}).get("greeting") == "forbidden":
                report_violation("greeting must not be 'forbidden'")

    PolicyPack(
        name="engine-check-policy",
        enforcement_level=EnforcementLevel.MANDATORY,
        policies=[ResourceValidationPolicy(
            name="no-forbidden-greeting",
            description="ConfigMaps must not greet with 'forbidden'.",
            validate=no_forbidden_greeting,
        )],
    )
    """
)


def test_policy_pack_blocks_a_violating_preview(backend: dict[str, str], tmp_path: Path) -> None:
    """`pulumi preview --policy-pack` runs the pack through the language host: compliant passes, violating fails."""
    _require_kubernetes_plugin()
    pack = tmp_path / "policy"
    pack.mkdir()
    (pack / "PulumiPolicy.yaml").write_text("description: engine check\nruntime: python\n")
    (pack / "__main__.py").write_text(POLICY_PACK)
    project, _ = _local_project(tmp_path, backend, greeting="fine")

    ok = _pulumi(backend, project, "preview", "--policy-pack", str(pack), check=False)
    assert ok.returncode == 0, f"compliant preview failed:\n{ok.stdout}\n{ok.stderr}"
    assert "engine-check-policy" in ok.stdout, "the policy pack did not run"

    _pulumi(backend, project, "config", "set", "greeting", "forbidden")
    blocked = _pulumi(backend, project, "preview", "--policy-pack", str(pack), check=False)
    assert blocked.returncode != 0, f"violating preview was not blocked:\n{blocked.stdout}"
    assert "no-forbidden-greeting" in blocked.stdout + blocked.stderr
    assert "greeting must not be 'forbidden'" in blocked.stdout + blocked.stderr
    _pulumi(backend, project, "stack", "rm", "dev", "--yes", "--force")


# --- the language host's own pieces (no toolchain needed) -------------------------------------------


def test_language_host_finds_engine_address_among_engine_flags() -> None:
    """The engine prepends logging/tracing flags; the address is the first positional argument."""
    pytest.importorskip("pulumi")
    from pulumi_language_python.__main__ import _engine_address

    assert _engine_address(["--logtostderr", "-v=9", "--tracing", "http://t", "127.0.0.1:4242"]) == "127.0.0.1:4242"
    assert _engine_address(["127.0.0.1:1"]) == "127.0.0.1:1"
    assert _engine_address([]) == ""


def test_language_host_interpreter_selection(tmp_path: Path) -> None:
    """virtualenv option wins (and must exist), then PULUMI_PYTHON_CMD, then python3 on PATH."""
    from pulumi_language_python.interpreter import InterpreterError, select_interpreter

    with pytest.raises(InterpreterError, match="virtualenv='venv'"):
        select_interpreter({"virtualenv": "venv"}, str(tmp_path), {"PATH": os.environ["PATH"]})
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    chosen = select_interpreter({"virtualenv": "venv"}, str(tmp_path), {"PATH": "/usr/bin", "PYTHONHOME": "/x"})
    assert chosen.python == str(venv_bin / "python")
    env = chosen.apply({"PATH": "/usr/bin", "PYTHONHOME": "/x"})
    assert env["PATH"].startswith(str(venv_bin)) and "PYTHONHOME" not in env
    assert select_interpreter({}, str(tmp_path), {"PATH": os.environ["PATH"], "PULUMI_PYTHON_CMD": sys.executable}).python == sys.executable
    with pytest.raises(InterpreterError, match="toolchain='uv'"):
        select_interpreter({"toolchain": "uv"}, str(tmp_path), {"PATH": "/usr/bin"})


def test_language_host_discovers_provider_packages() -> None:
    """Installed provider packages are reported with the plugin version their pulumi-plugin.json requests."""
    pytest.importorskip("pulumi_kubernetes")
    from importlib.metadata import version

    from pulumi_language_python.packages import discover_plugin_packages

    found = {p.name: p.version for p in discover_plugin_packages(sys.executable, dict(os.environ), str(REPO))}
    assert found.get("kubernetes") == "v" + version("pulumi_kubernetes")
    assert "policy" not in found, "pulumi-policy has resource: false and is no provider"
