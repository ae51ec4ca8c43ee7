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
    settings = load_settings({"ALLOW_UNAUTHENTICATED_ROUTER": "true", "ROUTER_RESOLVER": "dns"})
    assert not settings.auth_enabled and settings.allow_unauthenticated


def test_token_wins_over_opt_out_and_defaults_are_safe() -> None:
    settings = load_settings({"ROUTER_AUTH_TOKEN": "s3cret-token", "ALLOW_UNAUTHENTICATED_ROUTER": "true",
                              "ROUTER_RESOLVER": "dns"})
    assert settings.auth_enabled and not settings.allow_unauthenticated
    assert settings.port == 8080 and settings.host == "0.0.0.0"
    assert not settings.allow_loopback_pod_ip
    assert settings.cluster_domain == "cluster.local"
    assert settings.metrics_require_auth


def test_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file-token\n")
    assert load_settings({"ROUTER_AUTH_TOKEN_FILE": str(token_file), "ROUTER_RESOLVER": "dns"}
                         ).auth_token == "from-file-token"
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
                              "ROUTER_RESOLVER": "dns",
                              "ROUTER_POD_IP": "10.0.0.5", "ROUTER_CONNECT_TIMEOUT_SECONDS": "500",
                              "PROXY_TIMEOUT_SECONDS": "60"})
    assert [str(n) for n in settings.allowed_pod_cidrs] == ["10.244.0.0/16", "fd00::/64"]
    assert settings.own_addresses == ("10.0.0.5",)
    assert settings.connect_timeout_seconds == 60.0


# -- resolution (issue 11 item 1) -------------------------------------------------------------------
def _serviceaccount(tmp_path: Path) -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return sa


def _watch_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"ROUTER_AUTH_TOKEN": "good-token-123", "ROUTER_SANDBOX_NAMESPACES": "agent-sandbox-demo, team-b",
            "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
            "ROUTER_SERVICEACCOUNT_DIR": str(_serviceaccount(tmp_path)), **extra}


def test_watch_is_the_default_resolver_with_the_sandbox_port_only(tmp_path: Path) -> None:
    settings = load_settings(_watch_env(tmp_path))
    assert settings.resolver == "watch"
    assert settings.sandbox_namespaces == ("agent-sandbox-demo", "team-b")
    assert settings.sandbox_ports == (8888,)
    assert (settings.kube_host, settings.kube_port) == ("10.96.0.1", 443)
    assert settings.sandbox_wait_seconds == 10.0 and not settings.route_unclaimed_pool_pods


def test_watch_ports_and_wait_are_configurable(tmp_path: Path) -> None:
    settings = load_settings(_watch_env(tmp_path, ROUTER_SANDBOX_PORTS="8888, 9000", ROUTER_SANDBOX_WAIT_SECONDS="0"))
    assert settings.sandbox_ports == (8888, 9000) and settings.sandbox_wait_seconds == 0.0


def test_dns_mode_keeps_any_port_unless_ports_are_given() -> None:
    base = {"ROUTER_AUTH_TOKEN": "good-token-123", "ROUTER_RESOLVER": "dns"}
    assert load_settings(base).sandbox_ports is None
    assert load_settings({**base, "ROUTER_SANDBOX_PORTS": "8888"}).sandbox_ports == (8888,)


@pytest.mark.parametrize(("drop", "named"), [
    ("ROUTER_SANDBOX_NAMESPACES", "ROUTER_SANDBOX_NAMESPACES"),
    ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_HOST"),
    ("KUBERNETES_SERVICE_PORT", "KUBERNETES_SERVICE_PORT"),
])
def test_watch_mode_refuses_to_start_incomplete(tmp_path: Path, drop: str, named: str) -> None:
    env = _watch_env(tmp_path)
    env.pop(drop)
    with pytest.raises(SettingsError, match=named) as err:
        load_settings(env)
    assert "ROUTER_RESOLVER=dns" in str(err.value)


def test_watch_mode_needs_the_service_account_token(tmp_path: Path) -> None:
    env = _watch_env(tmp_path)
    (Path(env["ROUTER_SERVICEACCOUNT_DIR"]) / "token").unlink()
    with pytest.raises(SettingsError, match="automountServiceAccountToken"):
        load_settings(env)


@pytest.mark.parametrize(("key", "value"), [
    ("ROUTER_RESOLVER", "magic"), ("ROUTER_SANDBOX_PORTS", "0"), ("ROUTER_SANDBOX_PORTS", "http"),
    ("ROUTER_SANDBOX_PORTS", "070"), ("ROUTER_SANDBOX_NAMESPACES", "Bad_NS"),
    ("ROUTER_SANDBOX_WAIT_SECONDS", "600"), ("ROUTER_ROUTE_UNCLAIMED_POOL_PODS", "perhaps"),
])
def test_bad_resolution_values_name_the_variable(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(_watch_env(tmp_path, **{key: value}))
    assert key in str(err.value)
