"""Where things are: the project checkout and what the driver keeps in it (the local Pulumi
backend, the driver's own state, the policy pack, the stack files, the reports), the offline
toolchain's cache, and the tools found on ``PATH`` or in that cache."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from agent_sandbox_pulumi.sandbox_iac import versions

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
