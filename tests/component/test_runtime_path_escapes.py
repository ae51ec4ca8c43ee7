"""Hostile table: every attempt to reach outside the base directory is refused with 403.

Paths are sent byte-for-byte (http.client does no normalisation), so what reaches the server is
exactly the attack: raw and percent-encoded ``..``, double encoding, backslashes, NUL bytes,
symlinks pointing out of the base directory (direct, chained, relative, via /proc), and a
sibling directory whose name merely starts with the base directory's name. The race cases swap a
directory for a symlink to the outside while requests are in flight: the check and the open must be
one step (resolution beneath a directory descriptor), or some requests leak.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.component.test_runtime_support import RuntimeServer

SECRET = b"top secret outside the sandbox"

# Raw request-path suffixes, exactly as sent after /download/, /list/ or /exists/.
HOSTILE_PATHS = [
    "..%2Fsecret.txt",
    "../secret.txt",
    "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "../../../../../../../etc/passwd",
    "%2E%2E%2Fsecret.txt",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "..%2f..%2fsecret.txt",
    "..%252Fsecret.txt",
    "%252E%252E%252Fsecret.txt",
    "..%255c..%255csecret.txt",
    "..%5Csecret.txt",
    "%2E%2E%5C%2E%2E%5Csecret.txt",
    "secret.txt%00.png",
    "%00",
    "ok%00/../../secret.txt",
    "secret.txt%2500",
    "tab%09name",
    "line%0Abreak",
    "link_out/secret.txt",
    "link_out%2Fsecret.txt",
    "link_out",
    "link_etc/passwd",
    "link_etc%2F..%2F..%2Fetc%2Fshadow",
    "link_file",
    "link_secret",
    "link_abs_parent/secret.txt",
    "nested/up/secret.txt",
    "nested%2Fup%2Fsecret.txt",
    "chain1/passwd",
    "dotdot_link/secret.txt",
    "proc_root/etc/passwd",
    "..%2Fapp-evil%2Fsecret",
    "../app-evil/secret",
    "sub/../../secret.txt",
    "sub%2F..%2F..%2Fsecret.txt",
    "sub/%2E%2E/%2E%2E/secret.txt",
    "nested/deeper/../../../secret.txt",
    "./../secret.txt",
    ".%2F..%2Fsecret.txt",
    "..",
    "%2E%2E",
    "%2F..%2Fsecret.txt",
    "%2F%2F..%2F..%2Fetc%2Fpasswd",
    "..%2F" * 40 + "etc%2Fpasswd",
]

# Destination filenames for POST /upload, sent verbatim in the part's Content-Disposition.
HOSTILE_UPLOAD_NAMES = [
    b"../secret.txt",
    b"../pwned.txt",
    b"../../../../tmp/pwned.txt",
    b"sub/../../pwned.txt",
    b"link_out/pwned.txt",
    b"link_etc/pwned",
    b"link_secret",
    b"link_abs_parent/pwned.txt",
    b"nested/up/pwned.txt",
    b"chain1/pwned",
    b"dotdot_link/pwned.txt",
    b"../app-evil/pwned.txt",
    b"..%2Fpwned.txt",
    b"..\\pwned.txt",
    b"pwned.txt\x00.png",
    b"%2E%2E/pwned.txt",
    b"link_out/new/dir/pwned.txt",
    # IE-style full client paths: python-multipart shortens them to their last component, which
    # would silently write pwned.txt; the backslash rule must refuse them like any other.
    b"C:\\fakepath\\pwned.txt",
    b"c:\\pwned.txt",
    b"\\\\server\\share\\pwned.txt",
]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """A runtime whose base dir is full of traps, next to a secret it must never reveal."""
    root = tmp_path_factory.mktemp("escapes")
    base = root / "app"
    (base / "sub").mkdir(parents=True)
    (base / "nested" / "deeper").mkdir(parents=True)
    (root / "secret.txt").write_bytes(SECRET)
    (root / "app-evil").mkdir()
    (root / "app-evil" / "secret").write_bytes(SECRET)
    os.symlink("..", base / "link_out")
    os.symlink("/etc", base / "link_etc")
    os.symlink("/etc/passwd", base / "link_file")
    os.symlink("../secret.txt", base / "link_secret")
    os.symlink(str(root), base / "link_abs_parent")
    os.symlink("../..", base / "nested" / "up")
    os.symlink("chain2", base / "chain1")
    os.symlink("/etc", base / "chain2")
    os.symlink("..", base / "dotdot_link")
    os.symlink("/proc/self/root", base / "proc_root")
    with RuntimeServer(base) as server:
        yield server


@pytest.mark.parametrize("endpoint", ["download", "list", "exists"])
@pytest.mark.parametrize("raw_path", HOSTILE_PATHS)
def test_hostile_path_is_refused(sandbox: RuntimeServer, endpoint: str, raw_path: str) -> None:
    status, body = sandbox.request("GET", f"/{endpoint}/{raw_path}")
    assert status == 403, f"{endpoint}/{raw_path} -> {status} {body[:200]!r}"
    assert json.loads(body) == {"message": "Access denied"}
    assert SECRET not in body and b"root:" not in body


def _multipart(filename: bytes, content: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = b"hostile-boundary"
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filename
            + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--" + boundary + b"--\r\n")
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}


@pytest.mark.parametrize("filename", HOSTILE_UPLOAD_NAMES)
def test_hostile_upload_destination_is_refused(sandbox: RuntimeServer, filename: bytes) -> None:
    body, headers = _multipart(filename, b"pwned")
    status, reply = sandbox.request("POST", "/upload", body, headers)
    assert status == 403, f"{filename!r} -> {status} {reply[:200]!r}"
    assert json.loads(reply) == {"message": "Access denied"}
    root = sandbox.base_dir.parent
    assert (root / "secret.txt").read_bytes() == SECRET
    assert not list(root.glob("**/pwned*")), "an upload escaped the base directory"
    assert not Path("/tmp/pwned.txt").exists() and not Path("/etc/pwned").exists()


def test_table_sizes_meet_the_brief() -> None:
    assert len(HOSTILE_PATHS) + len(HOSTILE_UPLOAD_NAMES) >= 40
    assert len(set(HOSTILE_PATHS)) == len(HOSTILE_PATHS)


@pytest.mark.parametrize("raw_path", ["%2Fetc%2Fpasswd", "/etc/passwd", "%2F%2Fetc%2Fpasswd"])
def test_absolute_paths_are_mapped_inside_base(sandbox: RuntimeServer, raw_path: str) -> None:
    """Per the contract an absolute path means <base>/<path>: never the host file."""
    decoy = sandbox.base_dir / "etc" / "passwd"
    decoy.parent.mkdir(exist_ok=True)
    decoy.write_bytes(b"decoy inside base")
    status, body = sandbox.request("GET", f"/download/{raw_path}")
    assert (status, body) == (200, b"decoy inside base")


@pytest.mark.parametrize("raw_path", ["%C0%AE%C0%AE%2Fsecret.txt", "..%3B%2Fsecret.txt", "%EF%BC%8E%EF%BC%8E%EF%BC%8Fsecret.txt"])
def test_lookalike_dots_stay_inside_base(sandbox: RuntimeServer, raw_path: str) -> None:
    """Overlong UTF-8, '..;' and fullwidth dots are ordinary names inside the base dir."""
    status, body = sandbox.request("GET", f"/download/{raw_path}")
    assert status == 404 and SECRET not in body


def test_list_does_not_describe_symlink_targets_outside_base(sandbox: RuntimeServer) -> None:
    status, body = sandbox.request("GET", "/list/")
    assert status == 200
    entries = {entry["name"]: entry for entry in json.loads(body)}
    # Outside targets are described as the links themselves: size = length of the link text.
    assert entries["link_secret"]["size"] == len("../secret.txt") != len(SECRET)
    assert entries["link_file"]["size"] == len("/etc/passwd") != os.path.getsize("/etc/passwd")
    assert entries["link_etc"]["type"] == "file"
    assert entries["link_etc"]["mod_time"] == os.lstat(sandbox.base_dir / "link_etc").st_mtime
    # A link that stays inside is still described by its target, as upstream does.
    (sandbox.base_dir / "sub" / "seven.txt").write_bytes(b"7777777")
    os.symlink("sub/seven.txt", sandbox.base_dir / "link_inside")
    status, body = sandbox.request("GET", "/list/")
    inside = {entry["name"]: entry for entry in json.loads(body)}["link_inside"]
    assert (inside["size"], inside["type"]) == (7, "file")


# --- races: a directory swapped for a symlink to the outside between check and open -----------

RACE_SECONDS = 3.0
INSIDE = b"harmless inside content"


def _exchanger() -> Callable[[Path, Path], None]:
    """renameat2(RENAME_EXCHANGE) through libc, or skip the test where it is missing."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        pytest.skip("libc has no renameat2 (glibc 2.28 or later needed to swap entries atomically)")
    at_fdcwd, rename_exchange = -100, 2

    def exchange(first: Path, second: Path) -> None:
        if libc.renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))

    return exchange


