"""SANDBOX_* environment parsing: defaults, overrides and clear errors for bad values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox_runtime.settings import ConfigError, Settings


def test_defaults_match_the_contract(tmp_path: Path) -> None:
    settings = Settings.from_env({"SANDBOX_BASE_DIR": str(tmp_path)})
    assert (settings.host, settings.port, settings.exec_timeout_seconds) == ("0.0.0.0", 8888, 300.0)
    assert settings.base_dir == os.path.realpath(tmp_path)
    assert settings.max_exec_timeout_seconds >= settings.exec_timeout_seconds
    assert settings.max_output_bytes > 0 and settings.max_upload_bytes > 0
    assert settings.access_log is False


def test_overrides_are_parsed(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": "9000", "SANDBOX_BASE_DIR": str(tmp_path),
        "SANDBOX_EXEC_TIMEOUT_SECONDS": "2.5", "SANDBOX_MAX_EXEC_TIMEOUT_SECONDS": "10",
        "SANDBOX_MAX_OUTPUT_BYTES": "64Ki", "SANDBOX_MAX_UPLOAD_BYTES": "2Gi",
        "SANDBOX_LOG_LEVEL": "WARNING", "SANDBOX_ACCESS_LOG": "true",
    })
    assert (settings.host, settings.port) == ("127.0.0.1", 9000)
    assert (settings.exec_timeout_seconds, settings.max_exec_timeout_seconds) == (2.5, 10.0)
    assert (settings.max_output_bytes, settings.max_upload_bytes) == (65536, 2 * 1024**3)
    assert (settings.log_level, settings.access_log) == ("warning", True)


@pytest.mark.parametrize("raw, expected", [("1048576", 1048576), ("10M", 10_000_000), ("10Mi", 10 * 1024**2), ("512kib", 512 * 1024), ("1G", 10**9)])
def test_byte_sizes_accept_suffixes(tmp_path: Path, raw: str, expected: int) -> None:
    assert Settings.from_env({"SANDBOX_BASE_DIR": str(tmp_path), "SANDBOX_MAX_UPLOAD_BYTES": raw}).max_upload_bytes == expected


def test_command_caps_have_defaults_and_overrides(tmp_path: Path) -> None:
    defaults = Settings.from_env({"SANDBOX_BASE_DIR": str(tmp_path)})
    assert (defaults.max_concurrent_commands, defaults.max_command_processes) == (128, 256)
    custom = Settings.from_env({"SANDBOX_BASE_DIR": str(tmp_path), "SANDBOX_MAX_CONCURRENT_COMMANDS": "4",
                                "SANDBOX_MAX_COMMAND_PROCESSES": "32"})
    assert (custom.max_concurrent_commands, custom.max_command_processes) == (4, 32)


def test_cap_follows_a_larger_default_timeout(tmp_path: Path) -> None:
    settings = Settings.from_env({"SANDBOX_BASE_DIR": str(tmp_path), "SANDBOX_EXEC_TIMEOUT_SECONDS": "7200"})
    assert settings.max_exec_timeout_seconds == 7200


@pytest.mark.parametrize("key, value", [
    ("SANDBOX_PORT", "http"), ("SANDBOX_PORT", "0"), ("SANDBOX_PORT", "70000"),
    ("SANDBOX_HOST", ""), ("SANDBOX_HOST", "a b"),
    ("SANDBOX_EXEC_TIMEOUT_SECONDS", "soon"), ("SANDBOX_EXEC_TIMEOUT_SECONDS", "0"), ("SANDBOX_EXEC_TIMEOUT_SECONDS", "-5"),
    ("SANDBOX_EXEC_TIMEOUT_SECONDS", "inf"), ("SANDBOX_EXEC_TIMEOUT_SECONDS", "nan"),
    ("SANDBOX_MAX_EXEC_TIMEOUT_SECONDS", "1"),
    ("SANDBOX_MAX_OUTPUT_BYTES", "lots"), ("SANDBOX_MAX_OUTPUT_BYTES", "0"), ("SANDBOX_MAX_UPLOAD_BYTES", "-1"),
    ("SANDBOX_MAX_UPLOAD_BYTES", "1.5G"), ("SANDBOX_LOG_LEVEL", "verbose"), ("SANDBOX_ACCESS_LOG", "maybe"),
    ("SANDBOX_BASE_DIR", "relative/dir"), ("SANDBOX_BASE_DIR", "/"),
    ("SANDBOX_MAX_CONCURRENT_COMMANDS", "many"), ("SANDBOX_MAX_CONCURRENT_COMMANDS", "0"),
    ("SANDBOX_MAX_COMMAND_PROCESSES", "-3"), ("SANDBOX_MAX_COMMAND_PROCESSES", "2.5"),
])
def test_bad_values_name_key_and_value(tmp_path: Path, key: str, value: str) -> None:
    env = {"SANDBOX_BASE_DIR": str(tmp_path), key: value}
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    assert key in str(error.value) and repr(value)[1:-1] in str(error.value)


def test_missing_base_dir_is_created(tmp_path: Path) -> None:
    target = tmp_path / "new" / "base"
    assert Settings.from_env({"SANDBOX_BASE_DIR": str(target)}).base_dir == str(target)
    assert target.is_dir()


def test_base_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="SANDBOX_BASE_DIR"):
        Settings.from_env({"SANDBOX_BASE_DIR": str(tmp_path / "file")})
