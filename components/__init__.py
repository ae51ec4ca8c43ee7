"""Pulumi ComponentResources of the Agent Sandbox stack, one concern per module."""
