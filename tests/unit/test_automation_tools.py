"""Tool resolution order: PATH, then the cache, then a verified download, then a build."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from automation import tools
from automation.tools import Download, Tool, ToolError, resolve_tool

TOOL = Tool("demo", "v1", ("demo", "demo-helper"), ("build-demo",),
            {name: Download(f"https://example.invalid/{name}", f"https://example.invalid/{name}.sha256")
             for name in ("demo", "demo-helper")}, why="tests need it")


def _no_path(name: str):
    return None


def _fail_fetch(url: str, dest: Path) -> None:
    raise AssertionError(f"must not download {url}")


def _fail_build(command) -> int:
    raise AssertionError(f"must not build {command}")


def _exe(path: Path, content: bytes = b"#!/bin/sh\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(0o755)
    return path


def test_path_wins_over_everything(tmp_path: Path) -> None:
    _exe(tmp_path / "bin" / "demo"), _exe(tmp_path / "bin" / "demo-helper")
    result = resolve_tool(TOOL, tmp_path, path_which=lambda n: f"/usr/bin/{n}", fetch=_fail_fetch, build=_fail_build)
    assert result.source == "path" and result.paths == {"demo": "/usr/bin/demo", "demo-helper": "/usr/bin/demo-helper"}


def test_partial_path_does_not_count(tmp_path: Path) -> None:
    """A tool is found only when all its binaries are: runsc without its shim is no gVisor."""
    _exe(tmp_path / "bin" / "demo"), _exe(tmp_path / "bin" / "demo-helper")
    result = resolve_tool(TOOL, tmp_path, path_which=lambda n: "/usr/bin/demo" if n == "demo" else None,
                          fetch=_fail_fetch, build=_fail_build)
    assert result.source == "cache"


def test_cache_before_download(tmp_path: Path) -> None:
    _exe(tmp_path / "bin" / "demo"), _exe(tmp_path / "bin" / "demo-helper")
    result = resolve_tool(TOOL, tmp_path, path_which=_no_path, fetch=_fail_fetch, build=_fail_build,
                          allow_download=True)
    assert result.source == "cache" and result.paths["demo"] == str(tmp_path / "bin" / "demo")


def _serving(files: dict[str, bytes]):
    def fetch(url: str, dest: Path) -> None:
        dest.write_bytes(files[url])
    return fetch


def test_download_verified_and_linked(tmp_path: Path) -> None:
    body = {n: f"binary {n}".encode() for n in ("demo", "demo-helper")}
    served = {}
    for name, data in body.items():
        served[f"https://example.invalid/{name}"] = data
        served[f"https://example.invalid/{name}.sha256"] = f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode()
    result = resolve_tool(TOOL, tmp_path, path_which=_no_path, fetch=_serving(served), build=_fail_build,
                          allow_download=True, log=lambda _: None)
    assert result.source == "download"
    assert Path(result.paths["demo"]).read_bytes() == b"binary demo"
    assert (tmp_path / "bin" / "demo").resolve() == Path(result.paths["demo"])


def test_bad_checksum_is_refused_then_built(tmp_path: Path) -> None:
    served = {"https://example.invalid/demo": b"evil", "https://example.invalid/demo.sha256": b"00" * 32 + b"  demo\n",
              "https://example.invalid/demo-helper": b"x", "https://example.invalid/demo-helper.sha256": b"00" * 32 + b"\n"}
    built = []

    def build(command) -> int:
        built.append(command)
        _exe(tmp_path / "bin" / "demo"), _exe(tmp_path / "bin" / "demo-helper")
        return 0

    logs: list[str] = []
    result = resolve_tool(TOOL, tmp_path, path_which=_no_path, fetch=_serving(served), build=build,
                          allow_download=True, log=logs.append)
    assert result.source == "build" and built == [("build-demo",)]
    assert any("does not match its published sha256" in line for line in logs)
    assert not (tmp_path / "downloads" / "demo" / "v1" / "demo").exists()


def test_offline_skips_download_and_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_SANDBOX_OFFLINE", "1")

    def build(command) -> int:
        _exe(tmp_path / "bin" / "demo"), _exe(tmp_path / "bin" / "demo-helper")
        return 0

    result = resolve_tool(TOOL, tmp_path, path_which=_no_path, fetch=_fail_fetch, build=build, log=lambda _: None)
    assert result.source == "build"


def test_failed_build_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"building demo failed \(exit 2\).*make tools"):
        resolve_tool(TOOL, tmp_path, path_which=_no_path, fetch=_fail_fetch, build=lambda c: 2,
                     allow_download=False, log=lambda _: None)


def test_no_build_allowed_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"missing demo \(demo, demo-helper\): needed because tests need it"):
        resolve_tool(TOOL, tmp_path, path_which=_no_path, fetch=_fail_fetch, build=_fail_build,
                     allow_download=False, allow_build=False)


@pytest.mark.parametrize("text,name,want", [
    ("abc123  kind-linux-amd64\n", "kind-linux-amd64", "abc123"),
    ("ABC  ./pulumi-v1-linux-x64.tar.gz\ndef  other\n", "pulumi-v1-linux-x64.tar.gz", "abc"),
    ("0123beef\n", "kubectl", "0123beef"),
    ("feed *runsc\n", "runsc", "feed"),
])
def test_expected_digest_formats(text: str, name: str, want: str) -> None:
    assert tools.expected_digest(text, name) == want


def test_expected_digest_missing_entry() -> None:
    with pytest.raises(ToolError):
        tools.expected_digest("aa  one\nbb  two\n", "three")


def test_tools_per_stack() -> None:
    assert [t.name for t in tools.tools_for("kind", "gvisor")] == ["pulumi", "kubectl", "kind", "runsc"]
    assert [t.name for t in tools.tools_for("existing", "gvisor")] == ["pulumi", "kubectl"]
    assert tools.RUNSC.binaries == ("runsc", "containerd-shim-runsc-v1")


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("0", False), ("", False), (None, False)])
def test_offline_flag(value, expected) -> None:
    env = {} if value is None else {"AGENT_SANDBOX_OFFLINE": value}
    assert tools.offline(env) is expected


PLUGGED = Tool("eng", "v1", ("eng",), ("build-eng",), why="it runs things", plugins=("resource-k-v1",))


def test_offline_missing_plugin_sends_the_tool_to_its_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    built = []

    def build(command) -> int:
        built.append(command)
        (tmp_path / "home" / "plugins" / "resource-k-v1").mkdir(parents=True)
        return 0

    result = resolve_tool(PLUGGED, tmp_path, path_which=lambda n: "/usr/bin/eng", fetch=_fail_fetch, build=build,
                          allow_download=False, log=lambda _: None)
    assert built == [("build-eng",)] and result.source == "build"


def test_online_missing_plugin_is_left_to_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    result = resolve_tool(PLUGGED, tmp_path, path_which=lambda n: "/usr/bin/eng", fetch=_fail_fetch,
                          build=_fail_build, allow_download=True)
    assert result.source == "path"


def test_offline_partial_plugin_counts_as_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "plugins" / "resource-k-v1").mkdir(parents=True)
    (tmp_path / "home" / "plugins" / "resource-k-v1.partial").write_text("")
    assert tools.missing_plugins(PLUGGED, tmp_path) == ["resource-k-v1"]
    with pytest.raises(ToolError, match="missing Pulumi plugins resource-k-v1"):
        _exe(tmp_path / "bin" / "eng")
        resolve_tool(PLUGGED, tmp_path, path_which=_no_path, fetch=_fail_fetch, build=_fail_build,
                     allow_download=False, allow_build=False)
