"""Where the driver finds the project, its state and its outputs, and the environment every
Pulumi command runs with (local file backend, no update checks, no plugin downloads)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from automation.errors import OverrideError, StackFileMissing
from agent_sandbox_pulumi.sandbox_iac import constants, versions
from agent_sandbox_pulumi.sandbox_iac.config import StackConfig, parse_stack_config

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CACHE_DIR = "/var/cache/agent-sandbox-iac"
PULUMI_VERSION = versions.PYTHON_PACKAGE_PINS["pulumi"]


@dataclass(frozen=True)
class ProjectPaths:
    """Directories of one project checkout."""

    root: Path
    """The project directory (holds Pulumi.yaml and __main__.py)."""
    out_dir: Path
    """Reports and plots go to ``<out_dir>/<stack>/``."""

    @property
    def state_dir(self) -> Path:
        """Local file backend of Pulumi (gitignored)."""
        return self.root / ".pulumi-state"

    @property
    def driver_state_dir(self) -> Path:
        """What the driver remembers between commands (e.g. clusters it created)."""
        return self.state_dir / "driver"

    @property
    def policy_pack_dir(self) -> Path:
        return self.root / "policy"

    @property
    def program(self) -> Path:
        return self.root / "__main__.py"

    def stack_file(self, stack: str) -> Path:
        return self.root / f"Pulumi.{stack}.yaml"

    def stack_out_dir(self, stack: str) -> Path:
        path = self.out_dir / stack
        path.mkdir(parents=True, exist_ok=True)
        return path


def default_paths(out_dir: Optional[str] = None) -> ProjectPaths:
    """Paths for this checkout; ``out_dir`` defaults to ``$OUT_DIR`` or ``<project>/out``."""
    out = Path(out_dir or os.environ.get("OUT_DIR") or PROJECT_DIR / "out")
    if not out.is_absolute():
        out = PROJECT_DIR / out
    return ProjectPaths(root=PROJECT_DIR, out_dir=out)


def cache_dir() -> Path:
    return Path(os.environ.get("CACHE_DIR") or DEFAULT_CACHE_DIR)


def toolchain_bin_dirs() -> list[Path]:
    """Directories of the offline toolchain (``make toolchain-pulumi`` / cluster toolchain)
    that are searched after ``PATH``; sourcing ``e2e/toolchain/env.sh`` is therefore optional."""
    cache = cache_dir()
    return [cache / "bin", cache / "pulumi" / PULUMI_VERSION / "bin"]


def tool_search_path(environ: Optional[Mapping[str, str]] = None) -> str:
    """``PATH`` followed by the toolchain directories."""
    environ = os.environ if environ is None else environ
    parts = [p for p in environ.get("PATH", "").split(os.pathsep) if p]
    parts += [str(d) for d in toolchain_bin_dirs() if str(d) not in parts]
    return os.pathsep.join(parts)


def find_tool(name: str) -> Optional[str]:
    """Absolute path of a tool on PATH or in the toolchain cache, else None."""
    return shutil.which(name, path=tool_search_path())


def pulumi_env(paths: ProjectPaths, environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Variables every Pulumi command of the driver runs with.

    The passphrase protects secrets in the local state (the router token); it defaults to the
    empty string so a fresh clone works without setup. Set ``PULUMI_CONFIG_PASSPHRASE`` to
    your own value for anything that is not throw-away."""
    environ = os.environ if environ is None else environ
    env = {
        "PULUMI_BACKEND_URL": environ.get("PULUMI_BACKEND_URL") or f"file://{paths.state_dir}",
        "PULUMI_CONFIG_PASSPHRASE": environ.get("PULUMI_CONFIG_PASSPHRASE", ""),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        # Offline the engine must not try to download a plugin (it would hang, then fail unclearly);
        # online it fetches what the pinned packages ask for.
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "false" if environ.get(
            "AGENT_SANDBOX_OFFLINE", "0").strip().lower() in ("", "0", "false", "no") else "true",
        "PATH": tool_search_path(environ),
        # Dynamic providers (components/image_loader.py) run in a provider process the engine starts
        # from its work dir; their pickled classes import project modules, so the project goes first.
        # Interpreter of plugin processes (dynamic providers, policy packs without a virtualenv):
        # the driver's own, which has pulumi and the project's dependencies.
        "PULUMI_PYTHON_CMD": environ.get("PULUMI_PYTHON_CMD") or sys.executable,
        "PYTHONPATH": os.pathsep.join([str(paths.root), *[p for p in environ.get("PYTHONPATH", "").split(os.pathsep)
                                                          if p and p != str(paths.root)]]),
    }
    home = environ.get("PULUMI_HOME")
    cached_home = cache_dir() / "pulumi" / "home"
    if home:
        env["PULUMI_HOME"] = home
    elif cached_home.is_dir():
        env["PULUMI_HOME"] = str(cached_home)
    return env


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


def read_stack_file(paths: ProjectPaths, stack: str, overrides: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """Raw project config (keys without the ``agent-sandbox:`` prefix) from ``Pulumi.<stack>.yaml``,
    with ``overrides`` (``--config`` values) on top.

    Encrypted values (``{secure: ...}``) are left out: this view serves decisions taken before
    Pulumi runs (prerequisites, cluster creation), none of which needs a secret."""
    path = paths.stack_file(stack)
    if not path.is_file():
        raise StackFileMissing(
            f"no stack file {path}: known stacks are "
            + ", ".join(sorted(p.name[len("Pulumi."):-len(".yaml")] for p in paths.root.glob("Pulumi.*.yaml")))
            + f" (create one with: pulumi stack init {stack}, then pulumi config set ...)"
        )
    data = yaml.safe_load(path.read_text()) or {}
    prefix = f"{constants.PROJECT_NAME}:"
    raw: dict[str, Any] = {}
    for key, value in (data.get("config") or {}).items():
        if not key.startswith(prefix) or (isinstance(value, dict) and "secure" in value):
            continue
        raw[key[len(prefix):]] = _as_config_value(value)
    raw.update(overrides or {})
    return raw


def _as_config_value(value: Any) -> Any:
    """A YAML scalar as the engine would pass it (strings; booleans as 'true'/'false')."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, dict, list)):
        return value
    return str(value)


def stack_config(paths: ProjectPaths, stack: str, overrides: Optional[Mapping[str, str]] = None) -> StackConfig:
    """The validated config of ``stack`` from its stack file and overrides (raises ConfigError with fixes)."""
    return parse_stack_config(read_stack_file(paths, stack, overrides), stack)


def kube_args(config: StackConfig) -> list[str]:
    """``kubectl`` flags selecting the stack's cluster (``--kubeconfig``/``--context``)."""
    args: list[str] = []
    if config.kubeconfig:
        args += ["--kubeconfig", str(Path(config.kubeconfig).expanduser())]
    if config.kube_context:
        args += ["--context", config.kube_context]
    return args
