"""The controller release manifest: the vendored pinned copy, the digest check of downloads,
one-line errors, what the manifest has (v0.5.6 and a v1.0.x shape) and how the project adapts it."""

from __future__ import annotations

import copy
import hashlib
import io
import urllib.error
import urllib.request

import pulumi
import pytest

from agent_sandbox_pulumi.sandbox_iac import manifests, versions
from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config
from tests.pulumi_harness import PINNED_MANIFEST, REPO_ROOT, run_program
from tests.unit.conftest import write_manifest


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


def test_storage_versions_only_drops_the_webhook_and_the_older_version(release: list[dict]) -> None:
    before = copy.deepcopy(release)
    adapted = manifests.storage_versions_only(release)
    assert release == before, "the transform must not mutate its input"
    crds = [o for o in adapted if o["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 4
    assert all(crd["spec"]["conversion"] == {"strategy": "None"} for crd in crds)
    assert all([v["name"] for v in crd["spec"]["versions"]] == ["v1beta1"] for crd in crds)
    assert not [o for o in adapted if o["kind"] == "Service" and o["metadata"]["name"] == "agent-sandbox-webhook-service"]
    container = next(o for o in adapted if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"].count("--enable-webhook=false") == 1
    assert [p["name"] for p in container["ports"]] == ["metrics", "healthz"]
    shape = manifests.release_shape(adapted)
    assert not shape.conversion_webhook and shape.health_port == 8081
    assert manifests.readiness_probe(shape)["httpGet"] == {"path": "/readyz", "port": 8081}
    # a release that converts nothing (v1.0.x) comes back as it is, without the v0.5.6-only flag
    assert manifests.storage_versions_only(adapted) == adapted


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


# --- The vendored release and the digest check (the repo stands alone) --------------------

KEY = "agent-sandbox:controllerManifest"


def _served_by(monkeypatch, body: bytes) -> list[str]:
    """Make every download return ``body``; returns the URLs asked for."""
    asked: list[str] = []

    def fake_urlopen(url, timeout=None):  # noqa: ARG001
        asked.append(url)
        return io.BytesIO(body)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return asked


def _offline(monkeypatch) -> None:
    def refuse(url, timeout=None):  # noqa: ARG001
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_the_vendored_copy_is_the_pinned_release() -> None:
    vendored = manifests.VENDORED_MANIFEST
    assert hashlib.sha256(vendored.read_bytes()).hexdigest() == versions.AGENT_SANDBOX_MANIFEST_SHA256
    readme = (vendored.parent / "README.md").read_text()
    for fact in (versions.AGENT_SANDBOX_MANIFEST_SHA256, versions.AGENT_SANDBOX_MANIFEST_URL, "Apache-2.0",
                 "kubernetes-sigs"):
        assert fact in readme, f"vendor README lacks {fact}"


def test_the_default_is_the_vendored_copy_and_needs_no_network(monkeypatch) -> None:
    _offline(monkeypatch)
    default = parse_stack_config({}, "gvisor").controller_manifest
    assert default == versions.AGENT_SANDBOX_MANIFEST_VENDORED
    objects = manifests.parse_manifest(manifests.read_manifest_text(default, REPO_ROOT))
    assert {o["kind"] for o in objects} >= {"CustomResourceDefinition", "Deployment"}


def test_a_download_of_the_release_url_is_verified(monkeypatch) -> None:
    asked = _served_by(monkeypatch, PINNED_MANIFEST.read_bytes())
    text = manifests.read_manifest_text(versions.AGENT_SANDBOX_MANIFEST_URL)
    assert asked == [versions.AGENT_SANDBOX_MANIFEST_URL]
    assert text == PINNED_MANIFEST.read_text()


def test_a_tampered_download_is_refused_in_one_line(monkeypatch) -> None:
    tampered = PINNED_MANIFEST.read_bytes().replace(b"--leader-elect=true", b"--leader-elect=false")
    _served_by(monkeypatch, tampered)
    with pytest.raises(manifests.ManifestError) as caught:
        manifests.read_manifest_text(versions.AGENT_SANDBOX_MANIFEST_URL)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{KEY} = {versions.AGENT_SANDBOX_MANIFEST_URL!r}")
    assert versions.AGENT_SANDBOX_MANIFEST_SHA256 in message
    assert hashlib.sha256(tampered).hexdigest() in message
    assert "fix: pulumi config rm agent-sandbox:controllerManifest" in message


def test_an_edited_vendored_copy_is_refused(tmp_path) -> None:
    # A project copy whose vendored file was changed: same relative path, other bytes.
    edited = tmp_path / versions.AGENT_SANDBOX_MANIFEST_VENDORED
    edited.parent.mkdir(parents=True)
    edited.write_bytes(PINNED_MANIFEST.read_bytes() + b"\n# edited\n")
    with pytest.raises(manifests.ManifestError, match="sha256 .* expected .*git checkout"):
        manifests.read_manifest_text(versions.AGENT_SANDBOX_MANIFEST_VENDORED, tmp_path)


def test_another_url_needs_a_pinned_digest(monkeypatch) -> None:
    body = b"apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"
    asked = _served_by(monkeypatch, body)
    other = "https://github.com/kubernetes-sigs/agent-sandbox/releases/download/v1.0.12/sandbox-with-extensions.yaml"
    with pytest.raises(manifests.ManifestError, match=r"no known sha256.*#sha256="):
        manifests.read_manifest_text(other)
    assert asked == [], "an unverifiable download must not even start"
    digest = hashlib.sha256(body).hexdigest()
    assert manifests.read_manifest_text(f"{other}#sha256={digest}") == body.decode()
    assert asked == [other], "the digest fragment is not part of the request"
    with pytest.raises(manifests.ManifestError, match="expected " + "0" * 64):
        manifests.read_manifest_text(f"{other}#sha256={'0' * 64}")


def test_an_offline_download_fails_in_one_line_naming_the_fix(monkeypatch) -> None:
    _offline(monkeypatch)
    with pytest.raises(manifests.ManifestError) as caught:
        manifests.read_manifest_text(versions.AGENT_SANDBOX_MANIFEST_URL)
    assert "\n" not in str(caught.value) and "pulumi config rm agent-sandbox:controllerManifest" in str(caught.value)


# --- Errors reach the user as one line ----------------------------------------------------


def test_manifest_errors_are_run_errors() -> None:
    # pulumi.RunError is what the language host and the Automation API's inline server print
    # as one `error:` line; any other exception is printed with the Python traceback.
    assert issubclass(manifests.ManifestError, pulumi.RunError)
    assert issubclass(manifests.ManifestError, ValueError)


def test_the_program_stops_with_a_run_error_on_a_missing_manifest(tmp_path) -> None:
    with pytest.raises(pulumi.RunError) as caught:
        run_program("gvisor", {"controllerManifest": str(tmp_path / "absent.yaml")})
    assert "\n" not in str(caught.value) and KEY in str(caught.value)


def test_the_driver_can_check_the_source_before_the_engine(tmp_path, monkeypatch) -> None:
    _offline(monkeypatch)
    shape = manifests.check_manifest_source(versions.AGENT_SANDBOX_MANIFEST_VENDORED, REPO_ROOT)
    assert shape.conversion_webhook and shape.extensions_api_version == versions.EXTENSIONS_API_VERSION
    with pytest.raises(manifests.ManifestError, match="could not be downloaded"):
        manifests.check_manifest_source(versions.AGENT_SANDBOX_MANIFEST_URL, REPO_ROOT)
    with pytest.raises(manifests.ManifestError, match="lacks the CRDs"):
        manifests.check_manifest_source(str(write_manifest([{"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": "x"}}], tmp_path / "m.yaml")))


# --- What the manifest has, detected instead of assumed (v0.5.6 and v1.0.x shapes) ----------


def _container(objects: list[dict]) -> dict:
    return next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_v056_has_a_conversion_webhook_on_9443(release: list[dict]) -> None:
    shape = manifests.release_shape(release)
    assert shape.conversion_webhook
    assert set(shape.conversion_webhook_crds) == set(manifests.EXPECTED_CRDS)
    assert (shape.webhook_service, shape.webhook_port, shape.health_port) == ("agent-sandbox-webhook-service", 9443, 8081)
    assert shape.served["sandboxtemplates.extensions.agents.x-k8s.io"] == ("v1beta1", "v1alpha1")
    assert shape.storage["sandboxwarmpools.extensions.agents.x-k8s.io"] == "v1beta1"
    assert shape.extensions_api_version == "extensions.agents.x-k8s.io/v1beta1"


def test_v1_shape_has_no_webhook_and_is_probed_on_readyz(v1_shaped_objects: list[dict]) -> None:
    shape = manifests.release_shape(v1_shaped_objects)
    assert not shape.conversion_webhook and shape.webhook_port is None and shape.webhook_service is None
    assert shape.served["sandboxes.agents.x-k8s.io"] == ("v1beta1",)
    probe = _container(manifests.adapt_release(v1_shaped_objects, "x/controller:1", "IfNotPresent"))["readinessProbe"]
    assert probe["httpGet"] == {"path": "/readyz", "port": 8081}
    assert "tcpSocket" not in probe


def test_the_webhook_port_follows_the_webhook_service(release: list[dict]) -> None:
    moved = copy.deepcopy(release)
    service = next(o for o in moved if o["kind"] == "Service" and o["metadata"]["name"] == "agent-sandbox-webhook-service")
    service["spec"]["ports"][0]["targetPort"] = "conversion"
    _container(moved)["ports"].append({"containerPort": 10250, "name": "conversion", "protocol": "TCP"})
    assert manifests.release_shape(moved).webhook_port == 10250
    assert _container(manifests.adapt_release(moved, "x/c:1", "Never"))["readinessProbe"]["tcpSocket"] == {"port": 10250}


def test_without_webhook_or_health_port_no_probe_is_invented(v1_shaped_objects: list[dict]) -> None:
    bare = copy.deepcopy(v1_shaped_objects)
    _container(bare)["ports"] = [p for p in _container(bare)["ports"] if p["name"] != "healthz"]
    assert "readinessProbe" not in _container(manifests.adapt_release(bare, "x/c:1", "Never"))
    _container(bare)["args"].append("--health-probe-bind-address=:9440")
    assert manifests.release_shape(bare).health_port == 9440


def _rename_version(objects: list[dict], old: str, new: str) -> list[dict]:
    renamed = copy.deepcopy(objects)
    for crd in (o for o in renamed if o["kind"] == "CustomResourceDefinition"):
        for version in crd["spec"]["versions"]:
            if version["name"] == old:
                version["name"] = new
    return renamed


def test_the_cr_api_version_follows_what_the_manifest_serves(v1_shaped_objects: list[dict]) -> None:
    assert manifests.release_shape(v1_shaped_objects).extensions_api_version == versions.EXTENSIONS_API_VERSION
    only_v1 = _rename_version(v1_shaped_objects, "v1beta1", "v1")
    assert manifests.release_shape(only_v1).extensions_api_version == "extensions.agents.x-k8s.io/v1"


def test_no_common_served_version_is_refused(v1_shaped_objects: list[dict]) -> None:
    split = copy.deepcopy(v1_shaped_objects)
    pool = next(o for o in split if o["metadata"]["name"] == "sandboxwarmpools.extensions.agents.x-k8s.io")
    pool["spec"]["versions"][0]["name"] = "v2"
    with pytest.raises(manifests.ManifestError, match="no API version .* both"):
        manifests.release_shape(split)
