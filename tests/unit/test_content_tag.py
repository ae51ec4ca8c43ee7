"""Content-derived image tags."""

from pathlib import Path

from agent_sandbox_pulumi.sandbox_iac.content_tag import content_tag


def make_context(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM base\n")
    (root / "pkg" / "app.py").write_text("print('hi')\n")
    return root


def test_same_inputs_same_tag_and_any_change_changes_it(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    tag = content_tag(context, {"BASE_IMAGE": "a"})
    assert len(tag) == 12 and tag == content_tag(context, {"BASE_IMAGE": "a"})
    assert content_tag(context, {"BASE_IMAGE": "b"}) != tag
    (context / "pkg" / "app.py").write_text("print('bye')\n")
    assert content_tag(context, {"BASE_IMAGE": "a"}) != tag


def test_caches_and_wheelhouses_do_not_change_the_tag(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ctx")
    tag = content_tag(context, {})
    (context / "pkg" / "__pycache__").mkdir()
    (context / "pkg" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (context / ".wheels").mkdir()
    (context / ".wheels" / "x.whl").write_bytes(b"\0")
    assert content_tag(context, {}) == tag
