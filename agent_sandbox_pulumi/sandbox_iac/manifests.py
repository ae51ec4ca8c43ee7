"""The agent-sandbox controller release manifest: where it comes from, whether it is the one we
trust, what it contains, and how the program adapts it.

Owns: reading a source (the vendored pinned copy by default, a local file or a release URL) and
checking its sha256; parsing; detecting the release's shape (conversion webhook or not, health
port, served/stored API versions) instead of assuming v0.5.6; the adaptations (image,
``--extensions``, a readiness probe that matches that shape); ``check_manifest_source`` for
callers that want every manifest problem before the engine starts.

Every error is a ``ManifestError``: one line naming ``agent-sandbox:controllerManifest``, the
problem and the fix."""

from __future__ import annotations

import copy
import functools
import hashlib
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import pulumi
import yaml

from agent_sandbox_pulumi.sandbox_iac import constants, controller_flags, versions

CONFIG_KEY = f"{constants.PROJECT_NAME}:controllerManifest"
# The installed package (agent_sandbox_pulumi/): the vendored release ships in it as package data,
# so a pip-installed copy reads it exactly like a checkout does.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
VENDORED_MANIFEST = PACKAGE_ROOT / versions.AGENT_SANDBOX_MANIFEST_VENDORED
# Release URLs whose digest we know; any other URL must carry its own (DIGEST_FRAGMENT).
KNOWN_SHA256 = {versions.AGENT_SANDBOX_MANIFEST_URL: versions.AGENT_SANDBOX_MANIFEST_SHA256}
DIGEST_FRAGMENT = "#sha256="
USE_VENDORED = f"pulumi config rm {CONFIG_KEY}"

CRD_KIND = "CustomResourceDefinition"
# Objects every other object of the release depends on: they are applied first.
FOUNDATION_KINDS = ("Namespace", CRD_KIND)
EXPECTED_CRDS = (
    "sandboxes.agents.x-k8s.io",
    "sandboxtemplates.extensions.agents.x-k8s.io",
    "sandboxclaims.extensions.agents.x-k8s.io",
    "sandboxwarmpools.extensions.agents.x-k8s.io",
)
# The CRDs whose objects the program declares (SandboxTemplate, SandboxWarmPool): they must
# serve one common API version, which the program then uses.
DECLARED_CRDS = ("sandboxtemplates.extensions.agents.x-k8s.io", "sandboxwarmpools.extensions.agents.x-k8s.io")
# controller-runtime's defaults, used when the manifest names a webhook but not its port.
DEFAULT_WEBHOOK_PORT = 9443
WEBHOOK_PORT_NAME = "webhook"
HEALTH_PORT_NAME = "healthz"
HEALTH_PROBE_FLAG = "--health-probe-bind-address"
READYZ_PATH = "/readyz"
# v0.5.6's switch for CRDs without conversion (see storage_versions_only).
DISABLE_WEBHOOK_FLAG = "--enable-webhook=false"
PROBE_TIMING = {"periodSeconds": 2, "failureThreshold": 30}


class ManifestError(pulumi.RunError, ValueError):
    """The controller manifest is missing, unreadable, unverified or not a release we can install.

    A ``pulumi.RunError`` because that is the one exception both the Python language host and
    the Automation API's inline program server print as a single ``error:`` line; anything else
    (and ``sys.exit`` in the inline server) reaches the user wrapped in a Python traceback."""


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def _split_digest(source: str) -> tuple[str, Optional[str]]:
    """(URL without fragment, the ``#sha256=`` digest it pins, if any)."""
    location, marker, digest = source.partition(DIGEST_FRAGMENT)
    if not marker:
        return source, None
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ManifestError(
            f"{CONFIG_KEY} = {source!r} has a malformed digest {digest!r}: expected 64 lowercase hex digits "
            f"(fix: {location}{DIGEST_FRAGMENT}<sha256 of the release asset>)"
        )
    return location, digest


