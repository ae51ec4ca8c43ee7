"""The controller's tuning flags: value checks per kind, profiles and overrides, and how they
become the container's arguments (replacing the release's own, in a stable order)."""

from __future__ import annotations

import pytest

from agent_sandbox_pulumi.sandbox_iac import controller_flags as flags
from agent_sandbox_pulumi.sandbox_iac import manifests
from agent_sandbox_pulumi.sandbox_iac.config import ConfigError, parse_stack_config


@pytest.mark.parametrize("name,value,expected", [
    ("separate-watch-connection", True, "true"), ("separate-watch-connection", "False", "false"),
    ("api-connections", "2", "2"), ("api-connections", 3, "3"), ("kube-api-qps", "-1", "-1"),
    ("kube-api-qps", 200.5, "200.5"), ("sandbox-write-behind-window", "250ms", "250ms"),
    ("sandbox-warm-pool-replenish-delay", "1m30s", "1m30s"), ("sandbox-write-behind-window", "0", "0"),
])
def test_accepted_values_are_normalised(name: str, value: object, expected: str) -> None:
    assert flags.check_value(name, value) == (expected, None)


@pytest.mark.parametrize("name,value,problem", [
    ("separate-watch-connection", "yes", "true or false"), ("api-connections", "0", ">= 1"),
    ("api-connections", "1.5", "an integer"), ("kube-api-qps", "-2", ">= -1"), ("api-connections", True, "an integer"),
    ("sandbox-write-behind-window", "250", "Go duration"), ("sandbox-write-behind-window", "5 sec", "Go duration"),
])
def test_refused_values_say_what_is_expected(name: str, value: object, problem: str) -> None:
    normalised, message = flags.check_value(name, value)
    assert normalised is None and problem in message


def test_profiles_only_use_tunable_flags_with_valid_values() -> None:
    assert flags.PROFILES["release"] == {}
    for profile in flags.PROFILES.values():
        for name, value in profile.items():
            assert name in flags.TUNABLE_FLAGS
            assert flags.check_value(name, value) == (value, None)


def test_overrides_win_over_the_profile() -> None:
    merged = flags.effective_flags("latency", {"api-connections": "4", "kube-api-burst": "50"})
    assert merged["api-connections"] == "4" and merged["kube-api-burst"] == "50"
    assert merged["separate-watch-connection"] == "true"


def test_arguments_replace_the_release_values_and_keep_the_rest() -> None:
    existing = ["--leader-elect", "--kube-api-burst=10", "--extensions", "--api-connections"]
    assert flags.merge_arguments(existing, {"kube-api-burst": "50", "api-connections": "2"}) == [
        "--leader-elect", "--extensions", "--api-connections=2", "--kube-api-burst=50"]


def test_the_release_deployment_gets_the_tuned_flags() -> None:
    release = manifests.load_release(None)
    adapted = manifests.adapt_release(release, "img:1", "IfNotPresent", {"separate-watch-connection": "true"})
    container = manifests._controller_container(adapted)
    assert "--separate-watch-connection=true" in container["args"]
    assert "--extensions" in container["args"]
    untouched = manifests._controller_container(manifests.adapt_release(release, "img:1", "IfNotPresent"))
    assert not any(a.startswith("--separate-watch") for a in untouched["args"])


def test_stack_config_reads_profile_and_flags() -> None:
    config = parse_stack_config({"controllerProfile": "latency",
                                 "controllerFlags": '{"kube-api-qps": 200, "--disable-claim-events": false}'}, "gvisor")
    assert config.controller_profile == "latency"
    assert config.controller_flags == (("disable-claim-events", "false"), ("kube-api-qps", "200"))


def test_stack_config_refuses_flags_outside_the_table_by_name() -> None:
    with pytest.raises(ConfigError) as error:
        parse_stack_config({"controllerFlags": {"enable-pprof-debug": True, "kube-api-brust": 5}}, "gvisor")
    text = str(error.value)
    assert "controllerFlags.enable-pprof-debug is not a tunable controller flag" in text
    assert "did you mean 'kube-api-burst'?" in text
    with pytest.raises(ConfigError, match="expected a JSON object"):
        parse_stack_config({"controllerFlags": "[1, 2]"}, "gvisor")
