"""The pinned controller release and how the project adapts it."""

from __future__ import annotations

import pytest

from sandbox_iac import manifests
from tests.pulumi_harness import PINNED_MANIFEST


@pytest.fixture(scope="module")
def release() -> list[dict]:
    return manifests.parse_manifest(manifests.read_manifest_text(str(PINNED_MANIFEST)))


def test_pinned_manifest_has_the_four_crds_serving_v1beta1(release: list[dict]) -> None:
    crds = {o["metadata"]["name"]: o for o in release if o["kind"] == "CustomResourceDefinition"}
    assert set(crds) == set(manifests.EXPECTED_CRDS)
    for crd in crds.values():
        assert "v1beta1" in manifests.served_versions(crd)
        storage = [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]
        assert storage == ["v1beta1"]
        assert crd["spec"]["conversion"]["strategy"] == "Webhook"


def test_adapt_sets_image_extensions_and_webhook_probe(release: list[dict]) -> None:
    without_flag = [dict(o) for o in release]
    adapted = manifests.adapt_release(release, "localhost/controller:v0.5.6", "Never")
    container = next(o for o in adapted if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "localhost/controller:v0.5.6" and container["imagePullPolicy"] == "Never"
    assert container["args"].count("--extensions") == 1
    assert container["readinessProbe"]["tcpSocket"]["port"] == 9443
    original = next(o for o in without_flag if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "readinessProbe" not in original, "adapt_release must not mutate its input"


def test_adapt_adds_extensions_when_the_release_lacks_it(release: list[dict]) -> None:
    stripped = manifests.adapt_release(release, "x/controller:1", "IfNotPresent")
    container = next(o for o in stripped if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    container["args"] = ["--leader-elect=true"]
    again = manifests.adapt_release(stripped, "x/controller:1", "IfNotPresent")
    args = next(o for o in again if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["--leader-elect=true", "--extensions"]


def test_split_puts_namespace_and_crds_first(release: list[dict]) -> None:
    foundation, workload = manifests.split_foundation(release)
    assert {o["kind"] for o in foundation} == {"Namespace", "CustomResourceDefinition"}
    assert "Deployment" in {o["kind"] for o in workload}
    assert len(foundation) + len(workload) == len(release)


def test_missing_local_file_names_the_key_and_the_fix(tmp_path) -> None:
    with pytest.raises(manifests.ManifestError, match="agent-sandbox:controllerManifest = .* is not a readable file"):
        manifests.read_manifest_text(str(tmp_path / "absent.yaml"))


def test_a_manifest_without_the_crds_is_refused() -> None:
    with pytest.raises(manifests.ManifestError, match="lacks the CRDs"):
        manifests.parse_manifest("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")


def test_garbage_documents_are_refused() -> None:
    with pytest.raises(manifests.ManifestError, match="not a Kubernetes object"):
        manifests.parse_manifest("- just\n- a list\n")


def test_relative_paths_resolve_from_the_project(tmp_path) -> None:
    (tmp_path / "m.yaml").write_text("kind: x")
    assert manifests.read_manifest_text("m.yaml", tmp_path) == "kind: x"
