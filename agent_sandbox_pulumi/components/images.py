"""Runtime and router images: built with pulumi-docker (or taken prebuilt) under
content-derived tags, then made available to the cluster's nodes.

Owns: ``ImagesArgs`` and ``SandboxImages`` (the only module that needs pulumi-docker, installed
with the package's ``images`` extra), plus the load-command builders."""

from pathlib import Path
from typing import NotRequired, Optional, TypedDict

import pulumi
import pulumi_docker as docker

from agent_sandbox_pulumi.components.image_loader import ImageLoad
from agent_sandbox_pulumi.components.options import child_options
from agent_sandbox_pulumi.sandbox_iac import versions
from agent_sandbox_pulumi.sandbox_iac.content_tag import content_tag

LOCAL_REPOSITORIES = {"runtime": "agent-sandbox/runtime", "router": "agent-sandbox/router"}
# The build context of each router implementation, under images_dir.
ROUTER_CONTEXTS = {"compiled": "router-go", "python": "router"}


class ImagesArgs(TypedDict):
    """Inputs of SandboxImages (plain values: they decide what is built and how it is loaded)."""

    build_mode: str
    """``docker`` builds with pulumi-docker; ``prebuilt`` uses ``prebuilt_runtime``/``prebuilt_router``."""
    load_strategy: str
    """``kind`` | ``minikube`` | ``containerd`` | ``registry`` | ``preloaded``: how nodes get the images."""
    images_dir: NotRequired[str]
    """Folder holding the ``runtime/``, ``router-go/`` and ``router/`` build contexts (each with a
    Dockerfile); needed with ``build_mode: docker``."""
    router_implementation: NotRequired[str]
    """``compiled`` (default: the ``router-go/`` context) or ``python`` (``router/``)."""
    cluster_name: NotRequired[str]
    """KIND cluster or minikube profile the images are loaded into (``kind``/``minikube`` strategies)."""
    base_image: NotRequired[str]
    """BASE_IMAGE build argument of both Dockerfiles; default ``python:3.11-slim``."""
    runtime_variant: NotRequired[str]
    """VARIANT build argument of the runtime image: ``full`` (default) or ``minimal``."""
    registry: NotRequired[str]
    """Registry prefix the images are pushed to (``registry`` strategy only)."""
    prebuilt_runtime: NotRequired[str]
    """Runtime image ref for the ``prebuilt`` mode (e.g. printed by ``make images``)."""
    prebuilt_router: NotRequired[str]
    """Router image ref for the ``prebuilt`` mode."""
    containerd_address: NotRequired[str]
    """containerd socket of the node for the ``containerd`` strategy (default: ctr's own default)."""


def pushed_ref(registry: str, local_ref: str) -> str:
    """Where a local image goes in ``registry``: its last path part and tag under the prefix."""
    return f"{registry.rstrip('/')}/{local_ref.rsplit('/', 1)[-1]}"


def load_command(strategy: str, cluster_name: str, image_ref: str,
                 containerd_address: Optional[str] = None, push_to: Optional[str] = None) -> Optional[str]:
    """Shell command that puts a locally built image on the cluster's nodes (None: nothing to do).
    ``push_to``: with the ``registry`` strategy, the ref a prebuilt local image is pushed as."""
    if strategy == "registry" and push_to:
        return f"docker tag {image_ref} {push_to} && docker push {push_to}"
    if strategy == "kind":
        return f"kind load docker-image --name {cluster_name} {image_ref}"
    if strategy == "minikube":
        return f"minikube image load --profile {cluster_name} {image_ref}"
    if strategy == "containerd":
        address = f" --address {containerd_address}" if containerd_address else ""
        return f"docker save {image_ref} | ctr{address} -n k8s.io images import -"
    return None


