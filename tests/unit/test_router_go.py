"""The compiled router's own checks, run from the Python suite so `make test` covers them:
gofmt (no file needs formatting), go vet, and its Go unit tests (images/router-go/*_test.go:
settings, address policy, routing, the pod index and list+watch, the request head, bodies and
the response head). The same component tests as the Python router's judge it over HTTP
(tests/component, once per implementation).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

GO_DIR = Path(__file__).resolve().parents[2] / "images" / "router-go"
GO = shutil.which("go")

pytestmark = pytest.mark.timeout(900)


def go_env() -> dict[str, str]:
    cache = os.environ.get("CACHE_DIR") or "/var/cache/agent-sandbox-iac"
    return {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0",
            "GOCACHE": os.environ.get("GOCACHE") or f"{cache}/go/build"}


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    if GO is None:
        print("SKIP: no Go toolchain on PATH: the compiled router cannot be checked here")
        pytest.skip("no Go toolchain on PATH")
    return subprocess.run(argv, cwd=GO_DIR, env=go_env(), capture_output=True, text=True, timeout=840)


def test_sources_are_gofmt_clean() -> None:
    result = run(str(Path(GO).parent / "gofmt") if GO else "gofmt", "-l", ".")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"files need gofmt: {result.stdout}"


def test_go_vet_is_clean() -> None:
    result = run(GO or "go", "vet", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_go_unit_tests_pass() -> None:
    result = run(GO or "go", "test", "-count=1", ".")
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "ok" in result.stdout


def test_build_script_caches_by_content(tmp_path: Path) -> None:
    """build.sh prints the binary's path; a second call finds it in the cache by the same path."""
    if GO is None:
        print("SKIP: no Go toolchain on PATH")
        pytest.skip("no Go toolchain on PATH")
    env = {**go_env(), "CACHE_DIR": str(tmp_path)}
    first = subprocess.run([str(GO_DIR / "build.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    binary = Path(first.stdout.strip().splitlines()[-1])
    assert binary.is_file() and binary.stat().st_mode & 0o111 and str(binary).startswith(str(tmp_path))
    again = subprocess.run([str(GO_DIR / "build.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert again.stdout.strip().splitlines()[-1] == str(binary) and "building" not in again.stderr
