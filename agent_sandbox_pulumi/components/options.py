"""Resource options shared by the components."""

from __future__ import annotations

from typing import Optional, Sequence

import pulumi


def child_options(
    parent: pulumi.Resource,
    component_opts: Optional[pulumi.ResourceOptions],
    depends_on: Sequence[pulumi.Resource] = (),
    **options,
) -> pulumi.ResourceOptions:
    """Options for a component's child: ``parent`` set, and the component's own ``depends_on``
    repeated on the child, because the engine does not make children wait for what their
    parent depends on (the controller must be up before any custom resource is sent)."""
    inherited = list((component_opts.depends_on if component_opts else None) or [])
    if not isinstance(inherited, list):
        inherited = [inherited]
    return pulumi.ResourceOptions(parent=parent, depends_on=[*inherited, *depends_on], **options)
