"""Runtime and router images: built with pulumi-docker (or taken prebuilt) under
content-derived tags, then made available to the cluster's nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_docker as docker

from components.image_loader import ImageLoad
from sandbox_iac.content_tag import content_tag

LOCAL_REPOSITORIES = {"runtime": "agent-sandbox/runtime", "router": "agent-sandbox/router"}


@dataclass
class ImagesArgs:
    """Inputs of SandboxImages."""

    images_dir: Path
    """Folder holding ``runtime/`` and ``router/`` build contexts (each with a Dockerfile)."""
    build_mode: str
    """``docker`` builds with pulumi-docker; ``prebuilt`` uses ``prebuilt_refs`` as they are."""
    load_strategy: str
    """``kind`` | ``minikube`` | ``containerd`` | ``registry`` | ``preloaded``: how nodes get the images."""
    cluster_name: str
    """KIND cluster or minikube profile the images are loaded into."""
    base_image: str
    """BASE_IMAGE build argument of both Dockerfiles."""
    runtime_variant: str = "full"
    """VARIANT build argument of the runtime image (``full`` or ``minimal``)."""
    registry: Optional[str] = None
    """Registry prefix the images are pushed to (``registry`` strategy only)."""
    prebuilt_refs: dict[str, str] = field(default_factory=dict)
    """``{"runtime": ref, "router": ref}`` for the ``prebuilt`` mode."""
    containerd_address: Optional[str] = None
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

    Outputs:
      runtime_image: image ref the SandboxTemplate uses (content-derived tag).
      router_image: image ref the router Deployment uses (content-derived tag).
    """

    runtime_image: pulumi.Output[str]
    router_image: pulumi.Output[str]

    def __init__(self, name: str, args: ImagesArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("agent-sandbox:index:SandboxImages", name, None, opts)
        refs: dict[str, pulumi.Output[str]] = {}
        loads: list[pulumi.Resource] = []
        for image in ("runtime", "router"):
            push_to: Optional[str] = None
            if args.build_mode == "prebuilt":
                local = args.prebuilt_refs[image]
                trigger: pulumi.Input[str] = local
                built: list[pulumi.Resource] = []
                # A local image and a registry to push to: the nodes pull the pushed ref.
                if args.load_strategy == "registry" and args.registry:
                    push_to = pushed_ref(args.registry, local)
                ref: pulumi.Output[str] = pulumi.Output.from_input(push_to or local)
                load_image: pulumi.Input[str] = local
            else:
                built_image = self._build(name, image, args)
                ref = built_image.image_name
                trigger = built_image.repo_digest
                built = [built_image]
                load_image = ref
            refs[image] = ref
            command_text = load_command(args.load_strategy, args.cluster_name, '"$IMAGE"', args.containerd_address,
                                        push_to)
            if command_text:
                loads.append(ImageLoad(
                    f"{name}-{image}-load", image=load_image, command=command_text, trigger=trigger,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=built),
                ))
            else:
                loads.extend(built)

        self.runtime_image = refs["runtime"]
        self.router_image = refs["router"]
        self._load_resources = loads
        self.register_outputs({"runtime_image": self.runtime_image, "router_image": self.router_image})

    @property
    def load_resources(self) -> list[pulumi.Resource]:
        """Resources that must finish before any pod uses the images (depend on these)."""
        return list(self._load_resources)

    def _build(self, name: str, image: str, args: ImagesArgs) -> docker.Image:
        context = args.images_dir / image
        build_args = {"BASE_IMAGE": args.base_image}
        if image == "runtime":
            build_args["VARIANT"] = args.runtime_variant
        repository = LOCAL_REPOSITORIES[image]
        if args.load_strategy == "registry" and args.registry:
            repository = f"{args.registry.rstrip('/')}/{repository.split('/')[-1]}"
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
            skip_push=args.load_strategy != "registry",
            opts=pulumi.ResourceOptions(parent=self),
        )
