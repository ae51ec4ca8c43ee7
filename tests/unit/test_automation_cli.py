"""Argument parsing and top-level error handling of ``python -m automation`` (no cluster)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from automation import cli, errors
from automation.overrides import load_overrides
from automation.paths import ProjectPaths

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv,expected", [
    (["up", "gvisor"], {"command": "up", "stack": "gvisor", "skip_prerequisites": False, "no_policy": False}),
    (["up", "gvisor", "--no-policy", "--policy-config", "c.json"], {"no_policy": True, "policy_config": Path("c.json")}),
    (["up", "kata", "--skip-prerequisites", "--show-secrets"], {"command": "up", "stack": "kata",
                                                                "skip_prerequisites": True, "show_secrets": True}),
    (["preview", "gvisor"], {"command": "preview", "no_policy": False, "policy_config": None}),
    (["preview", "gvisor", "--policy-config", "p.json"], {"policy_config": Path("p.json")}),
    (["smoke", "gvisor"], {"command": "smoke", "stack": "gvisor"}),
    (["bench", "gvisor"], {"command": "bench", "n": cli.DEFAULT_BENCH_N}),
    (["bench", "kata", "-n", "25"], {"command": "bench", "stack": "kata", "n": 25}),
    (["down", "gvisor"], {"command": "down", "cluster": False, "keep_stack": False}),
    (["down", "gvisor", "--cluster"], {"command": "down", "cluster": True, "forget": False}),
    (["down", "local", "--forget"], {"command": "down", "forget": True}),
    (["--out-dir", "/tmp/r", "smoke", "local"], {"out_dir": "/tmp/r", "stack": "local"}),
])
def test_valid_command_lines(argv, expected):
    args = cli.build_parser().parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value, key


@pytest.mark.parametrize("argv,fragment", [
    ([], "required"),
    (["up"], "STACK"),
    (["bench", "gvisor", "-n", "0"], "expected a positive integer, got 0"),
    (["bench", "gvisor", "-n", "many"], "expected a positive integer, got 'many'"),
    (["launch", "gvisor"], "invalid choice"),
    (["down", "gvisor", "--force"], "unrecognized arguments: --force"),
])
def test_invalid_command_lines_exit_2_with_a_reason(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_unknown_stack_is_a_usage_error_naming_the_known_stacks(capsys):
    assert cli.main(["smoke", "no-such-stack"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "no stack file" in err and "gvisor" in err and "kata" in err


def test_invalid_stack_config_is_reported_with_the_fix(tmp_path, monkeypatch, capsys):
    (tmp_path / "Pulumi.bad.yaml").write_text("config:\n  agent-sandbox:runtime: runc\n")
    monkeypatch.setattr(cli, "default_paths", lambda out=None: ProjectPaths(root=tmp_path, out_dir=tmp_path))
    assert cli.main(["up", "bad"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "agent-sandbox:runtime = 'runc' is invalid" in err and "allowInsecureRunc" in err


def test_missing_prerequisites_stop_up_before_anything_runs(monkeypatch, capsys):
    monkeypatch.setattr("shutil.which", lambda *args, **kwargs: None)
    monkeypatch.setattr(cli.clusters, "ensure_cluster", lambda *a, **k: pytest.fail("must not touch clusters"))
    assert cli.main(["up", "kata"]) == cli.EXIT_PREREQUISITES
    err = capsys.readouterr().err
    assert "missing pulumi (command not found)" in err
    assert "missing minikube (command not found)" in err


def test_help_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "automation", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("up", "preview", "smoke", "bench", "down"):
        assert command in done.stdout


def test_config_overrides_are_validated_remembered_and_used(tmp_path, monkeypatch, capsys):
    (tmp_path / "Pulumi.s.yaml").write_text("config:\n  agent-sandbox:clusterFlavour: existing\n"
                                            "  agent-sandbox:imageBuild: prebuilt\n")
    paths = ProjectPaths(root=tmp_path, out_dir=tmp_path)
    monkeypatch.setattr(cli, "default_paths", lambda out=None: paths)
    monkeypatch.setattr("shutil.which", lambda *args, **kwargs: None)

    assert cli.main(["up", "s", "--config", "warmPoolReplicas=lots"]) == cli.EXIT_USAGE
    assert "agent-sandbox:warmPoolReplicas = 'lots' is invalid" in capsys.readouterr().err
    assert load_overrides(paths, "s") == {}  # invalid values are not remembered

    assert cli.main(["up", "s", "--config", "novalue"]) == cli.EXIT_USAGE
    assert "is not KEY=VALUE" in capsys.readouterr().err

    refs = ["--config", "sandboxImage=a/r:1", "--config", "routerImage=a/o:1", "--config", "imageRegistry=r/x"]
    assert cli.main(["up", "s", *refs]) == cli.EXIT_PREREQUISITES  # valid: config ok, tools missing
    assert load_overrides(paths, "s") == {"sandboxImage": "a/r:1", "routerImage": "a/o:1",
                                                  "imageRegistry": "r/x"}
    # a later command without --config still sees them (prebuilt would fail without the refs)
    assert cli.main(["up", "s"]) == cli.EXIT_PREREQUISITES


def test_unexpected_errors_are_one_line_with_exit_1(monkeypatch, capsys):
    def explode(args, paths, config):
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setitem(cli.COMMANDS, "smoke", explode)
    monkeypatch.delenv("AUTOMATION_DEBUG", raising=False)
    assert cli.main(["smoke", "gvisor"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "smoke gvisor: ConnectionRefusedError: [Errno 111] Connection refused" in err
    assert "Traceback" not in err and "AUTOMATION_DEBUG=1" in err
    monkeypatch.setenv("AUTOMATION_DEBUG", "1")
    with pytest.raises(ConnectionRefusedError):
        cli.main(["smoke", "gvisor"])


def test_up_derives_the_setup_afresh_and_keeps_it_for_later_commands(tmp_path, monkeypatch):
    """A second `up` must decide the images again (not inherit imageBuild=prebuilt from the first
    run's set-up and then lose it), and later commands see the set-up's values under the user's."""
    from automation import bootstrap, cli
    from automation.overrides import load_setup_overrides, save_setup_overrides

    paths = ProjectPaths(tmp_path, tmp_path / "out")
    (tmp_path / "Pulumi.gvisor.yaml").write_text("config: {}\n")
    save_setup_overrides(paths, "gvisor", {"imageBuild": "prebuilt", "sandboxImage": "old/runtime:1",
                                           "routerImage": "old/router:1"})
    seen = {}

    class FakeSetup:
        def __init__(self, config, paths, workers=0, log=print):
            seen["image_build"] = config.image_build

        def run(self):
            return bootstrap.SetupResult(overrides={"imageBuild": "prebuilt", "sandboxImage": "new/runtime:2",
                                                    "routerImage": "new/router:2"})

    monkeypatch.setattr(bootstrap, "Setup", FakeSetup)
    monkeypatch.setattr(cli, "check_manifest_source", lambda *a: None)

    class Stop(Exception):
        pass

    def open_stack(paths_, stack, overrides, create=True):
        seen["overrides"] = dict(overrides)
        raise Stop

    monkeypatch.setattr("automation.workspace.open_stack", open_stack)
    args = cli.build_parser().parse_args(["up", "gvisor"])
    args.user_overrides = {}
    args.overrides = load_setup_overrides(paths, "gvisor")
    config = cli.stack_config(paths, "gvisor", args.overrides)
    with pytest.raises(Stop):
        cli.cmd_up(args, paths, config)
    assert seen["image_build"] == "docker"  # the set-up saw the stack's own setting, not the last run's
    assert seen["overrides"]["sandboxImage"] == "new/runtime:2"
    assert load_setup_overrides(paths, "gvisor")["sandboxImage"] == "new/runtime:2"


EXIT_CODES = {  # every error of automation.errors and the exit code it stands for
    errors.DriverError: cli.EXIT_FAILED,
    errors.UsageError: cli.EXIT_USAGE,
    errors.OverrideError: cli.EXIT_USAGE,
    errors.StackFileMissing: cli.EXIT_USAGE,
    errors.MissingPrerequisite: cli.EXIT_PREREQUISITES,
    errors.ProjectNotFound: cli.EXIT_FAILED,
    errors.StackNotFound: cli.EXIT_FAILED,
    errors.StackNotDeployed: cli.EXIT_FAILED,
    errors.SetupError: cli.EXIT_FAILED,
    errors.PreflightError: cli.EXIT_FAILED,
    errors.ToolError: cli.EXIT_FAILED,
    errors.NodeImageError: cli.EXIT_FAILED,
    errors.ClusterError: cli.EXIT_FAILED,
    errors.TunnelError: cli.EXIT_FAILED,
    errors.CapacityError: cli.EXIT_FAILED,
}


def _all_subclasses(cls: type) -> set[type]:
    return {cls} | {sub for child in cls.__subclasses__() for sub in _all_subclasses(child)}


def test_every_driver_error_has_its_exit_code_in_the_table():
    assert _all_subclasses(errors.DriverError) == set(EXIT_CODES)
    assert {cls: cls.exit_code for cls in EXIT_CODES} == EXIT_CODES


@pytest.mark.parametrize("error_class", list(EXIT_CODES), ids=lambda cls: cls.__name__)
def test_each_error_type_is_one_line_and_its_exit_code(error_class, monkeypatch, capsys):
    def fail(args, paths, config):
        raise error_class("what went wrong; Fix: what to do")

    monkeypatch.setitem(cli.COMMANDS, "smoke", fail)
    monkeypatch.delenv("AUTOMATION_DEBUG", raising=False)
    assert cli.main(["smoke", "gvisor"]) == EXIT_CODES[error_class]
    assert capsys.readouterr().err == "smoke gvisor: what went wrong; Fix: what to do\n"  # one line, no traceback


@pytest.mark.parametrize("module,name", [
    ("bootstrap", "SetupError"), ("node_image", "NodeImageError"), ("preflight", "PreflightError"),
    ("tools", "ToolError"), ("cluster", "ClusterError"), ("tunnel", "TunnelError"), ("kube", "CapacityError"),
    ("workspace", "DriverError"), ("overrides", "OverrideError"),
])
def test_the_errors_keep_their_names_where_they_were_raised(module, name):
    assert getattr(importlib.import_module(f"automation.{module}"), name) is getattr(errors, name)


def test_the_package_usage_errors_exit_2():
    from agent_sandbox_pulumi.sandbox_iac.config import ConfigError
    from agent_sandbox_pulumi.sandbox_iac.manifests import ManifestError

    assert cli.exit_code(ConfigError(["x"])) == cli.exit_code(ManifestError("x")) == cli.EXIT_USAGE
    assert cli.exit_code(errors.MissingPrerequisite("missing or not")) == cli.EXIT_PREREQUISITES
    assert cli.exit_code(errors.SetupError("missing kind")) == cli.EXIT_FAILED  # the type decides, not the words


def test_stale_autoscalers_are_the_scaled_objects_in_the_stack_state() -> None:
    from types import SimpleNamespace

    from automation.cli import stale_autoscalers

    state = {"resources": [
        {"urn": "urn:pulumi:gvisor::agent-sandbox::kubernetes:keda.sh/v1alpha1:ScaledObject::pool", "type":
         "kubernetes:keda.sh/v1alpha1:ScaledObject"},
        {"urn": "urn:pulumi:gvisor::agent-sandbox::kubernetes:apps/v1:Deployment::router", "type": "kubernetes:apps/v1:Deployment"}]}
    stack = SimpleNamespace(export_stack=lambda: SimpleNamespace(deployment=state))
    assert stale_autoscalers(stack) == ["urn:pulumi:gvisor::agent-sandbox::kubernetes:keda.sh/v1alpha1:ScaledObject::pool"]
    assert stale_autoscalers(SimpleNamespace(export_stack=lambda: SimpleNamespace(deployment=None))) == []
