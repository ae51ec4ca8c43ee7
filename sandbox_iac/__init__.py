"""Core of the Agent Sandbox Pulumi project: typed stack config, pinned versions and
manifest helpers shared by the Pulumi program, the automation driver and the tests.

Nothing in this package declares Pulumi resources; ``components/`` does that."""