@pytest.fixture()
def swapping(tmp_path: Path) -> Iterator[RuntimeServer]:
    """A runtime whose ``swap`` entry flips between a real directory and a symlink to the outside."""
    root = tmp_path
    base = root / "app"
    (base / "swap").mkdir(parents=True)
    (base / "swap" / "f").write_bytes(INSIDE)
    outside = root / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(SECRET)
    (outside / "outside-only-name").write_bytes(SECRET)
    os.symlink(str(outside), base / "swap_link")
    stop = threading.Event()
    exchange = _exchanger()

    def flip() -> None:
        # An atomic exchange, so ``swap`` always exists (an upload must not find it missing and
        # create a real directory in its place).
        while not stop.is_set():
            exchange(base / "swap", base / "swap_link")

    with RuntimeServer(base) as server:
        flipper = threading.Thread(target=flip)
        flipper.start()
        try:
            yield server
        finally:
            stop.set()
            flipper.join()


def _hammer(attempt: Callable[[int], tuple[int, bool]]) -> tuple[int, int, dict[int, int]]:
    """Call ``attempt`` (returning the status and whether it leaked) from 8 threads for
    RACE_SECONDS; return (attempts, leaks, count per status)."""
    deadline = time.monotonic() + RACE_SECONDS

    def worker(offset: int) -> tuple[int, int, dict[int, int]]:
        tries = leaks = 0
        statuses: dict[int, int] = {}
        while time.monotonic() < deadline:
            status, leaked = attempt(offset * 1_000_000 + tries)
            statuses[status] = statuses.get(status, 0) + 1
            leaks += leaked
            tries += 1
        return tries, leaks, statuses

    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(worker, range(8)))
    statuses: dict[int, int] = {}
    for _, _, per_worker in counts:
        for status, count in per_worker.items():
            statuses[status] = statuses.get(status, 0) + count
    return sum(c[0] for c in counts), sum(c[1] for c in counts), statuses


