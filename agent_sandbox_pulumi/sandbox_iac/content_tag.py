"""Content-derived image tags: the same build inputs always give the same tag, so a no-op
``up`` changes nothing and any change to the sources rolls the pods."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

# Generated or local-only files that do not change the image.
IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".wheels", "wheels", ".mypy_cache"}
IGNORED_SUFFIXES = {".pyc", ".pyo"}
TAG_LENGTH = 12


def content_tag(context_dir: Path, build_args: Mapping[str, str]) -> str:
    """Hex digest (12 chars) of every file under ``context_dir`` plus the build arguments."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(context_dir).rglob("*") if p.is_file()):
        relative = path.relative_to(context_dir)
        if IGNORED_PARTS & set(relative.parts) or path.suffix in IGNORED_SUFFIXES:
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    for key in sorted(build_args):
        digest.update(f"{key}={build_args[key]}\0".encode())
    return digest.hexdigest()[:TAG_LENGTH]
