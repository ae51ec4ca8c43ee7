"""The repo stands on its own files: nothing outside docs/ reaches for the workspace's sibling
folder (the one beside the clone that once held the controller manifest). A clone anywhere else
would then fail at setup or lose its manifest."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# The relative path itself, and a path built from the repo root's parent (Python or shell).
SIBLING_REFERENCES = re.compile(rb"""\.\./shared\b|parent\s*/\s*["']shared["']""")


def project_files() -> list[str]:
    """Tracked files plus new ones not ignored (what the next commit can contain)."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot list the project's files")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO_ROOT, check=True, capture_output=True).stdout
    return sorted({name for name in listed.decode().split("\0") if name})


def test_nothing_outside_docs_references_the_sibling_shared_folder() -> None:
    offenders = []
    for name in project_files():
        path = REPO_ROOT / name
        if name.startswith("docs/") or not path.is_file():
            continue
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if SIBLING_REFERENCES.search(line):
                offenders.append(f"{name}:{number}: {line.decode(errors='replace').strip()[:120]}")
    assert not offenders, "files reference the workspace's sibling shared folder:\n" + "\n".join(offenders)
