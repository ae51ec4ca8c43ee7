"""Use a deployed stack from Python: an official ``SandboxClient`` (k8s-agent-sandbox) connected
to the stack's router, with its bearer token, through a managed ``kubectl port-forward``.

    from agent_sandbox_pulumi.client import connect

    with connect("gvisor") as client:          # tunnel up, token read from the stack's outputs
        sandbox = client.create_sandbox()      # claims from the stack's warm pool, in its namespace
        print(sandbox.commands.run("python3 -c 'print(6 * 7)'").stdout)
    # sandboxes it created are deleted, the tunnel is stopped

Why a helper: the router requires ``Authorization: Bearer <token>``, and the SDK's own tunnel and
gateway modes cannot send it; the direct mode can, given a URL, which the tunnel provides.

Owns: reading the stack's outputs (Automation API, secrets decrypted), the router tunnel, the
connected client, and ``python -m agent_sandbox_pulumi.client`` (``make connect``): a Python
console (or ``-c CODE``) with ``client`` in scope. The token is never printed."""

from __future__ import annotations

import argparse
import atexit
import code
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from agent_sandbox_pulumi.sandbox_iac import constants

# Where the offline toolchain keeps kubectl and pulumi when they are not on PATH.
TOOL_CACHE_BIN = Path(os.environ.get("CACHE_DIR") or "/var/cache/agent-sandbox-iac") / "bin"
REQUIRED_OUTPUTS = ("namespace", "warmPool", "routerAuthToken")
TUNNEL_READY_SECONDS = 30.0


class ConnectError(RuntimeError):
    """The stack cannot be reached; the message says why and what to do."""


@dataclass(frozen=True)
class StackEndpoint:
    """What a client needs to know about a deployed stack, from its outputs."""

    stack: str
    """Stack name."""
    namespace: str
    """Namespace of the warm pool and the sandboxes."""
    warm_pool: str
    """SandboxWarmPool to claim from."""
    router_token: str = field(repr=False)
    """Router bearer token (never in repr)."""
    router_namespace: str = constants.ROUTER_NAMESPACE
    """Namespace of the router Service."""
    router_service: str = constants.ROUTER_SERVICE_NAME
    """Name of the router Service."""
    router_port: int = constants.ROUTER_PORT
    """Port of the router Service."""
    sandbox_port: int = constants.SANDBOX_PORT
    """Port the sandbox runtime listens on (the router proxies to it)."""
    kube_context: Optional[str] = None
    """kubeconfig context of the stack's cluster; None: the current context."""

    @classmethod
    def from_outputs(cls, stack: str, outputs: Mapping[str, Any]) -> "StackEndpoint":
        missing = [key for key in REQUIRED_OUTPUTS if outputs.get(key) in (None, "")]
        if missing:
            raise ConnectError(f"stack {stack!r} has no output(s) {missing}: is it deployed? (make up STACK={stack})")
        return cls(
            stack=stack,
            namespace=str(outputs["namespace"]),
            warm_pool=str(outputs["warmPool"]),
            router_token=str(outputs["routerAuthToken"]),
            router_namespace=str(outputs.get("routerNamespace") or constants.ROUTER_NAMESPACE),
            router_service=str(outputs.get("routerService") or constants.ROUTER_SERVICE_NAME),
            router_port=int(float(outputs.get("routerPort") or constants.ROUTER_PORT)),
            sandbox_port=int(float(outputs.get("sandboxPort") or constants.SANDBOX_PORT)),
            kube_context=str(outputs.get("kubeContext") or "") or None,
        )


def find_tool(name: str) -> str:
    """``name`` on PATH, else in the offline toolchain's cache, else the bare name."""
    found = shutil.which(name)
    if found:
        return found
    cached = TOOL_CACHE_BIN / name
    return str(cached) if cached.exists() else name


