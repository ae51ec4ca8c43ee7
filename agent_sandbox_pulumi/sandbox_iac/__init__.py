"""The parts of the package that declare no Pulumi resource: typed stack config, pinned versions,
manifest helpers, pod and network specs. Shared by the components, the project's program, the
automation driver, the policy pack and the tests; ``agent_sandbox_pulumi.components`` declares resources."""
