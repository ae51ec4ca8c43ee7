"""A stack's config from its stack file (secrets left out, scalars as the engine passes them)
and the ``--config`` overrides on top."""

from __future__ import annotations

from automation import stack_files
from automation.overrides import load_overrides, save_overrides
from automation.paths import ProjectPaths, default_paths


def test_stack_file_config_drops_secrets_and_stringifies_scalars(tmp_path):
    (tmp_path / "Pulumi.s.yaml").write_text(
        "config:\n"
        "  agent-sandbox:clusterFlavour: existing\n"
        "  agent-sandbox:manageRuntimeClass: false\n"
        "  agent-sandbox:warmPoolReplicas: 3\n"
        "  agent-sandbox:routerAuthToken:\n    secure: v1:abc\n"
        "  kubernetes:context: ignored\n")
    raw = stack_files.read_stack_file(ProjectPaths(tmp_path, tmp_path), "s")
    assert raw == {"clusterFlavour": "existing", "manageRuntimeClass": "false", "warmPoolReplicas": "3"}


def test_the_project_stacks_parse():
    paths = default_paths()
    assert stack_files.stack_config(paths, "gvisor").cluster_flavour == "kind"
    assert stack_files.stack_config(paths, "kata").runtime == "kata-qemu"


def test_overrides_apply_on_top_of_the_stack_file(tmp_path):
    (tmp_path / "Pulumi.s.yaml").write_text("config:\n  agent-sandbox:clusterFlavour: kind\n")
    paths = ProjectPaths(tmp_path, tmp_path)
    save_overrides(paths, "s", {"clusterFlavour": "existing", "imageRegistry": "r/x"})
    config = stack_files.stack_config(paths, "s", load_overrides(paths, "s"))
    assert config.cluster_flavour == "existing" and config.image_registry == "r/x"
