"""Project paths, stack-file config and the Pulumi environment of the driver."""

from __future__ import annotations

import sys

import pytest
import yaml

from automation import project
from automation import workspace
from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config


def test_stack_file_config_drops_secrets_and_stringifies_scalars(tmp_path):
    (tmp_path / "Pulumi.s.yaml").write_text(
        "config:\n"
        "  agent-sandbox:clusterFlavour: existing\n"
        "  agent-sandbox:manageRuntimeClass: false\n"
        "  agent-sandbox:warmPoolReplicas: 3\n"
        "  agent-sandbox:routerAuthToken:\n    secure: v1:abc\n"
        "  kubernetes:context: ignored\n")
    raw = project.read_stack_file(project.ProjectPaths(tmp_path, tmp_path), "s")
    assert raw == {"clusterFlavour": "existing", "manageRuntimeClass": "false", "warmPoolReplicas": "3"}


def test_the_project_stacks_parse():
    paths = project.default_paths()
    assert project.stack_config(paths, "gvisor").cluster_flavour == "kind"
    assert project.stack_config(paths, "kata").runtime == "kata-qemu"


def test_pulumi_env_defaults_to_the_local_backend_and_an_empty_passphrase(tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "cache"))
    paths = project.ProjectPaths(tmp_path, tmp_path / "out")
    env = project.pulumi_env(paths, environ={"PATH": "/usr/bin"})
    assert env["PULUMI_BACKEND_URL"] == f"file://{tmp_path}/.pulumi-state"
    assert env["PULUMI_CONFIG_PASSPHRASE"] == ""
    assert env["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    # online the engine may fetch the plugins the pinned packages ask for; offline it must not try
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "false"
    offline = project.pulumi_env(paths, environ={"PATH": "/usr/bin", "AGENT_SANDBOX_OFFLINE": "1"})
    assert offline["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    assert env["PATH"].split(":")[0] == "/usr/bin" and f"{tmp_path}/cache/bin" in env["PATH"]
    assert "PULUMI_HOME" not in env
    assert env["PYTHONPATH"] == str(tmp_path)
    assert env["PULUMI_PYTHON_CMD"] == sys.executable
    with_path = project.pulumi_env(paths, environ={"PATH": "", "PYTHONPATH": f"/x:{tmp_path}"})
    assert with_path["PYTHONPATH"] == f"{tmp_path}:/x"


def test_pulumi_env_keeps_what_the_user_set(tmp_path):
    paths = project.ProjectPaths(tmp_path, tmp_path)
    env = project.pulumi_env(paths, environ={"PULUMI_BACKEND_URL": "file:///elsewhere", "PULUMI_CONFIG_PASSPHRASE": "p",
                                             "PULUMI_HOME": "/h", "PATH": ""})
    assert (env["PULUMI_BACKEND_URL"], env["PULUMI_CONFIG_PASSPHRASE"], env["PULUMI_HOME"]) == (
        "file:///elsewhere", "p", "/h")


@pytest.mark.parametrize("raw,expected", [
    ({"clusterFlavour": "kind", "clusterName": "x"}, ["--context", "kind-x"]),
    ({"clusterFlavour": "existing", "kubeconfig": "/k", "kubeContext": "c", "imageRegistry": "r/x"},
     ["--kubeconfig", "/k", "--context", "c"]),
    ({"clusterFlavour": "existing", "imageRegistry": "r/x"}, []),
])
def test_kube_args_follow_the_stack_config(raw, expected):
    assert project.kube_args(parse_stack_config(raw, "s")) == expected


def test_missing_pulumi_cli_is_a_prerequisite_error(monkeypatch):
    monkeypatch.setattr(workspace, "find_tool", lambda name: None)
    with pytest.raises(workspace.DriverError, match=r"^missing pulumi \(command not found\)"):
        workspace.pulumi_command()


def test_inline_program_runs_the_project_main_from_the_project_dir(tmp_path, monkeypatch):
    (tmp_path / "__main__.py").write_text("import os, pathlib\npathlib.Path('ran').write_text(os.getcwd())\n")
    monkeypatch.chdir("/")
    monkeypatch.setattr(sys, "path", list(sys.path))
    workspace.inline_program(project.ProjectPaths(tmp_path, tmp_path))()
    assert (tmp_path / "ran").read_text() == str(tmp_path)


@pytest.mark.parametrize("items,expected", [
    (["kubeconfig=/tmp/kc"], {"kubeconfig": "/tmp/kc"}),
    (["agent-sandbox:sandboxImage=a/r:1", "x=a=b", "empty="], {"sandboxImage": "a/r:1", "x": "a=b", "empty": ""}),
    (None, {}),
])
def test_config_overrides_parse(items, expected):
    assert project.parse_overrides(items) == expected


@pytest.mark.parametrize("bad", ["novalue", "=v"])
def test_malformed_overrides_say_what_is_expected(bad):
    with pytest.raises(project.OverrideError, match="is not KEY=VALUE"):
        project.parse_overrides([bad])


def test_overrides_apply_on_top_of_the_stack_file(tmp_path):
    (tmp_path / "Pulumi.s.yaml").write_text("config:\n  agent-sandbox:clusterFlavour: kind\n")
    paths = project.ProjectPaths(tmp_path, tmp_path)
    project.save_overrides(paths, "s", {"clusterFlavour": "existing", "imageRegistry": "r/x"})
    config = project.stack_config(paths, "s", project.load_overrides(paths, "s"))
    assert config.cluster_flavour == "existing" and config.image_registry == "r/x"


def write_project(root, stack_file):
    (root / "Pulumi.yaml").write_text("name: agent-sandbox\nruntime:\n  name: python\n  options:\n"
                                      "    toolchain: pip\n    virtualenv: .venv\n")
    (root / "Pulumi.s.yaml").write_text(stack_file)
    return project.ProjectPaths(root, root / "out")


def test_engine_work_dir_mirrors_the_project_and_keeps_the_engine_salt(tmp_path):
    tracked = "config:\n  agent-sandbox:runtime: gvisor\n"
    paths = write_project(tmp_path, tracked)
    work = workspace.stack_work_dir(paths, "s", {"warmPoolReplicas": "5"})
    settings = yaml.safe_load((work / "Pulumi.yaml").read_text())
    assert settings["name"] == "agent-sandbox"
    assert settings["runtime"]["options"]["virtualenv"] == str(tmp_path / ".venv")
    mirror = work / "Pulumi.s.yaml"
    assert yaml.safe_load(mirror.read_text())["config"] == {"agent-sandbox:runtime": "gvisor",
                                                            "agent-sandbox:warmPoolReplicas": "5"}
    # what `pulumi stack init` writes into the mirror survives the next regeneration
    data = yaml.safe_load(mirror.read_text())
    data["encryptionsalt"] = "v1:engine-salt"
    mirror.write_text(yaml.safe_dump(data))
    workspace.stack_work_dir(paths, "s", {})
    again = yaml.safe_load(mirror.read_text())
    assert again["encryptionsalt"] == "v1:engine-salt"
    assert again["config"] == {"agent-sandbox:runtime": "gvisor"}
    assert (tmp_path / "Pulumi.s.yaml").read_text() == tracked


def test_a_salt_in_the_tracked_stack_file_wins(tmp_path):
    paths = write_project(tmp_path, "encryptionsalt: v1:tracked\nconfig:\n  agent-sandbox:routerAuthToken:\n"
                                    "    secure: v1:abc\n")
    work = workspace.stack_work_dir(paths, "s")
    mirror = yaml.safe_load((work / "Pulumi.s.yaml").read_text())
    assert mirror["encryptionsalt"] == "v1:tracked"
    assert mirror["config"]["agent-sandbox:routerAuthToken"] == {"secure": "v1:abc"}


def test_setup_overrides_are_kept_apart_from_the_users(tmp_path):
    paths = project.ProjectPaths(tmp_path, tmp_path / "out")
    project.save_setup_overrides(paths, "gvisor", {"imageBuild": "prebuilt", "sandboxImage": "a/runtime:1"})
    project.save_overrides(paths, "gvisor", {"sandboxImage": "mine/runtime:2"})
    assert project.load_setup_overrides(paths, "gvisor") == {"imageBuild": "prebuilt", "sandboxImage": "a/runtime:1"}
    # what later commands see: the set-up's values under the user's
    merged = {**project.load_setup_overrides(paths, "gvisor"), **project.load_overrides(paths, "gvisor")}
    assert merged == {"imageBuild": "prebuilt", "sandboxImage": "mine/runtime:2"}
    assert project.setup_overrides_path(paths, "gvisor") != project.overrides_path(paths, "gvisor")
