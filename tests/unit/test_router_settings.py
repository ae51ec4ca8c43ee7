"""Unit tests for sandbox_router.settings: secure defaults and clear configuration errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "router"))

from sandbox_router.settings import SettingsError, load_settings  # noqa: E402


def test_refuses_to_start_without_token() -> None:
    with pytest.raises(SettingsError, match="ROUTER_AUTH_TOKEN"):
        load_settings({})


def test_explicit_dev_opt_out_disables_auth() -> None:
    settings = load_settings({"ALLOW_UNAUTHENTICATED_ROUTER": "true"})
    assert not settings.auth_enabled and settings.allow_unauthenticated


def test_token_wins_over_opt_out_and_defaults_are_safe() -> None:
    settings = load_settings({"ROUTER_AUTH_TOKEN": "s3cret-token", "ALLOW_UNAUTHENTICATED_ROUTER": "true"})
    assert settings.auth_enabled and not settings.allow_unauthenticated
    assert settings.port == 8080 and settings.host == "0.0.0.0"
    assert not settings.allow_loopback_pod_ip
    assert settings.cluster_domain == "cluster.local"
    assert settings.metrics_require_auth


def test_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file-token\n")
    assert load_settings({"ROUTER_AUTH_TOKEN_FILE": str(token_file)}).auth_token == "from-file-token"
    with pytest.raises(SettingsError, match="ROUTER_AUTH_TOKEN_FILE"):
        load_settings({"ROUTER_AUTH_TOKEN_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize(("key", "value"), [
    ("ROUTER_PORT", "http"), ("ROUTER_PORT", "70000"), ("PROXY_TIMEOUT_SECONDS", "-1"),
    ("PROXY_TIMEOUT_SECONDS", "nan"), ("ROUTER_ALLOWED_POD_CIDRS", "10.0.0.0/33"),
    ("ROUTER_ALLOW_LOOPBACK_POD_IP", "maybe"), ("ROUTER_POD_IP", "not-an-ip"),
    ("ROUTER_MAX_CONNECTIONS_PER_CLIENT", "0"), ("CLUSTER_DOMAIN", "a..b"), ("ROUTER_AUTH_TOKEN", "has space"),
])
def test_bad_values_name_the_variable(key: str, value: str) -> None:
    env = {"ROUTER_AUTH_TOKEN": "good-token-123", key: value}
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert key in str(err.value)


def test_lists_are_parsed() -> None:
    settings = load_settings({"ROUTER_AUTH_TOKEN": "x" * 16, "ROUTER_ALLOWED_POD_CIDRS": "10.244.0.0/16, fd00::/64",
                              "ROUTER_POD_IP": "10.0.0.5", "ROUTER_CONNECT_TIMEOUT_SECONDS": "500",
                              "PROXY_TIMEOUT_SECONDS": "60"})
    assert [str(n) for n in settings.allowed_pod_cidrs] == ["10.244.0.0/16", "fd00::/64"]
    assert settings.own_addresses == ("10.0.0.5",)
    assert settings.connect_timeout_seconds == 60.0