class SandboxImages(pulumi.ComponentResource):
    """Builds (or adopts) the runtime and router images and loads them onto the nodes.

    Outputs (registered camelCase):
      runtime_image: image ref the SandboxTemplate uses (content-derived tag).
      router_image: image ref the router Deployment uses (content-derived tag).
    Both carry a dependency on the load onto the nodes: whatever takes them as an input waits
    until the image is there. Their values stay known during a preview (the load's URN, not its
    id, carries the dependency), so the policy pack still sees the refs.
    """

    runtime_image: pulumi.Output[str]
    router_image: pulumi.Output[str]

    def __init__(self, name: str, args: ImagesArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("agent-sandbox:index:SandboxImages", name, None, opts)
        refs: dict[str, pulumi.Output[str]] = {}
        loads: list[pulumi.Resource] = []
        strategy = args["load_strategy"]
        registry = args.get("registry")
        for image in ("runtime", "router"):
            push_to: Optional[str] = None
            if args["build_mode"] == "prebuilt":
                local = args.get(f"prebuilt_{image}") or ""
                if not local:
                    raise ValueError(f"SandboxImages with build_mode prebuilt needs prebuilt_{image}")
                trigger: pulumi.Input[str] = local
                built: list[pulumi.Resource] = []
                # A local image and a registry to push to: the nodes pull the pushed ref.
                if strategy == "registry" and registry:
                    push_to = pushed_ref(registry, local)
                ref: pulumi.Output[str] = pulumi.Output.from_input(push_to or local)
                load_image: pulumi.Input[str] = local
            else:
                built_image = self._build(name, image, args, opts)
                ref = built_image.image_name
                trigger = built_image.repo_digest
                built = [built_image]
                load_image = ref
            command_text = load_command(strategy, args.get("cluster_name") or "", '"$IMAGE"',
                                        args.get("containerd_address"), push_to)
            if command_text:
                load = ImageLoad(
                    f"{name}-{image}-load", image=load_image, command=command_text, trigger=trigger,
                    opts=child_options(self, opts, depends_on=built),
                )
                loads.append(load)
                ref = pulumi.Output.all(ref, load.urn).apply(lambda values: values[0])
            else:
                loads.extend(built)
            refs[image] = ref

        self.runtime_image = refs["runtime"]
        self.router_image = refs["router"]
        self._load_resources = loads
        self.register_outputs({"runtimeImage": self.runtime_image, "routerImage": self.router_image})

    @property
    def load_resources(self) -> list[pulumi.Resource]:
        """Resources that must finish before any pod uses the images (depend on these)."""
        return list(self._load_resources)

    def _build(self, name: str, image: str, args: ImagesArgs, opts: Optional[pulumi.ResourceOptions]) -> docker.Image:
        if not args.get("images_dir"):
            raise ValueError("SandboxImages with build_mode docker needs images_dir (the folder with runtime/ and router/)")
        folder = image
        build_args: dict[str, str] = {}
        if image == "router":
            folder = ROUTER_CONTEXTS[args.get("router_implementation") or "compiled"]
        if folder != "router-go":  # the compiled router's image has no base image
            build_args["BASE_IMAGE"] = args.get("base_image") or versions.DEFAULT_BASE_IMAGE
        if image == "runtime":
            build_args["VARIANT"] = args.get("runtime_variant") or "full"
        context = Path(args["images_dir"]) / folder
        repository = LOCAL_REPOSITORIES[image]
        registry = args.get("registry")
        if args["load_strategy"] == "registry" and registry:
            repository = f"{registry.rstrip('/')}/{repository.split('/')[-1]}"
        tag = content_tag(context, build_args)
        return docker.Image(
            f"{name}-{image}",
            image_name=f"{repository}:{tag}",
            build=docker.DockerBuildArgs(
                context=str(context),
                dockerfile=str(context / "Dockerfile"),
                args=build_args,
                platform="linux/amd64",
            ),
            skip_push=args["load_strategy"] != "registry",
            opts=child_options(self, opts),
        )
