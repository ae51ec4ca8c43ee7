"""The Automation API stack of the driver.

The program runs INLINE: the driver hands the engine a function that executes the project's
own ``__main__.py`` in-process (``--client`` mode), so no Python language host binary is
needed. ``work_dir`` is the project directory, which makes the engine use Pulumi.yaml and
``Pulumi.<stack>.yaml`` (the inline helper only writes default project settings when
``work_dir`` has no Pulumi.yaml). State lives in the local file backend ``.pulumi-state``.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any, Callable

from automation.prereqs import PULUMI
from automation.project import ProjectPaths, find_tool, pulumi_env
from sandbox_iac import constants


class DriverError(RuntimeError):
    """A driver step failed in a way the user can fix; the message says how."""


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
        raise DriverError(PULUMI.message())
    resolved = Path(binary)
    if resolved.parent.name == "bin":
        return auto.PulumiCommand(root=str(resolved.parent.parent))
    return auto.PulumiCommand()


def workspace_options(paths: ProjectPaths) -> Any:
    from pulumi import automation as auto

    env = pulumi_env(paths)
    if env["PULUMI_BACKEND_URL"].startswith("file://"):
        Path(env["PULUMI_BACKEND_URL"][len("file://"):]).mkdir(parents=True, exist_ok=True)
    return auto.LocalWorkspaceOptions(
        work_dir=str(paths.root),
        pulumi_home=env.get("PULUMI_HOME"),
        env_vars=env,
        secrets_provider="passphrase",
        pulumi_command=pulumi_command(),
    )


def open_stack(paths: ProjectPaths, stack: str, create: bool = True) -> Any:
    """Select ``stack`` (creating it on the local backend when ``create``)."""
    from pulumi import automation as auto

    options = workspace_options(paths)
    program = inline_program(paths)
    try:
        if create:
            return auto.create_or_select_stack(stack, project_name=constants.PROJECT_NAME, program=program,
                                               opts=options)
        return auto.select_stack(stack, project_name=constants.PROJECT_NAME, program=program, opts=options)
    except auto.StackNotFoundError as error:
        raise DriverError(f"stack {stack!r} does not exist in {options.env_vars['PULUMI_BACKEND_URL']}: "
                          f"run `python -m automation up {stack}` first") from error


def plain_outputs(stack: Any) -> dict[str, Any]:
    """Stack outputs as plain values (secrets decrypted: the driver needs the router token)."""
    return {key: output.value for key, output in stack.outputs().items()}


def printable_outputs(stack: Any, show_secrets: bool = False) -> dict[str, Any]:
    """Outputs for humans: secret values masked unless asked for."""
    return {key: (output.value if show_secrets or not output.secret else "[secret]")
            for key, output in stack.outputs().items()}
