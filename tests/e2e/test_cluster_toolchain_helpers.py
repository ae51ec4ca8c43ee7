"""Fast checks of the cluster toolchain's Python helpers (no toolchain or root needed).

- e2e/toolchain/cluster/image_archive.py writes the Docker archive that `ctr images import` reads.
- e2e/toolchain/cluster/patch_gvisor.py patches gVisor's OOM-score handling, once, or fails loudly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

HELPERS = Path(__file__).resolve().parents[2] / "e2e" / "toolchain" / "cluster"


def load(name: str) -> ModuleType:
    """Import a helper script by path (they are scripts, not an installed package)."""
    spec = importlib.util.spec_from_file_location(f"cluster_helper_{name}", HELPERS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is created
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


image_archive = load("image_archive")
patch_gvisor = load("patch_gvisor")


def build(tmp_path: Path, payload: bytes = b"#!/bin/true\n") -> bytes:
    binary = tmp_path / "tool"
    binary.write_bytes(payload)
    spec = image_archive.LayerSpec(files=[(str(binary), "/usr/bin/tool", 0o755)],
                                   symlinks=[("/bin/alias", "../usr/bin/tool")], dirs=[("/tmp", 0o1777)])
    return image_archive.build_archive("localhost/tool:1", spec, ["/usr/bin/tool"], [], "65532:65532",
                                       ["PATH=/usr/bin"])


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_archive_has_docker_save_layout_with_matching_digests(tmp_path: Path) -> None:
    files = members(build(tmp_path))
    manifest = json.loads(files["manifest.json"])
    assert manifest[0]["RepoTags"] == ["localhost/tool:1"]
    config_bytes = files[manifest[0]["Config"]]
    assert manifest[0]["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer = files[manifest[0]["Layers"][0]]
    config = json.loads(config_bytes)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/usr/bin/tool"]
    assert config["config"]["User"] == "65532:65532"


def test_layer_holds_files_symlinks_and_dirs_with_their_modes(tmp_path: Path) -> None:
    files = members(build(tmp_path, b"payload"))
    manifest = json.loads(files["manifest.json"])
    with tarfile.open(fileobj=io.BytesIO(files[manifest[0]["Layers"][0]])) as layer:
        entries = {m.name.rstrip("/"): m for m in layer.getmembers()}
        assert layer.extractfile(entries["usr/bin/tool"]).read() == b"payload"
    assert entries["usr/bin/tool"].mode == 0o755
    assert entries["usr"].isdir() and entries["usr/bin"].isdir()
    assert entries["bin/alias"].issym() and entries["bin/alias"].linkname == "../usr/bin/tool"
    assert entries["tmp"].mode == 0o1777


def test_same_inputs_give_the_same_image_and_different_inputs_differ(tmp_path: Path) -> None:
    first, again = build(tmp_path, b"a"), build(tmp_path, b"a")
    assert first == again
    assert build(tmp_path, b"b") != first


def test_cli_rejects_a_missing_source_naming_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(HELPERS / "image_archive.py"), "--tag", "x:1", "--out", str(tmp_path / "x.tar"),
         "--file", f"{tmp_path / 'absent'}:/absent"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "absent" in result.stderr and "does not exist" in result.stderr


def write_unpatched(root: Path) -> None:
    for relative, old, _new in patch_gvisor.PATCHES:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if old:  # an empty "old" is a file the patch adds
            path.write_text(f"// before\n{old}// after\n")


def test_patch_applies_once_and_is_idempotent(tmp_path: Path) -> None:
    write_unpatched(tmp_path)
    patch_gvisor.apply(tmp_path)
    patched = {rel: (tmp_path / rel).read_text() for rel, _old, _new in patch_gvisor.PATCHES}
    for relative, _old, new in patch_gvisor.PATCHES:
        assert new in patched[relative]
    patch_gvisor.apply(tmp_path)
    assert patched == {rel: (tmp_path / rel).read_text() for rel, _old, _new in patch_gvisor.PATCHES}


def test_patch_fails_loudly_when_upstream_code_changed(tmp_path: Path) -> None:
    write_unpatched(tmp_path)
    first = tmp_path / patch_gvisor.PATCHES[0][0]
    assert patch_gvisor.PATCHES[0][1], "the first patch edits upstream code"
    first.write_text("// code that moved on\n")
    with pytest.raises(SystemExit, match="update e2e/toolchain/cluster/patch_gvisor.py"):
        patch_gvisor.apply(tmp_path)
