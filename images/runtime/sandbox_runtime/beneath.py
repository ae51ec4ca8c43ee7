"""Opening paths beneath the base directory's descriptor without following any symlink.

paths.resolve_confined decides *which* path a request means (``realpath``, symlinks inside the base
followed) and refuses what resolves outside. Opening that answer by name would be check-then-open:
a command could swap a directory for a symlink in between and the open would follow it out of the
base directory. Everything here therefore opens relative to a descriptor of the base directory and
refuses to follow a symlink anywhere on the way, so the file opened is the one that was checked or
the request fails:

- with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` where the kernel has it (Linux 5.6+,
  called through libc's ``syscall`` since Python has no binding), in one system call;
- otherwise by walking the path one component at a time with ``openat(O_NOFOLLOW)``; the
  components come from ``realpath``, so none of them is ``..``.

A symlink met on the way raises OSError(ELOOP) in both cases.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import stat
import threading
from typing import Any

_SYS_OPENAT2 = 437  # the same number on every architecture (added in Linux 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
_DIRECTORY_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_lock = threading.Lock()
_openat2_works: bool | None = None  # decided by the first call, see openat2_available()


def openat2_available(directory_fd: int) -> bool:
    """Whether openat2 with RESOLVE_BENEATH works here (probed once per process)."""
    global _openat2_works
    with _lock:
        if _openat2_works is None:
            try:
                os.close(_openat2(directory_fd, ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
                _openat2_works = True
            except OSError:
                # ENOSYS (old kernel, or a seccomp filter / sandbox kernel without it), EPERM
                # from a filter, or no libc to call it through: walk instead.
                _openat2_works = False
        return _openat2_works


def open_beneath(base_fd: int, relative: str, flags: int, mode: int = 0o600, *, walk: bool | None = None) -> int:
    """Open ``relative`` (``""`` means the base itself) beneath ``base_fd``; return a descriptor.

    No symlink is followed on the way, including the last component. ``walk`` forces (True) or
    forbids (False) the component walk; by default openat2 is used where it works.
    """
    flags |= os.O_CLOEXEC | os.O_NOFOLLOW
    if walk is None:
        walk = not openat2_available(base_fd)
    if not walk:
        return _openat2(base_fd, relative or ".", flags, mode)
    parts = _components(relative)
    if not parts:
        return os.open(".", flags, mode, dir_fd=base_fd)
    parent = _walk(base_fd, parts[:-1], create=False)
    try:
        return _open_component(parent, parts[-1], flags, mode)
    finally:
        if parent != base_fd:
            os.close(parent)


def make_dirs_beneath(base_fd: int, relative: str) -> int:
    """Create the directory ``relative`` and its missing parents beneath ``base_fd`` (no symlink
    followed); return an O_PATH descriptor of it. Works at any depth: no path is ever longer
    than one component."""
    parts = _components(relative)
    if not parts:
        return os.dup(base_fd)
    directory = _walk(base_fd, parts, create=True)
    return os.dup(directory) if directory == base_fd else directory


def describe_error(error: OSError) -> str:
    """The reason without the path the OSError may carry (never show server paths to clients)."""
    return error.strerror or errno.errorcode.get(error.errno or 0, "error")


def _openat2(directory_fd: int, path: str, flags: int, mode: int = 0) -> int:
    # openat2 insists on mode 0 unless a file may be created (O_TMPFILE includes O_DIRECTORY's bit).
    creates = bool(flags & os.O_CREAT) or flags & os.O_TMPFILE == os.O_TMPFILE
    how = _OpenHow(flags=flags, mode=mode if creates else 0, resolve=_RESOLVE)
    encoded = os.fsencode(path)
    if b"\0" in encoded:
        raise OSError(errno.EINVAL, "embedded null byte")
    result = _libc_syscall()(_SYS_OPENAT2, ctypes.c_int(directory_fd), ctypes.c_char_p(encoded),
                             ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(result)


@functools.cache
def _libc_syscall() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        raise OSError(errno.ENOSYS, "libc syscall() is not available") from None
    function.restype = ctypes.c_long
    return function


def _components(relative: str) -> list[str]:
    parts = [part for part in relative.split("/") if part and part != "."]
    if ".." in parts:
        # resolve_confined never produces one; refuse rather than walk upwards.
        raise OSError(errno.EXDEV, "path leaves the base directory")
    return parts


def _walk(base_fd: int, parts: list[str], create: bool) -> int:
    """Descend through directories ``parts``; return the last one's descriptor (``base_fd`` for
    none). Intermediate descriptors are closed as the walk goes on."""
    current = base_fd
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=current)
                except FileExistsError:
                    pass
            following = _open_component(current, part, _DIRECTORY_FLAGS, 0)
            if current != base_fd:
                os.close(current)
            current = following
    except BaseException:
        if current != base_fd:
            os.close(current)
        raise
    return current


def _open_component(directory_fd: int, name: str, flags: int, mode: int) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=directory_fd)
    except NotADirectoryError:
        # O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR; report it as the symlink it is.
        if _is_symlink(directory_fd, name):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
        raise


def _is_symlink(directory_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=directory_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
