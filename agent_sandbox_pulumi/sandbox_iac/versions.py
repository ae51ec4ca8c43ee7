"""Every pinned version and URL of the project, in one place.

Why these pins: the end-to-end proof runs the real Pulumi engine, which has to be built
offline from Go modules. A plugin version is only usable when the Go module proxy serves the
provider's source at that release, and the Python package must request exactly that plugin
version (otherwise the engine tries to download another one). Checked with `go list -m`:

- pulumi CLI / SDK 3.259.0: `github.com/pulumi/pulumi/pkg/v3@v3.259.0` is served.
- pulumi-kubernetes 4.25.0: the provider module is only served at the pseudo-version of the
  v4.25.0 release commit (4.32.0's is refused), so the PyPI package is pinned to 4.25.0.
- pulumi-docker 5.1.0: the newest release whose Python SDK carries the `Image` resource this
  project uses. Its provider source is not served by the proxy here, so the offline e2e uses the
  "prebuilt" image path (`make images`, see README).
- No pulumi-command: its provider cannot be built offline either, so images are loaded onto the
  nodes by a small dynamic resource (agent_sandbox_pulumi/components/image_loader.py) that needs only the engine.
- agent-sandbox v0.5.6: the release this project was built and proven against (v1beta1 storage,
  conversion webhook, single all-in-one manifest). Its manifest is vendored under agent_sandbox_pulumi/vendor/ (package data)
  so a clone or a pip install has it offline; a download of the release URL must match the same sha256. Upstream's v1.0.x
  (no v1alpha1, no conversion webhook) also works as a source: sandbox_iac/manifests.py reads what a
  manifest has instead of assuming v0.5.6.
"""

from __future__ import annotations

AGENT_SANDBOX_VERSION = "v0.5.6"
AGENT_SANDBOX_MANIFEST_ASSET = "sandbox-with-extensions.yaml"
AGENT_SANDBOX_MANIFEST_URL = (
    "https://github.com/kubernetes-sigs/agent-sandbox/releases/download/"
    f"{AGENT_SANDBOX_VERSION}/{AGENT_SANDBOX_MANIFEST_ASSET}"
)
# sha256 of that release asset; the vendored copy and any download of the URL must match it.
AGENT_SANDBOX_MANIFEST_SHA256 = "1696dbb6faded503149b3994badb599df5dcf24d5985466881784f442dd9c3e5"
# The vendored copy, relative to the package folder (agent_sandbox_pulumi/; manifests.VENDORED_MANIFEST
# is the file): the default source, so `up` and the tests need no network. Apache-2.0, kubernetes-sigs.
AGENT_SANDBOX_MANIFEST_VENDORED = f"vendor/agent-sandbox/{AGENT_SANDBOX_VERSION}/{AGENT_SANDBOX_MANIFEST_ASSET}"
AGENT_SANDBOX_CONTROLLER_IMAGE = (
    f"registry.k8s.io/agent-sandbox/agent-sandbox-controller:{AGENT_SANDBOX_VERSION}"
)

# API group/versions of the custom resources this project declares.
SANDBOX_API_GROUP = "agents.x-k8s.io"
EXTENSIONS_API_GROUP = "extensions.agents.x-k8s.io"
EXTENSIONS_API_VERSION = f"{EXTENSIONS_API_GROUP}/v1beta1"

# KEDA, the autoscaler behind `warmPoolAutoscaling: keda` (a ScaledObject on the SandboxWarmPool's
# /scale subresource). With `installKeda` the stack installs this release from the vendored
# manifest (operator + external-metrics API server, no admission webhooks); offline, `make up`
# builds both images from the Go module github.com/kedacore/keda/v2 (e2e/toolchain/cluster.sh keda).
KEDA_VERSION = "v2.21.0"
KEDA_MANIFEST_VENDORED = f"vendor/keda/{KEDA_VERSION}/keda-minimal.yaml"
KEDA_OPERATOR_IMAGE = f"ghcr.io/kedacore/keda:{KEDA_VERSION.lstrip('v')}"
KEDA_METRICS_IMAGE = f"ghcr.io/kedacore/keda-metrics-apiserver:{KEDA_VERSION.lstrip('v')}"
KEDA_API_VERSION = "keda.sh/v1alpha1"

# Kata Containers' kata-deploy Helm chart (installs the kata-* RuntimeClasses).
KATA_DEPLOY_CHART = "kata-deploy"
KATA_DEPLOY_CHART_VERSION = "3.22.0"
KATA_DEPLOY_CHART_REPO = "oci://ghcr.io/kata-containers/kata-deploy-charts"

# Default base image of our runtime and router images (users with a registry); offline
# builds pass a locally imported debootstrap image instead (images/base/).
DEFAULT_BASE_IMAGE = "python:3.11-slim"

PYTHON_PACKAGE_PINS = {
    "pulumi": "3.259.0",
    "pulumi-kubernetes": "4.25.0",
    "pulumi-docker": "5.1.0",
    "pulumi-policy": "1.21.0",
    "k8s-agent-sandbox": "1.0.8",
}
