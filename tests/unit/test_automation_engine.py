"""The driver's Automation API path against the real Pulumi CLI (skipped with a reason when the
toolchain is not built): an inline program that runs a project's ``__main__.py`` with the
project's stack-file config (plus ``--config`` overrides) on the local file backend, secret
outputs, the tracked stack file left untouched, and a preview with our policy pack that fails on
a mandatory stack policy. No cluster and no provider plugin are involved."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from automation import workspace
from automation.paths import ProjectPaths, find_tool

pytestmark = pytest.mark.timeout(300)
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_project(tmp_path):
    if find_tool("pulumi") is None:
        pytest.skip("Pulumi CLI not found on PATH or in $CACHE_DIR (build it with `make toolchain-pulumi`)")
    (tmp_path / "Pulumi.yaml").write_text("name: drivertest\nruntime:\n  name: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  drivertest:greeting: hello from the stack file\n")
    # A dynamic provider defined in a project module, like components/image_loader.py: the provider
    # process must be able to import it.
    (tmp_path / "projectlib.py").write_text(
        "from pulumi.dynamic import CreateResult, Resource, ResourceProvider\n"
        "class EchoProvider(ResourceProvider):\n"
        "    def create(self, props):\n"
        "        return CreateResult(id_='echo', outs={'echo': props['text'].upper()})\n"
        "class Echo(Resource):\n"
        "    def __init__(self, name, text):\n"
        "        super().__init__(EchoProvider(), name, {'text': text, 'echo': None})\n")
    (tmp_path / "__main__.py").write_text(
        "import os, pulumi\n"
        "from projectlib import Echo\n"
        "pulumi.export('greeting', pulumi.Config().require('greeting'))\n"
        "pulumi.export('cwd', os.getcwd())\n"
        "pulumi.export('echo', Echo('echo', 'dynamic ok').echo)\n"
        "pulumi.export('token', pulumi.Output.secret('s3cret-token'))\n")
    return ProjectPaths(tmp_path, tmp_path / "out")


def test_inline_program_with_the_project_settings_on_the_local_backend(tiny_project, monkeypatch):
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    monkeypatch.chdir("/")
    tracked = (tiny_project.root / "Pulumi.dev.yaml").read_text()
    stack = workspace.open_stack(tiny_project, "dev")
    lines: list[str] = []
    try:
        result = stack.up(on_output=lines.append, color="never", show_secrets=False)
        assert result.summary.result == "succeeded"
        assert any("Updating (dev)" in line for line in lines)  # progress was streamed
        assert "s3cret-token" not in "".join(lines)
        outputs = workspace.plain_outputs(stack)
        assert outputs["greeting"] == "hello from the stack file"
        assert outputs["cwd"] == str(tiny_project.root)  # the program ran from the project directory
        assert outputs["token"] == "s3cret-token"
        assert outputs["echo"] == "DYNAMIC OK"  # the dynamic provider process imported a project module
        assert workspace.printable_outputs(stack)["token"] == "[secret]"
        assert (tiny_project.state_dir / ".pulumi" / "stacks").is_dir()
        # The engine's writes (the passphrase salt) went to the mirror, not to the tracked file.
        assert (tiny_project.root / "Pulumi.dev.yaml").read_text() == tracked
        mirror = tiny_project.driver_state_dir / "workspaces" / "dev" / "Pulumi.dev.yaml"
        salt = yaml.safe_load(mirror.read_text())["encryptionsalt"]

        stack = workspace.open_stack(tiny_project, "dev", {"greeting": "from --config"}, create=False)
        stack.up(on_output=lambda line: None, color="never")
        assert workspace.plain_outputs(stack)["greeting"] == "from --config"
        assert workspace.plain_outputs(stack)["token"] == "s3cret-token"  # same salt, secrets still decrypt
        assert yaml.safe_load(mirror.read_text())["encryptionsalt"] == salt
        stack.destroy(on_output=lambda line: None)
    finally:
        stack.workspace.remove_stack("dev")
    assert (tiny_project.root / "Pulumi.dev.yaml").read_text() == tracked


def test_preview_with_the_policy_pack_fails_on_a_mandatory_violation(tiny_project, monkeypatch):
    from pulumi.automation import CommandError

    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    monkeypatch.chdir("/")
    stack = workspace.open_stack(tiny_project, "dev")
    try:
        with pytest.raises(CommandError) as failure:
            stack.preview(on_output=lambda line: None, color="never", policy_packs=[str(REPO_ROOT / "policy")])
        message = str(failure.value)
        assert "agent-sandbox-guardrails" in message
        assert "[mandatory]  sandbox-stack-consistency" in message
        assert "The stack has no router Deployment" in message
    finally:
        stack.workspace.remove_stack("dev")


def test_selecting_a_stack_that_does_not_exist_says_how_to_create_it(tiny_project):
    with pytest.raises(workspace.DriverError, match="run `python -m automation up nope` first"):
        workspace.open_stack(tiny_project, "nope", create=False)
