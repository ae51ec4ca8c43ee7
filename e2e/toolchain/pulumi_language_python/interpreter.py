"""Pick the Python interpreter that runs a program or plugin, as the upstream host does."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Mapping


class InterpreterError(RuntimeError):
    """Raised when the configured interpreter cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Interpreter:
    """The interpreter to run plus the environment changes that activate it."""

    python: str
    env_overrides: dict[str, str] = field(default_factory=dict)
    env_removals: tuple[str, ...] = ()

    def apply(self, env: Mapping[str, str]) -> dict[str, str]:
        """Return a copy of ``env`` with this interpreter's activation applied."""
        merged = {k: v for k, v in env.items() if k not in self.env_removals}
        merged.update(self.env_overrides)
        return merged


def select_interpreter(options: Mapping[str, Any], root_directory: str, env: Mapping[str, str]) -> Interpreter:
    """Choose the interpreter from the runtime options, ``PULUMI_PYTHON_CMD`` or ``python3`` on PATH.

    ``options`` are the ``runtime.options`` of Pulumi.yaml / PulumiPolicy.yaml. A relative
    ``virtualenv`` is resolved against ``root_directory`` (the directory of that yaml file).
    """
    toolchain = str(options.get("toolchain") or "pip")
    if toolchain not in ("pip",):
        raise InterpreterError(
            f"runtime option toolchain={toolchain!r} is not supported by this language host; "
            "use toolchain 'pip' with a 'virtualenv' option or PULUMI_PYTHON_CMD"
        )
    virtualenv = options.get("virtualenv")
    if virtualenv:
        venv = os.path.normpath(os.path.join(root_directory, str(virtualenv)))
        python = os.path.join(venv, "bin", "python")
        if not os.path.exists(python):
            raise InterpreterError(
                f"runtime option virtualenv={virtualenv!r} resolves to {venv!r}, which has no bin/python; "
                f"create it with: python3 -m venv {venv} && {venv}/bin/pip install -r requirements.txt"
            )
        path = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
        return Interpreter(python, {"PATH": path, "VIRTUAL_ENV": venv}, ("PYTHONHOME",))
    configured = env.get("PULUMI_PYTHON_CMD")
    candidates = [configured] if configured else ["python3", "python"]
    for candidate in candidates:
        found = shutil.which(candidate, path=env.get("PATH"))
        if found:
            return Interpreter(found)
    raise InterpreterError(
        f"no Python interpreter found (tried {candidates} on PATH); set PULUMI_PYTHON_CMD or the "
        "'virtualenv' runtime option in Pulumi.yaml"
    )
