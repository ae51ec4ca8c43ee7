"""The Automation API stack of the driver.

The program runs INLINE: the driver hands the engine a function that executes the project's
own ``__main__.py`` in-process (``--client`` mode, from the project directory), so no Python
language host binary is needed. State lives in the local file backend ``.pulumi-state``.

The engine's ``work_dir`` is a mirror of the project's settings kept under
``.pulumi-state/driver/workspaces/<stack>/``: ``Pulumi.yaml`` and ``Pulumi.<stack>.yaml`` copied
from the project, plus the ``--config`` overrides. The engine therefore applies exactly the
tracked stack configuration (the inline helper only invents project settings when ``work_dir``
has no Pulumi.yaml), while what the engine writes back - the passphrase ``encryptionsalt`` on
``stack init`` - lands in the mirror instead of dirtying the tracked files. Non-config keys of
the tracked stack file (its own salt, if any) win, so secrets set with ``pulumi config set
--secret`` in the project still decrypt.
"""

from __future__ import annotations

import json
import os
import runpy
import socket
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

# DriverError: the base of what this module raises, importable from here as it always was.
from automation.errors import DriverError, MissingPrerequisite, OverrideError, ProjectNotFound, StackNotFound  # noqa: F401
from automation.prereqs import PULUMI
from automation.engine_env import pulumi_env
from automation.paths import ProjectPaths, find_tool
from agent_sandbox_pulumi.sandbox_iac import constants


def inline_program(paths: ProjectPaths) -> Callable[[], None]:
    """The function the engine calls: runs the project's ``__main__.py`` like the language host."""

    def program() -> None:
        # Like the language host: relative paths in the config (controllerManifest, ...) are
        # relative to the project directory.
        os.chdir(paths.root)
        if str(paths.root) not in sys.path:
            sys.path.insert(0, str(paths.root))
        runpy.run_path(str(paths.program), run_name="__main__")

    return program


def pulumi_command() -> Any:
    """PulumiCommand for the CLI found on PATH or in the offline toolchain cache."""
    from pulumi import automation as auto

    binary = find_tool("pulumi")
    if binary is None:
        raise MissingPrerequisite(PULUMI.message())
    resolved = Path(binary)
    if resolved.parent.name == "bin":
        return auto.PulumiCommand(root=str(resolved.parent.parent))
    return auto.PulumiCommand()


def _read_yaml(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def override_value(project: Mapping[str, Any], key: str, value: str) -> Any:
    """``--config KEY=VALUE`` as the stack file must hold it: an object or array key (by its
    type in Pulumi.yaml) parsed from JSON, since the engine refuses a string for those; any
    other key as the string given."""
    declared = ((project.get("config") or {}).get(f"{project.get('name')}:{key}") or {})
    kind = declared.get("type") if isinstance(declared, dict) else None
    if kind not in ("object", "array"):
        return value
    try:
        parsed = json.loads(value)
    except ValueError as error:
        parsed, problem = None, f"not JSON ({error})"
    else:
        problem = None if isinstance(parsed, dict if kind == "object" else list) else f"JSON but not an {kind}"
    if problem:
        example = '{"limits": {"cpu": "2"}}' if kind == "object" else '["a", "b"]'
        raise OverrideError(f"--config {key}={value!r}: {key} is an {kind} and this value is {problem}; "
                            f"give it as JSON, e.g. --config '{key}={example}'")
    return parsed


def stack_work_dir(paths: ProjectPaths, stack: str, overrides: Optional[Mapping[str, str]] = None) -> Path:
    """(Re)write the engine's work dir for ``stack``; returns it."""
    work = paths.driver_state_dir / "workspaces" / stack
    work.mkdir(parents=True, exist_ok=True)
    project = _read_yaml(paths.root / "Pulumi.yaml")
    if not project:
        raise ProjectNotFound(f"no Pulumi.yaml in {paths.root}: run the driver from the project checkout")
    options = (project.get("runtime") or {}).get("options") if isinstance(project.get("runtime"), dict) else None
    if isinstance(options, dict) and options.get("virtualenv") and not Path(options["virtualenv"]).is_absolute():
        options["virtualenv"] = str(paths.root / options["virtualenv"])
    (work / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))

    mirror = work / f"Pulumi.{stack}.yaml"
    tracked, previous = _read_yaml(paths.stack_file(stack)), _read_yaml(mirror)
    settings = {key: value for key, value in previous.items() if key != "config"}
    settings.update({key: value for key, value in tracked.items() if key != "config"})
    config = dict(tracked.get("config") or {})
    for key, value in (overrides or {}).items():
        # `--config key=` unsets the key for this run: the engine type-checks "" (an integer key
        # would refuse it), so the key is left out and Pulumi.yaml's default applies.
        if value == "":
            config.pop(f"{project['name']}:{key}", None)
        else:
            config[f"{project['name']}:{key}"] = override_value(project, key, value)
    settings["config"] = config
    mirror.write_text(
        f"# Written by the driver from {paths.stack_file(stack)} and --config overrides; edit those.\n"
        + yaml.safe_dump(settings, sort_keys=False))
    return work


