"""agent_sandbox_pulumi/components/image_loader.py: the dynamic resource's provider, run for real."""

from __future__ import annotations

import pytest

from agent_sandbox_pulumi.components.image_loader import ImageLoadError, ImageLoadProvider


def test_create_runs_the_command_with_the_image(tmp_path) -> None:
    marker = tmp_path / "loaded"
    props = {"image": "agent-sandbox/runtime:abc", "command": f'echo "$IMAGE" > {marker}', "trigger": "sha256:1"}
    result = ImageLoadProvider().create(props)
    assert result.id == "agent-sandbox/runtime:abc"
    assert marker.read_text() == "agent-sandbox/runtime:abc\n"


def test_a_failing_pipeline_is_an_error_naming_the_command_and_the_fix() -> None:
    props = {"image": "img:1", "command": "false | cat", "trigger": "t"}
    with pytest.raises(ImageLoadError, match=r"loading image img:1 onto the nodes failed \(exit 1\) running `false \| cat`"):
        ImageLoadProvider().create(props)


def test_only_a_new_image_command_or_digest_reloads() -> None:
    provider = ImageLoadProvider()
    old = {"image": "img:1", "command": "true", "trigger": "sha256:1"}
    assert not provider.diff("img:1", old, dict(old)).changes
    assert provider.diff("img:1", old, {**old, "trigger": "sha256:2"}).changes
    assert provider.diff("img:1", old, {**old, "image": "img:2"}).changes


def test_update_reruns_the_load(tmp_path) -> None:
    marker = tmp_path / "count"
    props = {"image": "img:2", "command": f"echo x >> {marker}", "trigger": "t2"}
    ImageLoadProvider().update("img:1", {}, props)
    assert marker.read_text() == "x\n"
