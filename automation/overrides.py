"""Config values given on the command line (``--config KEY=VALUE``) and those the last ``up``'s
set-up derived, each remembered per stack under the driver's state until ``down`` removes the
stack; the user's own win over the set-up's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

from automation.errors import OverrideError
from automation.paths import ProjectPaths
from agent_sandbox_pulumi.sandbox_iac import constants


def parse_overrides(items: Optional[list[str]]) -> dict[str, str]:
    """``["key=value", "agent-sandbox:key=value"]`` -> ``{"key": "value"}``."""
    overrides: dict[str, str] = {}
    prefix = f"{constants.PROJECT_NAME}:"
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OverrideError(f"--config {item!r} is not KEY=VALUE (e.g. --config kubeconfig=/path/to/kubeconfig)")
        overrides[key[len(prefix):] if key.startswith(prefix) else key] = value
    return overrides


def overrides_path(paths: ProjectPaths, stack: str) -> Path:
    """Per-stack ``--config`` values of earlier commands (kept until ``down`` removes the stack)."""
    return paths.driver_state_dir / f"{stack}-overrides.json"


def _read_values(path: Path) -> dict[str, str]:
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _write_values(path: Path, values: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(values), indent=2, sort_keys=True) + "\n")


def load_overrides(paths: ProjectPaths, stack: str) -> dict[str, str]:
    return _read_values(overrides_path(paths, stack))


def save_overrides(paths: ProjectPaths, stack: str, overrides: Mapping[str, str]) -> None:
    _write_values(overrides_path(paths, stack), overrides)


def setup_overrides_path(paths: ProjectPaths, stack: str) -> Path:
    """Config the last ``up``'s set-up derived (e.g. ``imageBuild=prebuilt`` with the CLI-built image
    refs), for the later ``preview``/``smoke``/``bench``/``down``; the user's ``--config`` wins."""
    return paths.driver_state_dir / f"{stack}-setup-overrides.json"


def load_setup_overrides(paths: ProjectPaths, stack: str) -> dict[str, str]:
    return _read_values(setup_overrides_path(paths, stack))


def save_setup_overrides(paths: ProjectPaths, stack: str, overrides: Mapping[str, str]) -> None:
    _write_values(setup_overrides_path(paths, stack), overrides)


def command_overrides(paths: ProjectPaths, stack: str, user: Mapping[str, str]) -> dict[str, str]:
    """What a command runs with: the last set-up's values with the ``user``'s on top."""
    return {**load_setup_overrides(paths, stack), **user}