def _verify(data: bytes, expected: str, source: str, fix: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ManifestError(
            f"{CONFIG_KEY} = {source!r} is refused: its sha256 is {actual}, expected {expected} "
            f"(not the release this project pins; fix: {fix})"
        )


def _download(source: str) -> bytes:
    location, pinned = _split_digest(source)
    expected = pinned or KNOWN_SHA256.get(location)
    if expected is None:
        # Refused before any byte is fetched: an unverifiable download is a supply-chain hole.
        raise ManifestError(
            f"{CONFIG_KEY} = {source!r} has no known sha256, so a download cannot be verified "
            f"(fix: pin the digest you checked, {location}{DIGEST_FRAGMENT}<sha256>, or download and check it "
            f"yourself and set the key to the local file)"
        )
    try:
        with urllib.request.urlopen(location, timeout=60) as response:  # noqa: S310 (digest-checked)
            data = response.read()
    except OSError as error:
        raise ManifestError(
            f"{CONFIG_KEY} = {source!r} could not be downloaded ({error}); the vendored copy needs no network "
            f"(fix: {USE_VENDORED}, or set the key to a local copy of the release's sandbox-with-extensions.yaml)"
        ) from error
    fix = f"{USE_VENDORED} to use the vendored copy, or pin the digest you trust: {location}{DIGEST_FRAGMENT}<sha256>"
    _verify(data, expected, source, fix)
    return data


def _is_vendored(path: Path) -> bool:
    """True for the vendored pinned copy, in this checkout or in any project laid out like it."""
    relative = Path(versions.AGENT_SANDBOX_MANIFEST_VENDORED)
    return path.resolve() == VENDORED_MANIFEST.resolve() or path.parts[-len(relative.parts):] == relative.parts


def read_manifest_text(source: str, base_dir: Optional[Path] = None) -> str:
    """Text of the manifest at an http(s) URL or a local path (relative ones from ``base_dir``).

    Downloads must match a known sha256 (the pinned release's, or a ``#sha256=`` on the URL); the
    vendored copy must match the pinned one. Other local files are the user's own choice."""
    if _is_url(source):
        return _download(source).decode()
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file() and source == versions.AGENT_SANDBOX_MANIFEST_VENDORED:
        # The default names the copy shipped in this package; a consumer project has no vendor/.
        path = VENDORED_MANIFEST
    if not path.is_file():
        raise ManifestError(
            f"{CONFIG_KEY} = {source!r} is not a readable file "
            f"(fix: {USE_VENDORED} for the vendored copy, or set it to a local sandbox-with-extensions.yaml)"
        )
    data = path.read_bytes()
    if _is_vendored(path):
        _verify(data, versions.AGENT_SANDBOX_MANIFEST_SHA256, source,
                f"restore the vendored release: git checkout -- {VENDORED_MANIFEST.relative_to(PACKAGE_ROOT.parent)}, "
                "or reinstall the package")
    return data.decode()


def parse_manifest(text: str) -> list[dict[str, Any]]:
    """Every Kubernetes object of a multi-document YAML text, empty documents dropped."""
    try:
        objects = [doc for doc in yaml.safe_load_all(text) if doc]
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise ManifestError(f"{CONFIG_KEY}: the controller manifest is not valid YAML ({detail:.200})") from error
    for obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
            raise ManifestError(f"controller manifest holds a document that is not a Kubernetes object: {obj!r:.120}")
    crds = {o["metadata"]["name"] for o in objects if o["kind"] == CRD_KIND}
    missing = [name for name in EXPECTED_CRDS if name not in crds]
    if missing:
        raise ManifestError(f"controller manifest lacks the CRDs {missing}: is it agent-sandbox's sandbox-with-extensions.yaml?")
    return objects


def served_versions(crd: dict[str, Any]) -> list[str]:
    """API versions a CRD serves."""
    return [v["name"] for v in crd["spec"]["versions"] if v.get("served")]


@dataclass(frozen=True)
class ReleaseShape:
    """What a controller release manifest has, read from it rather than assumed."""

    conversion_webhook_crds: tuple[str, ...]
    """CRDs that convert between their versions through a webhook (all four in v0.5.6, none in v1.0.x)."""
    webhook_service: Optional[str]
    """The Service that conversion webhook points at, if the manifest ships it."""
    webhook_port: Optional[int]
    """Container port the webhook listens on; None without a conversion webhook."""
    health_port: Optional[Union[int, str]]
    """Container port of the controller's /healthz and /readyz endpoints, if the manifest names one."""
    served: Mapping[str, tuple[str, ...]]
    """API versions each CRD serves."""
    storage: Mapping[str, str]
    """The storage version of each CRD."""
    extensions_api_version: str
    """``group/version`` the program declares SandboxTemplate and SandboxWarmPool with."""

    @property
    def conversion_webhook(self) -> bool:
        return bool(self.conversion_webhook_crds)


def _controller_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == constants.CONTROLLER_DEPLOYMENT:
            return obj["spec"]["template"]["spec"]["containers"][0]
    raise ManifestError(f"controller manifest has no Deployment {constants.CONTROLLER_DEPLOYMENT!r}")


def _container_port(container: dict[str, Any], name: str) -> Optional[int]:
    return next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == name), None)


