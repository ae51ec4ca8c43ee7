"""Resource options shared by the components.

Owns: ``child_options``, the one way a component declares the options of each of its children
(``opts=child_options(self, opts, depends_on=[...], ignore_changes=..., aliases=...)``)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import pulumi


def child_options(
    parent: pulumi.Resource,
    component_opts: Optional[pulumi.ResourceOptions],
    depends_on: Sequence[pulumi.Resource] = (),
    **options: Any,
) -> pulumi.ResourceOptions:
    """Options for a child of the component ``parent`` (created with ``component_opts``):
    ``parent`` set, ``depends_on`` and any other ``options`` given, and the component's own
    ``depends_on`` repeated first, because the engine does not make children wait for what their
    parent depends on (the controller must be up before any custom resource is sent). The
    provider needs no repeating: children inherit it from their parent."""
    inherited = pulumi.ResourceOptions(depends_on=component_opts.depends_on if component_opts else None)
    # merge, not list(): the component's depends_on may be one resource, a list or an Output.
    return pulumi.ResourceOptions.merge(inherited, pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on), **options))
