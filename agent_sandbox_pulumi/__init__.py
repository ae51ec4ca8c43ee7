"""agent_sandbox_pulumi: Agent Sandbox (kubernetes-sigs/agent-sandbox) as reusable Pulumi components.

Owns the public surface of the package: what ``import agent_sandbox_pulumi`` gives a Pulumi program.

- ``components``: the ComponentResources (``AgentSandbox`` and the parts it is made of) and their
  typed args (TypedDicts of plain Pulumi Inputs, so they serialize and the component provider
  can infer a schema from them).
- ``sandbox_iac``: what declares no resource: stack config validation (``config.CONFIG_KEYS``),
  pinned versions, the vendored controller manifest (package data), pod and network specs.
- ``client``: a configured official ``SandboxClient`` for a deployed stack.
- ``provider`` + ``__main__`` + ``PulumiPlugin.yaml`` (``bin/`` for hosts that cannot install
  plugin dependencies): the component package, ``pulumi package add`` of this folder.
- ``docs``: generates Pulumi.yaml's typed config block and README's configuration table.
"""

__version__ = "0.1.0"