def _webhook_port(objects: list[dict[str, Any]], container: dict[str, Any], crds: list[dict[str, Any]]) -> tuple[Optional[str], int]:
    """(webhook Service in the manifest, the container port behind it)."""
    client = crds[0]["spec"]["conversion"].get("webhook", {}).get("clientConfig", {})
    wanted = client.get("service") or {}
    service = next((o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == wanted.get("name")), None)
    if service is not None:
        ports = service["spec"].get("ports") or []
        port = next((p for p in ports if p.get("port") == wanted.get("port", 443)), ports[0] if ports else None)
        target = (port or {}).get("targetPort")
        if isinstance(target, int):
            return service["metadata"]["name"], target
        if isinstance(target, str) and _container_port(container, target) is not None:
            return service["metadata"]["name"], _container_port(container, target)
    return (service["metadata"]["name"] if service else None), _container_port(container, WEBHOOK_PORT_NAME) or DEFAULT_WEBHOOK_PORT


def _health_port(container: dict[str, Any]) -> Optional[int]:
    named = _container_port(container, HEALTH_PORT_NAME)
    if named is not None:
        return named
    for arg in container.get("args") or []:
        if arg.startswith(f"{HEALTH_PROBE_FLAG}="):
            port = arg.rpartition(":")[2]
            if port.isdigit():
                return int(port)
    return None


def _extensions_api_version(crds: Mapping[str, dict[str, Any]]) -> str:
    """The pinned API version while the manifest serves it; else the one version both declared
    CRDs serve and store (a release that graduated them), else a clear refusal."""
    group, _, pinned = versions.EXTENSIONS_API_VERSION.partition("/")
    served = [set(served_versions(crds[name])) for name in DECLARED_CRDS]
    if all(pinned in s for s in served):
        return versions.EXTENSIONS_API_VERSION
    common = set.intersection(*served)
    stored = {v["name"] for name in DECLARED_CRDS for v in crds[name]["spec"]["versions"] if v.get("storage")}
    choice = sorted(common & stored) or sorted(common)
    if not choice:
        raise ManifestError(
            f"{CONFIG_KEY}: the controller manifest serves no API version for both SandboxTemplate and SandboxWarmPool "
            f"({dict(zip(DECLARED_CRDS, map(sorted, served)))}); fix: use a release that serves {pinned} ({USE_VENDORED})"
        )
    return f"{group}/{choice[0]}"


def release_shape(objects: list[dict[str, Any]]) -> ReleaseShape:
    """What the release in ``objects`` (``parse_manifest``'s result) has."""
    crds = {o["metadata"]["name"]: o for o in objects if o["kind"] == CRD_KIND}
    container = _controller_container(objects)
    converting = [crd for crd in crds.values() if (crd["spec"].get("conversion") or {}).get("strategy") == "Webhook"]
    service, port = _webhook_port(objects, container, converting) if converting else (None, None)
    return ReleaseShape(
        conversion_webhook_crds=tuple(crd["metadata"]["name"] for crd in converting),
        webhook_service=service,
        webhook_port=port,
        health_port=_health_port(container),
        served={name: tuple(served_versions(crd)) for name, crd in crds.items()},
        storage={name: next((v["name"] for v in crd["spec"]["versions"] if v.get("storage")), "") for name, crd in crds.items()},
        extensions_api_version=_extensions_api_version(crds),
    )


