"""Both images built on a real Docker engine with no registry pull, then run hardened on loopback.

The module starts the engine with e2e/docker-engine.sh when none answers (installing Debian's
docker.io if needed) and builds the minimal runtime variant plus the router with
images/base/build-images.sh, exactly what `make images IMAGES_VARIANT=minimal` does. Containers run
with a read-only root filesystem, tmpfs /tmp, a writable /app and uid 1000, published on 127.0.0.1
only. Cold (debootstrap + wheel downloads) takes several minutes; warm runs reuse $CACHE_DIR.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = REPO_ROOT / "e2e" / "docker-engine.sh"
BUILD_SCRIPT = REPO_ROOT / "images" / "base" / "build-images.sh"
BUILD_TIMEOUT_SECONDS = 45 * 60
READY_TIMEOUT_SECONDS = 60
ROUTER_TOKEN = "image-test-" + uuid.uuid4().hex
PAIRED_ROUTER_PORT = 8081
IMAGE_REF = re.compile(r"^agent-sandbox/(runtime|router):[0-9a-f]{12}$")
# CI builds the minimal runtime; IMAGES_TEST_VARIANT=full also checks the data stack in the default image.
VARIANT = os.environ.get("IMAGES_TEST_VARIANT", "minimal")

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_SECONDS + 600)


def _why_no_engine_possible() -> str | None:
    """A reason this machine cannot run a Docker engine at all, or None when it can."""
    if sys.platform != "linux":
        return f"a Docker engine needs Linux; this is {sys.platform}"
    if os.geteuid() != 0:
        return "installing and starting dockerd needs root (run the suite as root, as CI does)"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no cgroup filesystem at /sys/fs/cgroup, so containers cannot run here"
    for tool in ("bash", "flock", "setsid"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if shutil.which("dockerd") is None and shutil.which("apt-get") is None:
        return "dockerd is absent and there is no apt-get to install Debian's docker.io"
    return None


@dataclass
class Engine:
    """The docker client that talks to the running engine."""

    client: str

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a docker CLI command and return its completed process."""
        return subprocess.run([self.client, *args], capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def engine() -> Engine:
    reason = _why_no_engine_possible()
    if reason:
        print(f"SKIP test_image_build: {reason}")
        pytest.skip(reason)
    started = subprocess.run(["bash", str(ENGINE_SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    print(started.stderr)
    assert started.returncode == 0, f"e2e/docker-engine.sh start failed:\n{started.stderr}"
    client = started.stdout.strip().splitlines()[-1].removeprefix("DOCKER=")
    return Engine(client)


@pytest.fixture(scope="module")
def images(engine: Engine) -> dict[str, str]:
    """Build both images (runtime variant VARIANT); returns {"runtime": ref, "router": ref}."""
    start = time.monotonic()
    build = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--variant", VARIANT],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, cwd=REPO_ROOT,
        env={**os.environ, "PY": sys.executable},
    )
    print(build.stderr)
    print(f"image build took {time.monotonic() - start:.0f}s")
    assert build.returncode == 0, f"images/base/build-images.sh failed:\n{build.stderr[-4000:]}"
    last_two = build.stdout.strip().splitlines()[-2:]
    assert [line.split("=", 1)[0] for line in last_two] == ["runtime", "router"], build.stdout
    return dict(line.split("=", 1) for line in last_two)


class Container:
    """A detached container published on 127.0.0.1; removed on exit."""

    def __init__(self, engine: Engine, image: str, ports: list[int], extra: list[str]) -> None:
        self.engine = engine
        self.name = f"image-test-{uuid.uuid4().hex[:10]}"
        publish = [arg for port in ports for arg in ("--publish", f"127.0.0.1::{port}")]
        self.engine.run("run", "--detach", "--name", self.name, "--read-only", "--tmpfs", "/tmp",
                        "--user", "1000:1000", *publish, *extra, image)
        self.urls = {port: f"http://{self.engine.run('port', self.name, f'{port}/tcp').stdout.split()[0]}"
                     for port in ports}
        self.url = self.urls[ports[0]] if ports else ""

    def wait_ready(self, path: str) -> requests.Response:
        """Poll ``path`` until it answers 200; fail with the container log otherwise."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        last_error = "no attempt"
        while time.monotonic() < deadline:
            try:
                response = requests.get(self.url + path, timeout=5)
                if response.status_code == 200:
                    return response
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            except requests.RequestException as exc:
                last_error = str(exc)
            time.sleep(0.3)
        pytest.fail(f"{self.name} not ready after {READY_TIMEOUT_SECONDS}s ({last_error}); log:\n{self.logs()}")

    def logs(self) -> str:
        """Container stdout+stderr."""
        result = self.engine.run("logs", self.name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        """Force-remove the container."""
        self.engine.run("rm", "--force", self.name, check=False)


@pytest.fixture(scope="module")
def runtime(engine: Engine, images: dict[str, str]) -> Iterator[Container]:
    # Also publishes PAIRED_ROUTER_PORT for the router that shares this container's network namespace.
    container = Container(engine, images["runtime"], [8888, PAIRED_ROUTER_PORT],
                          ["--tmpfs", "/app:uid=1000,gid=1000,mode=0750"])
    try:
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="module")
def router(engine: Engine, images: dict[str, str]) -> Iterator[Container]:
    # outside a cluster: the legacy DNS resolution (watch mode needs the Kubernetes API)
    container = Container(engine, images["router"], [8080], ["--env", f"ROUTER_AUTH_TOKEN={ROUTER_TOKEN}",
                                                               "--env", "ROUTER_RESOLVER=dns"])
    try:
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="module")
def paired_router(engine: Engine, images: dict[str, str], runtime: Container) -> Iterator[str]:
    """A router in the runtime container's network namespace; yields its published URL.

    Sharing the namespace makes the runtime reachable at 127.0.0.1:8888 without any bridge
    forwarding (the engine runs without iptables); loopback pod IPs are allowed for that only.
    """
    container = Container(engine, images["router"], [], [
        "--network", f"container:{runtime.name}",
        "--env", f"ROUTER_AUTH_TOKEN={ROUTER_TOKEN}",
        "--env", f"ROUTER_PORT={PAIRED_ROUTER_PORT}",
        "--env", "ROUTER_ALLOW_LOOPBACK_POD_IP=true",
        "--env", "ROUTER_RESOLVER=dns",
    ])
    container.url = runtime.urls[PAIRED_ROUTER_PORT]
    try:
        container.wait_ready("/healthz")
        yield container.url
    finally:
        container.remove()


def execute(runtime: Container, command: str) -> dict[str, object]:
    """POST /execute and return the JSON body (asserting HTTP 200)."""
    response = requests.post(runtime.url + "/execute", json={"command": command}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_refs_are_content_tagged(images: dict[str, str]) -> None:
    for name, ref in images.items():
        assert IMAGE_REF.match(ref), f"{name} ref {ref!r} is not agent-sandbox/{name}:<12 hex content tag>"


def test_image_config_is_non_root_with_expected_ports(engine: Engine, images: dict[str, str]) -> None:
    for name, port in (("runtime", "8888/tcp"), ("router", "8080/tcp")):
        user = engine.run("image", "inspect", "--format", "{{.Config.User}}", images[name]).stdout.strip()
        ports = engine.run("image", "inspect", "--format", "{{json .Config.ExposedPorts}}", images[name]).stdout
        assert user == "1000:1000", f"{name} image runs as {user!r}"
        assert port in ports, f"{name} image exposes {ports.strip()}"


def test_runtime_health(runtime: Container) -> None:
    body = runtime.wait_ready("/").json()
    assert body.get("status") == "ok", body


def test_runtime_executes_as_uid_1000(runtime: Container) -> None:
    runtime.wait_ready("/")
    result = execute(runtime, "python3 -c 'import os; print(os.getuid(), os.getcwd(), 6 * 7)'")
    assert result["exit_code"] == 0, result
    assert result["stdout"] == "1000 /app 42\n", result


def test_runtime_root_is_read_only_and_app_writable(runtime: Container) -> None:
    runtime.wait_ready("/")
    denied = execute(runtime, "touch /opt/venv/written-by-test")
    assert denied["exit_code"] != 0 and "Read-only file system" in str(denied["stderr"]), denied
    allowed = execute(runtime, "touch /app/written-by-test")
    assert allowed["exit_code"] == 0, allowed
    assert requests.get(runtime.url + "/exists/written-by-test", timeout=10).json().get("exists") is True


def test_runtime_data_stack_in_full_variant(runtime: Container) -> None:
    if VARIANT != "full":
        pytest.skip(f"runtime variant {VARIANT!r} has no data stack (IMAGES_TEST_VARIANT=full checks it)")
    runtime.wait_ready("/")
    script = ("import numpy as np, pandas as pd, lightgbm as lgb; from sklearn.linear_model import LogisticRegression; "
              "x = np.arange(40.0).reshape(20, 2); y = (x[:, 0] > 19).astype(int); "
              "print(pd.DataFrame(x).shape, LogisticRegression().fit(x, y).score(x, y), "
              "lgb.LGBMClassifier(n_estimators=5, min_child_samples=2, verbose=-1).fit(x, y).predict(x).sum())")
    result = execute(runtime, f"python -c {shlex.quote(script)}")
    assert result["exit_code"] == 0, result
    assert result["stdout"].startswith("(20, 2) 1.0 "), result


def test_router_health(router: Container) -> None:
    assert router.wait_ready("/healthz").status_code == 200


def test_router_refuses_unauthenticated_request(router: Container) -> None:
    router.wait_ready("/healthz")
    headers = {"X-Sandbox-ID": "some-sandbox", "X-Sandbox-Namespace": "default"}
    missing = requests.post(router.url + "/execute", json={"command": "id"}, headers=headers, timeout=10)
    wrong = requests.post(router.url + "/execute", json={"command": "id"},
                          headers={**headers, "Authorization": "Bearer not-the-token"}, timeout=10)
    assert missing.status_code == 401, missing.text
    assert wrong.status_code == 401, wrong.text
    assert "detail" in missing.json()


def test_official_sdk_through_router_image_to_runtime_image(runtime: Container, paired_router: str) -> None:
    from tests.component.sdk_harness import make_sdk_sandbox

    runtime.wait_ready("/")
    sandbox = make_sdk_sandbox(paired_router, 8888, token=ROUTER_TOKEN, sandbox_id="image-test")
    result = sandbox.commands.run("echo through both images")
    assert (result.exit_code, result.stdout) == (0, "through both images\n"), result
    sandbox.files.write("nested/dir/data.bin", b"\x00\x01 bytes")
    assert sandbox.files.read("nested/dir/data.bin") == b"\x00\x01 bytes"
    assert sandbox.files.exists("nested/dir/data.bin")


@pytest.fixture(scope="module")
def python_router_image(engine: Engine, images: dict[str, str]) -> str:
    """The Python router's image (`--router python`; the runtime is already built, so it is reused)."""
    build = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--variant", VARIANT, "--router", "python"],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, cwd=REPO_ROOT,
        env={**os.environ, "PY": sys.executable},
    )
    assert build.returncode == 0, f"build-images.sh --router python failed:\n{build.stderr[-4000:]}"
    refs = dict(line.split("=", 1) for line in build.stdout.strip().splitlines()[-2:])
    assert refs["runtime"] == images["runtime"], "the runtime was rebuilt for a router choice"
    assert refs["router"] != images["router"], "both router implementations gave the same image"
    return refs["router"]


def test_compiled_router_image_holds_only_the_binary(engine: Engine, images: dict[str, str]) -> None:
    """The default router image is the static binary on an empty base: one layer, a few MB."""
    size = int(engine.run("image", "inspect", "--format", "{{.Size}}", images["router"]).stdout.strip())
    entry = engine.run("image", "inspect", "--format", "{{json .Config.Entrypoint}}", images["router"]).stdout
    assert size < 20_000_000, f"compiled router image is {size / 1e6:.1f} MB"
    assert "/sandbox-router" in entry, entry


def test_python_router_image_is_still_buildable_and_serves(engine: Engine, python_router_image: str) -> None:
    """`routerImplementation: python` keeps working: its image answers health and refuses no token."""
    container = Container(engine, python_router_image, [8080], ["--env", f"ROUTER_AUTH_TOKEN={ROUTER_TOKEN}",
                                                                 "--env", "ROUTER_RESOLVER=dns"])
    try:
        assert container.wait_ready("/healthz").status_code == 200
        missing = requests.post(container.url + "/execute", json={"command": "id"}, timeout=10)
        assert missing.status_code == 401
    finally:
        container.remove()
