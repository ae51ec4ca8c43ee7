"""The environment every Pulumi command of the driver runs with: the local file backend, the
passphrase of its secrets, no update checks, plugin downloads only online, the toolchain on
``PATH``, and the project importable by the engine's plugin processes."""

from __future__ import annotations

import os
import sys
from typing import Mapping, Optional

from automation.paths import ProjectPaths, cache_dir, tool_search_path


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
