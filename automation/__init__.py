"""The Agent Sandbox driver: one command per stack (up, preview, smoke, bench, down) on the
Pulumi Automation API; see ``automation.cli`` and docs/driver.md."""