def test_race_download_never_reads_outside(swapping: RuntimeServer) -> None:
    def attempt(_: int) -> tuple[int, bool]:
        status, body = swapping.request("GET", "/download/swap/f")
        return status, SECRET in body

    tries, leaks, statuses = _hammer(attempt)
    print(f"download race: {tries} attempts, {leaks} leaks, statuses {statuses}")
    assert tries > 200 and leaks == 0, f"{leaks} of {tries} downloads read the file outside the base dir ({statuses})"
    assert set(statuses) <= {200, 403, 404}, statuses


def test_race_list_never_lists_outside(swapping: RuntimeServer) -> None:
    def attempt(_: int) -> tuple[int, bool]:
        status, body = swapping.request("GET", "/list/swap")
        return status, b"outside-only-name" in body

    tries, leaks, statuses = _hammer(attempt)
    print(f"list race: {tries} attempts, {leaks} leaks, statuses {statuses}")
    assert tries > 200 and leaks == 0, f"{leaks} of {tries} listings showed the directory outside the base dir ({statuses})"
    assert set(statuses) <= {200, 403, 404}, statuses


def test_race_exists_never_sees_outside(swapping: RuntimeServer) -> None:
    def attempt(_: int) -> tuple[int, bool]:
        status, body = swapping.request("GET", "/exists/swap/outside-only-name")
        return status, status == 200 and json.loads(body)["exists"] is True

    tries, leaks, statuses = _hammer(attempt)
    print(f"exists race: {tries} attempts, {leaks} leaks, statuses {statuses}")
    assert tries > 200 and leaks == 0, f"{leaks} of {tries} exists checks saw a file outside the base dir ({statuses})"
    assert set(statuses) <= {200, 403}, statuses


def test_race_upload_never_writes_outside(swapping: RuntimeServer) -> None:
    def attempt(index: int) -> tuple[int, bool]:
        body, headers = _multipart(f"swap/pwned-{index}.txt".encode(), b"pwned")
        status, _ = swapping.request("POST", "/upload", body, headers)
        return status, False

    tries, _, statuses = _hammer(attempt)
    outside = swapping.base_dir.parent / "outside"
    escaped = [p.name for p in outside.iterdir() if p.name.startswith(("pwned", ".pwned"))]
    print(f"upload race: {tries} attempts, {len(escaped)} outside, statuses {statuses}")
    assert tries > 100 and not escaped, f"{len(escaped)} of {tries} uploads landed outside the base dir ({statuses})"
    assert set(statuses) <= {200, 403, 500}, statuses
