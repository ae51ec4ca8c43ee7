"""The ``pulumirpc.LanguageRuntime`` servicer for Python programs and policy packs."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from typing import Any, Iterator, Mapping

import grpc
from google.protobuf import empty_pb2, json_format
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

from . import HOST_VERSION
from .interpreter import InterpreterError, select_interpreter
from .packages import discover_plugin_packages
from .plugin_runner import stream_process

# The exec script exits with this code after it has already shown the user an actionable error.
_EXIT_AFTER_USER_MESSAGE = 32


def _options(info: language_pb2.ProgramInfo) -> dict[str, Any]:
    """Return the runtime options of a ProgramInfo as a plain dict."""
    return json_format.MessageToDict(info.options) if info.HasField("options") else {}


def _env_list_to_dict(entries: Iterator[str]) -> dict[str, str]:
    """Turn ``KEY=VALUE`` strings into a dict; later entries win, as with execve."""
    env: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep:
            env[key] = value
    return env


class PythonLanguageRuntime(language_pb2_grpc.LanguageRuntimeServicer):
    """Serves the engine's language-host calls for the ``python`` runtime."""

    def __init__(self, engine_address: str, exec_script: str) -> None:
        self.engine_address = engine_address
        self.exec_script = exec_script

    # -- identity -------------------------------------------------------------------------------
    def GetPluginInfo(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> plugin_pb2.PluginInfo:
        """Report the host version (the Pulumi release it stands in for)."""
        return plugin_pb2.PluginInfo(version=HOST_VERSION)

    def Handshake(self, request, context):
        """Accept the engine address the engine offers; nothing else to negotiate."""
        if request.engine_address:
            self.engine_address = request.engine_address
        return language_pb2.LanguageHandshakeResponse()

    def Cancel(self, request, context):
        """Nothing long-running is cancellable beyond what the engine kills itself."""
        return empty_pb2.Empty()

    def RuntimeOptionsPrompts(self, request, context):
        """No interactive prompts: options are written into Pulumi.yaml by hand."""
        return language_pb2.RuntimeOptionsResponse()

    # -- dependencies -----------------------------------------------------------------------------
    def _interpreter(self, info: language_pb2.ProgramInfo, context: grpc.ServicerContext, env: Mapping[str, str]):
        try:
            return select_interpreter(_options(info), info.root_directory or os.getcwd(), env)
        except InterpreterError as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))

    def _packages(self, info: language_pb2.ProgramInfo, context: grpc.ServicerContext):
        interp = self._interpreter(info, context, os.environ)
        cwd = info.program_directory or info.root_directory or os.getcwd()
        try:
            return discover_plugin_packages(interp.python, interp.apply(os.environ), cwd)
        except (RuntimeError, OSError, ValueError) as err:
            context.abort(grpc.StatusCode.INTERNAL, str(err))

    def GetRequiredPackages(self, request, context):
        """Every installed package with a resource ``pulumi-plugin.json`` is a required provider package."""
        packages = []
        for pkg in self._packages(request.info, context):
            dep = plugin_pb2.PackageDependency(name=pkg.name, kind="resource", version=pkg.version, server=pkg.server)
            if pkg.parameterization:
                param = pkg.parameterization
                dep.parameterization.CopyFrom(
                    plugin_pb2.PackageParameterization(
                        name=str(param.get("name", "")),
                        version=str(param.get("version", "")),
                        value=base64.b64decode(param.get("value", "")),
                    )
                )
            packages.append(dep)
        return language_pb2.GetRequiredPackagesResponse(packages=packages)

    def GetRequiredPlugins(self, request, context):
        """Deprecated form of GetRequiredPackages, kept for older engines."""
        plugins = [
            plugin_pb2.PluginDependency(name=p.name, kind="resource", version=p.version, server=p.server)
            for p in self._packages(request.info, context)
            if not p.parameterization
        ]
        return language_pb2.GetRequiredPluginsResponse(plugins=plugins)

    def GetProgramDependencies(self, request, context):
        """List the distributions installed for the program's interpreter (used by ``pulumi about``)."""
        interp = self._interpreter(request.info, context, os.environ)
        script = "import json,importlib.metadata as m;print(json.dumps([[d.metadata['Name'],d.version] for d in m.distributions()]))"
        proc = subprocess.run([interp.python, "-c", script], env=interp.apply(os.environ), capture_output=True, text=True)
        if proc.returncode != 0:
            context.abort(grpc.StatusCode.INTERNAL, proc.stderr.strip())
        deps = [language_pb2.DependencyInfo(name=n, version=v) for n, v in sorted(json.loads(proc.stdout))]
        return language_pb2.GetProgramDependenciesResponse(dependencies=deps)

    def About(self, request, context):
        """Name the interpreter and its version."""
        interp = self._interpreter(request.info, context, os.environ)
        proc = subprocess.run([interp.python, "--version"], capture_output=True, text=True)
        version = (proc.stdout or proc.stderr).strip().removeprefix("Python ")
        return language_pb2.AboutResponse(executable=interp.python, version=version)

    # -- execution --------------------------------------------------------------------------------
    def Run(self, request, context):
        """Run a Pulumi program through the SDK's exec script against the engine's resource monitor."""
        info = request.info
        interp = self._interpreter(info, context, os.environ)
        program_dir = info.program_directory or request.pwd
        program = os.path.join(program_dir, info.entry_point or request.program or ".")
        argv = [
            interp.python, "-u", self.exec_script,
            "--monitor", request.monitor_address,
            "--engine", self.engine_address,
            "--project", request.project,
            "--stack", request.stack,
            "--pwd", request.pwd or program_dir,
            "--parallel", str(request.parallel),
            "--dry_run", "true" if request.dryRun else "false",
        ]
        if info.root_directory:
            argv += ["--root_directory", info.root_directory]
        if request.organization:
            argv += ["--organization", request.organization]
        argv += [program, *request.args]
        env = interp.apply(os.environ)
        env["PULUMI_CONFIG"] = json.dumps(dict(request.config))
        env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(list(request.configSecretKeys))
        # The program writes to our stdout/stderr, which the engine turns into diagnostics.
        code = subprocess.run(argv, env=env, cwd=request.pwd or program_dir, stdin=subprocess.DEVNULL).returncode
        if code == 0:
            return language_pb2.RunResponse()
        if code == _EXIT_AFTER_USER_MESSAGE:
            return language_pb2.RunResponse(bail=True)
        return language_pb2.RunResponse(error=f"Program exited with non-zero exit code: {code}")

    def RunPlugin(self, request, context):
        """Run a policy pack (``python -m pulumi.policy``) or a source-based Python plugin."""
        info = request.info
        base_env = _env_list_to_dict(request.env) or dict(os.environ)
        interp = self._interpreter(info, context, base_env)
        program_dir = info.program_directory or info.root_directory
        if request.kind == "analyzer":
            argv = [interp.python, "-u", "-m", "pulumi.policy", *request.args, program_dir]
        else:
            argv = [interp.python, "-u", program_dir, *request.args]
        yield from stream_process(argv, interp.apply(base_env), request.pwd or program_dir, lambda: not context.is_active())