def read_stack_outputs(stack: str, project_dir: os.PathLike[str] | str = ".") -> dict[str, Any]:
    """The outputs of ``stack`` of the project in ``project_dir``, secrets in clear (the router
    token), through the Automation API and the pulumi CLI. The backend is the project's
    (Pulumi.yaml, or PULUMI_BACKEND_URL); the passphrase comes from PULUMI_CONFIG_PASSPHRASE(_FILE),
    empty when neither is set (what the make targets use for local development)."""
    from pulumi import automation as auto

    env = {"PULUMI_SKIP_UPDATE_CHECK": "true"}
    if "PULUMI_CONFIG_PASSPHRASE" not in os.environ and "PULUMI_CONFIG_PASSPHRASE_FILE" not in os.environ:
        env["PULUMI_CONFIG_PASSPHRASE"] = ""
    pulumi_binary = Path(find_tool("pulumi"))
    command = auto.PulumiCommand(root=str(pulumi_binary.resolve().parent.parent)) if pulumi_binary.exists() else None
    try:
        workspace = auto.LocalWorkspace(work_dir=str(Path(project_dir).resolve()), env_vars=env, pulumi_command=command)
        outputs = workspace.stack_outputs(stack)
    except auto.CommandError as error:
        first = next((line for line in str(error).splitlines() if "error:" in line), str(error).splitlines()[0])
        raise ConnectError(f"cannot read the outputs of stack {stack!r} in {project_dir}: {first.strip()}") from None
    return {key: value.value for key, value in outputs.items()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RouterTunnel:
    """``kubectl port-forward`` of the router Service onto ``127.0.0.1``; ``url`` is where it
    listens. A context manager; also stopped at interpreter exit. Runs in its own process group
    so a terminal Ctrl-C reaches the caller, whose cleanup stops it."""

    def __init__(self, endpoint: StackEndpoint, kube_args: Sequence[str] = (), local_port: Optional[int] = None):
        self.local_port = local_port or _free_port()
        self.command = [find_tool("kubectl"), *kube_args, "port-forward", "--address", "127.0.0.1",
                        "-n", endpoint.router_namespace, f"svc/{endpoint.router_service}",
                        f"{self.local_port}:{endpoint.router_port}"]
        self.process: Optional[subprocess.Popen[str]] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def start(self) -> "RouterTunnel":
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        atexit.register(self.close)
        deadline = time.monotonic() + TUNNEL_READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read() if self.process.stdout else ""
                raise ConnectError(f"`{' '.join(self.command)}` exited with {self.process.returncode}: {output.strip()}")
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", self.local_port)) == 0:
                    return self
            time.sleep(0.05)
        self.close()
        raise ConnectError(f"`{' '.join(self.command)}` did not listen within {TUNNEL_READY_SECONDS:.0f}s")

    def close(self) -> None:
        """Stop the tunnel (SIGTERM, then SIGKILL); idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def __enter__(self) -> "RouterTunnel":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _sandbox_client_class() -> type:
    from k8s_agent_sandbox import SandboxClient

    class StackSandboxClient(SandboxClient):  # type: ignore[misc,valid-type]
        """The official client, connected to one stack; ``create_sandbox()`` defaults to the
        stack's warm pool and namespace. ``stack`` holds the endpoint (token hidden from repr)."""

        def __init__(self, stack: StackEndpoint, **kwargs: Any):
            super().__init__(**kwargs)
            self.stack = stack

        def create_sandbox(self, warmpool: Optional[str] = None, namespace: Optional[str] = None, *args: Any,
                           **kwargs: Any) -> Any:
            return super().create_sandbox(warmpool or self.stack.warm_pool, namespace or self.stack.namespace,
                                          *args, **kwargs)

    return StackSandboxClient


@contextlib.contextmanager
def connect(stack: str, project_dir: os.PathLike[str] | str = ".", *, outputs: Optional[Mapping[str, Any]] = None,
            kubeconfig: Optional[str] = None, kube_context: Optional[str] = None) -> Iterator[Any]:
    """A ``SandboxClient`` connected to ``stack`` (a subclass whose ``create_sandbox()`` defaults
    to the stack's warm pool and namespace). ``outputs`` replaces reading them with the pulumi CLI;
    ``kubeconfig``/``kube_context`` override the stack's ``kubeContext`` output. On exit the
    sandboxes the client created are deleted and the tunnel is stopped."""
    from k8s_agent_sandbox.models import SandboxDirectConnectionConfig
    from kubernetes import config as kube_config

    endpoint = StackEndpoint.from_outputs(stack, outputs if outputs is not None else read_stack_outputs(stack, project_dir))
    context = kube_context or endpoint.kube_context
    kube_args = [*(["--kubeconfig", kubeconfig] if kubeconfig else []), *(["--context", context] if context else [])]
    with RouterTunnel(endpoint, kube_args) as tunnel:
        api_client = kube_config.new_client_from_config(config_file=kubeconfig, context=context)
        connection = SandboxDirectConnectionConfig(api_url=tunnel.url, server_port=endpoint.sandbox_port,
                                                   extra_headers={"Authorization": f"Bearer {endpoint.router_token}"})
        client = _sandbox_client_class()(endpoint, connection_config=connection, api_client=api_client)
        try:
            with client:
                yield client
        finally:
            api_client.close()


BANNER = """connected to stack {stack}: router {url} (tunnel), warm pool {pool} in {namespace}
  sandbox = client.create_sandbox()
  sandbox.commands.run("python3 -c 'print(6 * 7)'").stdout
sandboxes created here are deleted when you leave (Ctrl-D)."""


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent_sandbox_pulumi.client",
                                     description="A Python console (or -c CODE) with `client`, a SandboxClient "
                                                 "connected to a deployed stack.")
    parser.add_argument("stack", help="stack name, e.g. gvisor")
    parser.add_argument("--project-dir", default=".", help="the Pulumi project of the stack (default: .)")
    parser.add_argument("-c", dest="code", help="run this Python code with `client` in scope instead of a console")
    args = parser.parse_args(argv)
    try:
        with connect(args.stack, args.project_dir) as client:
            scope = {"client": client, "stack": client.stack}
            if args.code is not None:
                exec(compile(args.code, "<-c>", "exec"), scope)  # noqa: S102 - the user's own code
                return 0
            tunnel_url = client.connection_config.api_url
            code.interact(banner=BANNER.format(stack=args.stack, url=tunnel_url, pool=client.stack.warm_pool,
                                               namespace=client.stack.namespace), local=scope, exitmsg="")
            return 0
    except ConnectError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
