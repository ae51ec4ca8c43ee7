"""``--config KEY=VALUE`` parsing, and the user's and the set-up's values remembered apart."""

from __future__ import annotations

import pytest

from automation import overrides
from automation.paths import ProjectPaths


@pytest.mark.parametrize("items,expected", [
    (["kubeconfig=/tmp/kc"], {"kubeconfig": "/tmp/kc"}),
    (["agent-sandbox:sandboxImage=a/r:1", "x=a=b", "empty="], {"sandboxImage": "a/r:1", "x": "a=b", "empty": ""}),
    (None, {}),
])
def test_config_overrides_parse(items, expected):
    assert overrides.parse_overrides(items) == expected


@pytest.mark.parametrize("bad", ["novalue", "=v"])
def test_malformed_overrides_say_what_is_expected(bad):
    with pytest.raises(overrides.OverrideError, match="is not KEY=VALUE"):
        overrides.parse_overrides([bad])


def test_setup_overrides_are_kept_apart_from_the_users(tmp_path):
    paths = ProjectPaths(tmp_path, tmp_path / "out")
    overrides.save_setup_overrides(paths, "gvisor", {"imageBuild": "prebuilt", "sandboxImage": "a/runtime:1"})
    overrides.save_overrides(paths, "gvisor", {"sandboxImage": "mine/runtime:2"})
    assert overrides.load_setup_overrides(paths, "gvisor") == {"imageBuild": "prebuilt", "sandboxImage": "a/runtime:1"}
    # what later commands see: the set-up's values under the user's
    merged = {**overrides.load_setup_overrides(paths, "gvisor"), **overrides.load_overrides(paths, "gvisor")}
    assert merged == {"imageBuild": "prebuilt", "sandboxImage": "mine/runtime:2"}
    assert overrides.setup_overrides_path(paths, "gvisor") != overrides.overrides_path(paths, "gvisor")
