"""The environment of every Pulumi command: the local backend, an empty passphrase by default,
plugin downloads only online, the toolchain on PATH, the project importable, what the user set."""

from __future__ import annotations

import sys

from automation.engine_env import pulumi_env
from automation.paths import ProjectPaths


def test_pulumi_env_defaults_to_the_local_backend_and_an_empty_passphrase(tmp_path, monkeypatch):
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "cache"))
    paths = ProjectPaths(tmp_path, tmp_path / "out")
    env = pulumi_env(paths, environ={"PATH": "/usr/bin"})
    assert env["PULUMI_BACKEND_URL"] == f"file://{tmp_path}/.pulumi-state"
    assert env["PULUMI_CONFIG_PASSPHRASE"] == ""
    assert env["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    # online the engine may fetch the plugins the pinned packages ask for; offline it must not try
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "false"
    offline = pulumi_env(paths, environ={"PATH": "/usr/bin", "AGENT_SANDBOX_OFFLINE": "1"})
    assert offline["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    assert env["PATH"].split(":")[0] == "/usr/bin" and f"{tmp_path}/cache/bin" in env["PATH"]
    assert "PULUMI_HOME" not in env
    assert env["PYTHONPATH"] == str(tmp_path)
    assert env["PULUMI_PYTHON_CMD"] == sys.executable
    with_path = pulumi_env(paths, environ={"PATH": "", "PYTHONPATH": f"/x:{tmp_path}"})
    assert with_path["PYTHONPATH"] == f"{tmp_path}:/x"


def test_pulumi_env_keeps_what_the_user_set(tmp_path):
    paths = ProjectPaths(tmp_path, tmp_path)
    env = pulumi_env(paths, environ={"PULUMI_BACKEND_URL": "file:///elsewhere", "PULUMI_CONFIG_PASSPHRASE": "p",
                                             "PULUMI_HOME": "/h", "PATH": ""})
    assert (env["PULUMI_BACKEND_URL"], env["PULUMI_CONFIG_PASSPHRASE"], env["PULUMI_HOME"]) == (
        "file:///elsewhere", "p", "/h")
