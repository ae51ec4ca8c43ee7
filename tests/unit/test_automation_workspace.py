"""The engine's workspace: the inline program, the work dir mirroring the project's settings,
the Pulumi CLI it runs, and recovering a stack left locked by a run killed hard."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from automation import errors, workspace
from automation.paths import ProjectPaths
from automation.workspace import remove_stale_locks


def _lock(paths: ProjectPaths, stack: str, pid: int, hostname: str) -> "os.PathLike[str]":
    folder = paths.state_dir / ".pulumi" / "locks" / "organization" / "agent-sandbox" / stack
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / f"lock-{pid}.json"
    lock.write_text(json.dumps({"pid": pid, "username": "root", "hostname": hostname, "timestamp": "t"}))
    (folder / f"lock-{pid}.json.attrs").write_text("{}")
    return lock


def test_only_locks_of_dead_local_processes_are_removed(tmp_path) -> None:
    paths = ProjectPaths(root=tmp_path, out_dir=tmp_path / "out")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = _lock(paths, "local", dead.pid, socket.gethostname())
    live = _lock(paths, "local", os.getpid(), socket.gethostname())
    remote = _lock(paths, "local", dead.pid + 100000, "another-host")
    removed = remove_stale_locks(paths, "local")
    assert len(removed) == 1 and str(dead.pid) in removed[0]
    assert not stale.exists() and not stale.with_name(stale.name + ".attrs").exists()
    assert live.exists() and remote.exists()


def test_missing_pulumi_cli_is_a_prerequisite_error(monkeypatch):
    monkeypatch.setattr(workspace, "find_tool", lambda name: None)
    with pytest.raises(errors.MissingPrerequisite, match=r"^missing pulumi \(command not found\)"):
        workspace.pulumi_command()


def test_inline_program_runs_the_project_main_from_the_project_dir(tmp_path, monkeypatch):
    (tmp_path / "__main__.py").write_text("import os, pathlib\npathlib.Path('ran').write_text(os.getcwd())\n")
    monkeypatch.chdir("/")
    monkeypatch.setattr(sys, "path", list(sys.path))
    workspace.inline_program(ProjectPaths(tmp_path, tmp_path))()
    assert (tmp_path / "ran").read_text() == str(tmp_path)


def write_project(root, stack_file):
    (root / "Pulumi.yaml").write_text("name: agent-sandbox\nruntime:\n  name: python\n  options:\n"
                                      "    toolchain: pip\n    virtualenv: .venv\n")
    (root / "Pulumi.s.yaml").write_text(stack_file)
    return ProjectPaths(root, root / "out")


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


def test_an_empty_override_unsets_the_key_for_that_run(tmp_path):
    # the engine type-checks "" against the key's type: an integer key would refuse it
    paths = write_project(tmp_path, "config:\n  agent-sandbox:warmPoolReplicas: '3'\n  agent-sandbox:runtime: gvisor\n")
    work = workspace.stack_work_dir(paths, "s", {"warmPoolReplicas": "", "warmPoolMinReplicas": "", "installKeda": "true"})
    assert yaml.safe_load((work / "Pulumi.s.yaml").read_text())["config"] == {
        "agent-sandbox:runtime": "gvisor", "agent-sandbox:installKeda": "true"}


def test_an_object_override_is_written_as_the_object_the_engine_type_checks(tmp_path):
    # the engine refuses a string for an object key ("must be of type 'object'"): found by
    # bench/config_compare.py giving sandboxResources on the command line
    paths = write_project(tmp_path, "config: {}\n")
    project = tmp_path / "Pulumi.yaml"
    project.write_text(project.read_text() + "config:\n  agent-sandbox:sandboxResources:\n    type: object\n"
                       "  agent-sandbox:sandboxTolerations:\n    type: array\n")
    work = workspace.stack_work_dir(paths, "s", {"sandboxResources": '{"limits": {"cpu": "2"}}',
                                                 "sandboxTolerations": "[]", "warmPoolReplicas": "3"})
    assert yaml.safe_load((work / "Pulumi.s.yaml").read_text())["config"] == {
        "agent-sandbox:sandboxResources": {"limits": {"cpu": "2"}}, "agent-sandbox:sandboxTolerations": [],
        "agent-sandbox:warmPoolReplicas": "3"}
    with pytest.raises(errors.OverrideError, match=r"sandboxResources is an object and this value is not JSON.*"
                                                   r"--config 'sandboxResources=\{\"limits\""):
        workspace.stack_work_dir(paths, "s", {"sandboxResources": "cpu=2"})
    with pytest.raises(errors.OverrideError, match="sandboxTolerations is an array and this value is JSON but not an array"):
        workspace.stack_work_dir(paths, "s", {"sandboxTolerations": '{"a": 1}'})
