"""A Python implementation of Pulumi's ``python`` language host (``pulumi-language-python``).

The upstream host is a Go module the Go module proxy does not serve here, so this package speaks the
same ``pulumirpc.LanguageRuntime`` gRPC contract with the stubs shipped in the ``pulumi`` PyPI package.
It implements only what the engine needs to run local programs and policy packs:
GetPluginInfo, Handshake, GetRequiredPackages/GetRequiredPlugins, Run (through the
``pulumi-language-python-exec`` script of the pulumi SDK module), RunPlugin (policy packs and
source-based plugins), About, GetProgramDependencies, RuntimeOptionsPrompts and Cancel.
"""

HOST_VERSION = "3.259.0"
