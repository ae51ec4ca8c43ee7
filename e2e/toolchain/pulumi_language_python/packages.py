"""Find the provider plugins a Python environment asks for (``pulumi-plugin.json`` of installed packages)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Mapping, Optional

# Runs inside the program's interpreter: each installed distribution that ships a
# pulumi-plugin.json with "resource": true is a provider package the program may use.
_DISCOVERY_SCRIPT = r"""
import json, importlib.metadata as md
found = {}
for dist in md.distributions():
    for f in dist.files or ():
        if f.name not in ("pulumi-plugin.json", "pulumiplugin.json"):
            continue
        try:
            data = json.loads(f.read_text())
        except Exception:
            continue
        if not data.get("resource"):
            continue
        top = f.parts[0] if f.parts else dist.metadata["Name"]
        name = data.get("name") or top.replace("pulumi_", "", 1).replace("_", "-")
        data.setdefault("name", name)
        data.setdefault("version", dist.version)
        found[(name, data.get("version", ""))] = data
print(json.dumps(sorted(found.values(), key=lambda d: d["name"])))
"""


@dataclass(frozen=True)
class PluginPackage:
    """One provider package: plugin name and version, optional download server and parameterization."""

    name: str
    version: str
    server: str = ""
    parameterization: Optional[Mapping[str, str]] = None


def discover_plugin_packages(python: str, env: Mapping[str, str], cwd: str) -> list[PluginPackage]:
    """List the resource plugins the packages installed for ``python`` request."""
    proc = subprocess.run(
        [python, "-c", _DISCOVERY_SCRIPT], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"listing pulumi-plugin.json files with {python} failed: {proc.stderr.strip()}")
    result = []
    for item in json.loads(proc.stdout):
        version = str(item.get("version", ""))
        if version and not version.startswith("v"):
            version = "v" + version
        result.append(
            PluginPackage(
                name=str(item["name"]),
                version=version,
                server=str(item.get("server", "")),
                parameterization=item.get("parameterization"),
            )
        )
    return result
