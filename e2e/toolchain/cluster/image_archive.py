"""Build a single-layer, FROM-scratch container image as a Docker archive, without any daemon.

The archive (manifest.json + config + one layer tar) is what `docker save` writes and what
`ctr -n k8s.io images import` reads, so the e2e cluster gets its images without a pull or a
Docker engine. Every timestamp and owner is fixed, so the same inputs give the same image ID.

Usage:
  image_archive.py --tag localhost/x:1 --out x.tar --file /path/bin:/bin/x \
      [--symlink /bin/sh:busybox] [--dir /tmp:1777] [--entrypoint '["/bin/x"]'] \
      [--cmd '[]'] [--user 65532:65532] [--env PATH=/bin]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
from dataclasses import dataclass, field

FIXED_MTIME = 0


@dataclass
class LayerSpec:
    """What goes into the image's only layer."""

    files: list[tuple[str, str, int]] = field(default_factory=list)  # (source, dest, mode)
    symlinks: list[tuple[str, str]] = field(default_factory=list)  # (dest, target)
    dirs: list[tuple[str, int]] = field(default_factory=list)  # (dest, mode)


def _parent_dirs(path: str) -> list[str]:
    """All ancestors of an absolute in-image path, outermost first, without the root."""
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _dir_info(name: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name + "/")
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = FIXED_MTIME
    return info


def build_layer(spec: LayerSpec) -> bytes:
    """Return the uncompressed layer tar for spec, with deterministic metadata."""
    buffer = io.BytesIO()
    written_dirs: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def ensure_dirs(dest: str) -> None:
            for parent in _parent_dirs(dest):
                if parent not in written_dirs:
                    tar.addfile(_dir_info(parent, 0o755))
                    written_dirs.add(parent)

        for dest, mode in sorted(spec.dirs):
            ensure_dirs(dest)
            name = dest.strip("/")
            if name not in written_dirs:
                tar.addfile(_dir_info(name, mode))
                written_dirs.add(name)
        for source, dest, mode in sorted(spec.files, key=lambda f: f[1]):
            ensure_dirs(dest)
            with open(source, "rb") as handle:
                data = handle.read()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size = len(data)
            info.mode = mode
            info.mtime = FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
        for dest, target in sorted(spec.symlinks):
            ensure_dirs(dest)
            info = tarfile.TarInfo(dest.strip("/"))
            info.type = tarfile.SYMTYPE
            info.linkname = target
            info.mode = 0o777
            info.mtime = FIXED_MTIME
            tar.addfile(info)
    return buffer.getvalue()


def build_archive(
    tag: str,
    spec: LayerSpec,
    entrypoint: list[str],
    cmd: list[str],
    user: str,
    env: list[str],
) -> bytes:
    """Return a Docker archive (docker-save format) holding one image tagged `tag`."""
    layer = build_layer(spec)
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": entrypoint or None,
            "Cmd": cmd or None,
            "User": user,
            "Env": env,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "image_archive.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    manifest = [
        {
            "Config": f"{config_digest}.json",
            "RepoTags": [tag],
            "Layers": [f"{layer_digest}/layer.tar"],
        }
    ]
    members = [
        (f"{layer_digest}/layer.tar", layer),
        (f"{config_digest}.json", config_bytes),
        ("manifest.json", json.dumps(manifest).encode()),
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_dir_info(layer_digest, 0o755))
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _split(value: str, flag: str, parts: int) -> list[str]:
    pieces = value.split(":", parts - 1)
    if len(pieces) < parts - 1:
        sys.exit(f"{flag}: bad value {value!r}; expected {'SRC:DEST[:MODE]' if parts == 3 else 'A:B'}")
    return pieces


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and write the archive."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--file", action="append", default=[], help="SRC:DEST[:OCTAL_MODE]")
    parser.add_argument("--symlink", action="append", default=[], help="DEST:TARGET")
    parser.add_argument("--dir", action="append", default=[], help="DEST:OCTAL_MODE")
    parser.add_argument("--entrypoint", default="[]", help="JSON list")
    parser.add_argument("--cmd", default="[]", help="JSON list")
    parser.add_argument("--user", default="0:0")
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args(argv)

    spec = LayerSpec()
    for value in args.file:
        pieces = _split(value, "--file", 3)
        mode = int(pieces[2], 8) if len(pieces) == 3 else 0o755
        if not os.path.isfile(pieces[0]):
            sys.exit(f"--file: source {pieces[0]!r} does not exist; build it first")
        spec.files.append((pieces[0], pieces[1], mode))
    for value in args.symlink:
        dest, target = _split(value, "--symlink", 2)
        spec.symlinks.append((dest, target))
    for value in args.dir:
        dest, mode = _split(value, "--dir", 2)
        spec.dirs.append((dest, int(mode, 8)))
    env = args.env or ["PATH=/usr/local/bin:/usr/bin:/bin"]
    archive = build_archive(
        args.tag, spec, json.loads(args.entrypoint), json.loads(args.cmd), args.user, env
    )
    temporary = args.out + ".tmp"
    with open(temporary, "wb") as handle:
        handle.write(archive)
    os.replace(temporary, args.out)
    print(f"{args.tag} -> {args.out} ({len(archive) // 1024} KiB)")


if __name__ == "__main__":
    main()