def remove_work_dir(paths: ProjectPaths, stack: str) -> None:
    shutil.rmtree(paths.driver_state_dir / "workspaces" / stack, ignore_errors=True)


def workspace_options(paths: ProjectPaths, work_dir: Path) -> Any:
    from pulumi import automation as auto

    env = pulumi_env(paths)
    if env["PULUMI_BACKEND_URL"].startswith("file://"):
        Path(env["PULUMI_BACKEND_URL"][len("file://"):]).mkdir(parents=True, exist_ok=True)
    return auto.LocalWorkspaceOptions(
        work_dir=str(work_dir),
        pulumi_home=env.get("PULUMI_HOME"),
        env_vars=env,
        secrets_provider="passphrase",
        pulumi_command=pulumi_command(),
    )


def remove_stale_locks(paths: ProjectPaths, stack: str) -> list[str]:
    """Delete the local backend's locks on ``stack`` held by processes of this host that no longer
    exist (a driver or engine killed hard); returns what was removed. Live locks stay."""
    removed = []
    for lock in (paths.state_dir / ".pulumi" / "locks").glob(f"*/{constants.PROJECT_NAME}/{stack}/*.json"):
        try:
            owner = json.loads(lock.read_text())
        except (OSError, ValueError):
            continue
        if owner.get("hostname") != socket.gethostname() or _process_alive(int(owner.get("pid", 0))):
            continue
        for path in (lock, lock.with_name(lock.name + ".attrs")):
            path.unlink(missing_ok=True)
        removed.append(f"{lock.name} (pid {owner.get('pid')}, {owner.get('timestamp')})")
    for entry in removed:
        print(f"stack: removed a stale lock left by an interrupted run: {entry}")
    return removed


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_stack(paths: ProjectPaths, stack: str, overrides: Optional[Mapping[str, str]] = None,
               create: bool = True) -> Any:
    """Select ``stack`` (creating it on the local backend when ``create``)."""
    from pulumi import automation as auto

    remove_stale_locks(paths, stack)

    options = workspace_options(paths, stack_work_dir(paths, stack, overrides))
    program = inline_program(paths)
    try:
        if create:
            return auto.create_or_select_stack(stack, project_name=constants.PROJECT_NAME, program=program,
                                               opts=options)
        return auto.select_stack(stack, project_name=constants.PROJECT_NAME, program=program, opts=options)
    except auto.StackNotFoundError as error:
        raise StackNotFound(f"stack {stack!r} does not exist in {options.env_vars['PULUMI_BACKEND_URL']}: "
                          f"run `python -m automation up {stack}` first") from error


def plain_outputs(stack: Any) -> dict[str, Any]:
    """Stack outputs as plain values (secrets decrypted: the driver needs the router token)."""
    return {key: output.value for key, output in stack.outputs().items()}


def printable_outputs(stack: Any, show_secrets: bool = False) -> dict[str, Any]:
    """Outputs for humans: secret values masked unless asked for."""
    return {key: (output.value if show_secrets or not output.secret else "[secret]")
            for key, output in stack.outputs().items()}
