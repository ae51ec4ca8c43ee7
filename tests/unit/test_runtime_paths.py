"""resolve_confined: what stays inside the base directory and what is refused; open_beneath and
make_dirs_beneath: opening that answer without following any symlink (openat2 and the walk)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_runtime.beneath import make_dirs_beneath, open_beneath, openat2_available
from sandbox_runtime.paths import PATH_MAX, PathRefused, PathTooLong, is_inside, resolve_confined


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


def test_overlong_paths_are_refused_as_too_long(base: str) -> None:
    with pytest.raises(PathTooLong) as refused:
        resolve_confined(base, "a/" * (PATH_MAX // 2))
    assert refused.value.status == 400 and "too long" in refused.value.message


# --- open_beneath / make_dirs_beneath: both implementations -----------------------------------

@pytest.fixture(params=["openat2", "walk"])
def walk(request: pytest.FixtureRequest, base: str) -> bool:
    if request.param == "openat2":
        descriptor = os.open(base, os.O_PATH | os.O_DIRECTORY)
        try:
            if not openat2_available(descriptor):
                pytest.skip("openat2 is not available on this kernel")
        finally:
            os.close(descriptor)
    return request.param == "walk"


@pytest.fixture()
def base_fd(base: str) -> Iterator[int]:
    (Path(base) / "dir" / "file.txt").write_bytes(b"inside")
    descriptor = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield descriptor
    os.close(descriptor)


def test_open_beneath_opens_symlink_free_paths(base_fd: int, walk: bool) -> None:
    descriptor = open_beneath(base_fd, "dir/file.txt", os.O_RDONLY, walk=walk)
    try:
        assert os.read(descriptor, 100) == b"inside"
    finally:
        os.close(descriptor)
    os.close(open_beneath(base_fd, "", os.O_RDONLY | os.O_DIRECTORY, walk=walk))


@pytest.mark.parametrize("relative", ["inner_link/file.txt", "inner_link", "outer_link/app/dir/file.txt", "outer_link"])
def test_open_beneath_follows_no_symlink_even_one_that_stays_inside(base_fd: int, walk: bool, relative: str) -> None:
    with pytest.raises(OSError) as refused:
        open_beneath(base_fd, relative, os.O_RDONLY, walk=walk)
    assert refused.value.errno == errno.ELOOP


def test_open_beneath_never_climbs_out(base_fd: int, walk: bool) -> None:
    with pytest.raises(OSError) as refused:
        open_beneath(base_fd, "../app-sibling", os.O_RDONLY, walk=walk)
    assert refused.value.errno == errno.EXDEV


def test_make_dirs_beneath_creates_any_depth_and_refuses_symlinks(base_fd: int, base: str) -> None:
    # 6000 bytes, beyond PATH_MAX: only one component is ever named. (Long names rather than
    # thousands of levels, which shutil.rmtree, and so pytest's tmp cleanup, cannot remove.)
    deep = "/".join(["d" * 200] * 30)
    os.close(make_dirs_beneath(base_fd, deep))
    descriptor = make_dirs_beneath(base_fd, "dir/new/sub")
    os.close(descriptor)
    assert os.path.isdir(os.path.join(base, "dir/new/sub"))
    for through_link in ("inner_link/new", "outer_link/escaped"):
        with pytest.raises(OSError) as refused:
            make_dirs_beneath(base_fd, through_link)
        assert refused.value.errno == errno.ELOOP
    assert not os.path.exists(os.path.join(base, "dir/new/../../../escaped"))
