"""resolve_confined: what stays inside the base directory and what is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox_runtime.paths import PathRefused, is_inside, resolve_confined


@pytest.fixture()
def base(tmp_path: Path) -> str:
    root = tmp_path / "app"
    (root / "dir").mkdir(parents=True)
    os.symlink("dir", root / "inner_link")
    os.symlink(str(tmp_path), root / "outer_link")
    (tmp_path / "app-sibling").mkdir()
    return os.path.realpath(root)


@pytest.mark.parametrize("requested, relative", [
    ("file.txt", "file.txt"), ("dir/file.txt", "dir/file.txt"), ("/etc/passwd", "etc/passwd"),
    ("//x", "x"), ("dir/../file.txt", "file.txt"), ("", ""), (".", ""), ("/", ""),
    ("inner_link/f", "dir/f"), ("outer_link/app/dir", "dir"), ("not/yet/created.txt", "not/yet/created.txt"), ("..;", "..;"),
])
def test_paths_inside_resolve_under_base(base: str, requested: str, relative: str) -> None:
    assert resolve_confined(base, requested) == os.path.join(base, relative).rstrip("/")


@pytest.mark.parametrize("requested", [
    "..", "../x", "dir/../../x", "outer_link", "outer_link/app-sibling/x", "../app-sibling/x",
    "a\x00b", "tab\tname", "a\\b", "..%2Fx", "%2e%2e", "x%00", "x%25", "x%5c",
])
def test_escapes_and_malformed_paths_are_refused(base: str, requested: str) -> None:
    with pytest.raises(PathRefused):
        resolve_confined(base, requested)


def test_is_inside_is_not_a_string_prefix_check() -> None:
    assert is_inside("/srv/app", "/srv/app") and is_inside("/srv/app", "/srv/app/x")
    assert not is_inside("/srv/app", "/srv/app-evil") and not is_inside("/srv/app", "/srv")
