"""Runtime configuration read from ``SANDBOX_*`` environment variables, validated up front.

Every bad value is reported with the variable name, the offending value and what to use instead,
and the server refuses to start rather than silently falling back to a default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_BYTE_SUFFIXES = {
    "": 1,
    "k": 1000, "m": 1000**2, "g": 1000**3,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3,
}
_BYTES_PATTERN = re.compile(r"^\s*(\d+)\s*([kmg]i?)?b?\s*$", re.IGNORECASE)


class ConfigError(ValueError):
    """A ``SANDBOX_*`` environment variable holds a value the runtime cannot use."""


@dataclass(frozen=True)
class Settings:
    """Validated runtime settings.

    Attributes mirror the environment variables documented in images/runtime/README.md.
    """

    host: str = "0.0.0.0"
    port: int = 8888
    base_dir: str = "/app"
    exec_timeout_seconds: float = 300.0
    max_exec_timeout_seconds: float = 3600.0
    max_output_bytes: int = 4 * 1024**2
    max_upload_bytes: int = 1024**3
    max_concurrent_commands: int = 128
    max_command_processes: int = 256
    log_level: str = "info"
    access_log: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``environ`` (default ``os.environ``); raise ConfigError on bad input."""
        env = os.environ if environ is None else environ
        defaults = cls()
        exec_timeout = _positive_seconds(env, "SANDBOX_EXEC_TIMEOUT_SECONDS", defaults.exec_timeout_seconds)
        max_timeout = _positive_seconds(env, "SANDBOX_MAX_EXEC_TIMEOUT_SECONDS", max(defaults.max_exec_timeout_seconds, exec_timeout))
        if max_timeout < exec_timeout:
            raise ConfigError(
                f"SANDBOX_MAX_EXEC_TIMEOUT_SECONDS={max_timeout:g} is below SANDBOX_EXEC_TIMEOUT_SECONDS={exec_timeout:g}; "
                "the cap must be at least the default timeout: raise the cap or lower the default"
            )
        log_level = env.get("SANDBOX_LOG_LEVEL", defaults.log_level).strip().lower()
        if log_level not in _LOG_LEVELS:
            raise ConfigError(f"SANDBOX_LOG_LEVEL={log_level!r} is not a log level; use one of {', '.join(_LOG_LEVELS)}")
        return cls(
            host=_host(env, defaults.host),
            port=_port(env, defaults.port),
            base_dir=_base_dir(env, defaults.base_dir),
            exec_timeout_seconds=exec_timeout,
            max_exec_timeout_seconds=max_timeout,
            max_output_bytes=_byte_size(env, "SANDBOX_MAX_OUTPUT_BYTES", defaults.max_output_bytes),
            max_upload_bytes=_byte_size(env, "SANDBOX_MAX_UPLOAD_BYTES", defaults.max_upload_bytes),
            max_concurrent_commands=_count(env, "SANDBOX_MAX_CONCURRENT_COMMANDS", defaults.max_concurrent_commands),
            max_command_processes=_count(env, "SANDBOX_MAX_COMMAND_PROCESSES", defaults.max_command_processes),
            log_level=log_level,
            access_log=_boolean(env, "SANDBOX_ACCESS_LOG", defaults.access_log),
        )


def _host(env: Mapping[str, str], default: str) -> str:
    value = env.get("SANDBOX_HOST", default).strip()
    if not value or any(c.isspace() for c in value):
        raise ConfigError(f"SANDBOX_HOST={value!r} is not a bind address; use e.g. 0.0.0.0, :: or 127.0.0.1")
    return value


def _port(env: Mapping[str, str], default: int) -> int:
    raw = env.get("SANDBOX_PORT")
    if raw is None:
        return default
    try:
        port = int(raw.strip())
    except ValueError:
        raise ConfigError(f"SANDBOX_PORT={raw!r} is not an integer; use a TCP port between 1 and 65535") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"SANDBOX_PORT={raw!r} is out of range; use a TCP port between 1 and 65535")
    return port


def _base_dir(env: Mapping[str, str], default: str) -> str:
    raw = env.get("SANDBOX_BASE_DIR", default)
    if not raw or not os.path.isabs(raw) or "\x00" in raw:
        raise ConfigError(f"SANDBOX_BASE_DIR={raw!r} must be an absolute directory path such as /app")
    resolved = os.path.realpath(raw)
    if resolved == os.path.sep:
        raise ConfigError(f"SANDBOX_BASE_DIR={raw!r} resolves to the filesystem root, which confines nothing; use a dedicated directory such as /app")
    try:
        os.makedirs(resolved, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"SANDBOX_BASE_DIR={raw!r} does not exist and cannot be created ({exc.strerror}); create it or mount a writable volume there") from None
    if not os.path.isdir(resolved):
        raise ConfigError(f"SANDBOX_BASE_DIR={raw!r} is not a directory; point it at a writable directory such as /app")
    if not os.access(resolved, os.W_OK | os.X_OK):
        raise ConfigError(f"SANDBOX_BASE_DIR={raw!r} is not writable by uid {os.getuid()}; chown it or mount a writable volume (e.g. an emptyDir) there")
    return resolved


def _positive_seconds(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number; use a positive number of seconds such as 300") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{key}={raw!r} must be a positive, finite number of seconds such as 300")
    return value


def _count(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not an integer; use a positive whole number such as {default}") from None
    if not 1 <= value <= 1_000_000:
        raise ConfigError(f"{key}={raw!r} is out of range; use a whole number between 1 and 1000000, e.g. {default}")
    return value


def _byte_size(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None:
        return default
    match = _BYTES_PATTERN.match(raw)
    if not match:
        raise ConfigError(f"{key}={raw!r} is not a byte size; use an integer with an optional suffix, e.g. 1048576, 512Ki, 10Mi or 1Gi")
    value = int(match.group(1)) * _BYTE_SUFFIXES[(match.group(2) or "").lower()]
    if value <= 0:
        raise ConfigError(f"{key}={raw!r} must be greater than zero, e.g. 10Mi")
    return value


def _boolean(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{key}={raw!r} is not a boolean; use true or false")
