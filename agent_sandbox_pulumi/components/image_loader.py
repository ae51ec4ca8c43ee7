"""A Pulumi dynamic resource that puts a local image onto the cluster's nodes.

Why not pulumi-command's ``local.Command``: its provider plugin cannot be built offline (the Go
module proxy does not serve its source), while dynamic resources only need the Python provider
that ships with the Pulumi engine. The resource runs a shell command with ``IMAGE`` set, again
whenever the image or its trigger (the image digest) changes; deleting it leaves the image on
the node (``make down`` lists what was loaded)."""

from __future__ import annotations

import os
import subprocess
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

LOAD_TIMEOUT_SECONDS = 900


class ImageLoadError(RuntimeError):
    """Loading an image onto the nodes failed; the message has the command and its output."""


def run_load(command: str, image: str) -> str:
    """Run ``command`` with ``IMAGE=image``; returns its output or raises ImageLoadError."""
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], env={**os.environ, "IMAGE": image},
                            capture_output=True, text=True, timeout=LOAD_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise ImageLoadError(
            f"loading image {image} onto the nodes failed (exit {result.returncode}) running `{command}`:\n"
            f"{result.stderr.strip()[-2000:]}\nfix: check that the image exists locally (`make images`) and "
            "that the tool in the command can reach the cluster, or set agent-sandbox:imageLoadStrategy"
        )
    return result.stdout.strip()[-500:]


class ImageLoadProvider(ResourceProvider):
    """create/update run the load command; delete leaves the node's image store alone."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        run_load(props["command"], props["image"])
        return CreateResult(id_=props["image"], outs=dict(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [key for key in ("image", "command", "trigger") if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        run_load(news["command"], news["image"])
        return UpdateResult(outs=dict(news))


class ImageLoad(Resource):
    """One image made available to the nodes by a load command.

    Outputs: image (the ref loaded), command, trigger."""

    image: pulumi.Output[str]

    def __init__(self, name: str, image: pulumi.Input[str], command: str, trigger: pulumi.Input[str],
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(ImageLoadProvider(), name, {"image": image, "command": command, "trigger": trigger}, opts)