def storage_versions_only(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The release with every CRD that converts through a webhook serving its storage version
    only, with no conversion (``strategy: None``); the webhook's Service dropped and the
    controller told not to run its webhook server (``--enable-webhook=false``, what v0.5.6 asks
    for CRDs without conversion). A release without a conversion webhook comes back unchanged.

    Why: on v0.5.6 the API server calls the conversion webhook (an HTTPS round trip to the
    controller pod, JSON both ways) on reads and writes of objects in the storage version too,
    several times per claim; only clients of the older version (v1alpha1) need it."""
    shape = release_shape(objects)
    if not shape.conversion_webhook:
        return copy.deepcopy(objects)
    converting = set(shape.conversion_webhook_crds)
    adapted = []
    for obj in copy.deepcopy(objects):
        if obj["kind"] == "Service" and obj["metadata"]["name"] == shape.webhook_service:
            continue
        if obj["kind"] == CRD_KIND and obj["metadata"]["name"] in converting:
            obj["spec"]["versions"] = [v for v in obj["spec"]["versions"] if v.get("storage")]
            obj["spec"]["conversion"] = {"strategy": "None"}
        adapted.append(obj)
    container = _controller_container(adapted)
    args = container.setdefault("args", [])
    if DISABLE_WEBHOOK_FLAG not in args:
        args.append(DISABLE_WEBHOOK_FLAG)
    container["ports"] = [p for p in container.get("ports") or [] if p.get("name") != WEBHOOK_PORT_NAME]
    return adapted


def readiness_probe(shape: ReleaseShape) -> Optional[dict[str, Any]]:
    """The probe that makes "Available" mean "custom resources can be applied now".

    With a conversion webhook every CR write goes through it, so the webhook port must accept
    connections. Without one (v1.0.x) the webhook port is never opened; the controller's own
    /readyz is the signal. A manifest naming neither gets no invented probe."""
    if shape.conversion_webhook:
        return {"tcpSocket": {"port": shape.webhook_port}, **PROBE_TIMING}
    if shape.health_port is not None:
        return {"httpGet": {"path": READYZ_PATH, "port": shape.health_port}, **PROBE_TIMING}
    return None


def adapt_release(objects: list[dict[str, Any]], controller_image: str, image_pull_policy: str,
                  flags: Optional[Mapping[str, str]] = None) -> list[dict[str, Any]]:
    """The release objects with our image, ``--extensions`` guaranteed and a readiness probe that
    fits the release (``readiness_probe``); a probe the release ships itself is kept.

    The probe matters: the release's Deployment has none, so "Available" would not mean the
    controller can take custom resources, and those applied right after would fail."""
    adapted = copy.deepcopy(objects)
    probe = readiness_probe(release_shape(adapted))
    container = _controller_container(adapted)
    container["image"] = controller_image
    container["imagePullPolicy"] = image_pull_policy
    args = container.setdefault("args", [])
    if constants.EXTENSIONS_FLAG not in args:
        args.append(constants.EXTENSIONS_FLAG)
    if flags:
        container["args"] = controller_flags.merge_arguments(args, flags)
    if probe is not None:
        container.setdefault("readinessProbe", probe)
    return adapted


def split_foundation(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Namespace and CRDs, everything else): the first group must exist before the second."""
    foundation = [o for o in objects if o["kind"] in FOUNDATION_KINDS]
    workload = [o for o in objects if o["kind"] not in FOUNDATION_KINDS]
    return foundation, workload


def resolve_source(source: Optional[str], base_dir: Optional[Path] = None) -> str:
    """``source`` as a component takes it: a URL as it is, a relative path made absolute against
    ``base_dir`` (the project, as config paths are relative to it), the vendored default (or
    None) as the package's own copy, so the component reads the same file from any cwd."""
    if not source or source == versions.AGENT_SANDBOX_MANIFEST_VENDORED:
        return str(VENDORED_MANIFEST)
    if _is_url(source):
        return source
    path = Path(source).expanduser()
    return str(path if path.is_absolute() or base_dir is None else base_dir / path)


@functools.lru_cache(maxsize=8)
def _load_cached(source: str, fingerprint: str) -> tuple[dict[str, Any], ...]:
    del fingerprint  # only part of the cache key
    return tuple(parse_manifest(read_manifest_text(source)))


def load_release(source: Optional[str] = None) -> list[dict[str, Any]]:
    """The parsed objects of a release manifest (default: the vendored copy), read, verified and
    parsed once per process and file version: the program checks the manifest before declaring
    anything, and the controller component reads it again. Callers must not mutate the objects
    (``adapt_release`` works on a copy)."""
    location = resolve_source(source)
    fingerprint = ""
    if not _is_url(location) and Path(location).is_file():
        stat = Path(location).stat()
        fingerprint = f"{stat.st_mtime_ns}:{stat.st_size}"
    return list(_load_cached(location, fingerprint))


def check_manifest_source(source: str, base_dir: Optional[Path] = None) -> ReleaseShape:
    """Every check the program makes on the manifest, for a caller that runs before the engine
    (the driver): read (download + sha256), parse, shape. Raises ``ManifestError`` (one line)."""
    return release_shape(parse_manifest(read_manifest_text(source, base_dir)))
