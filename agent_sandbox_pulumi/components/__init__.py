"""Pulumi ComponentResources of Agent Sandbox, one concern per module; ``agent_sandbox`` composes them."""
