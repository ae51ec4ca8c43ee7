"""``python -m automation``: one entry point per stack for people and CI.

  up STACK        set-up (tools, Docker engine, node image, KIND cluster, images) or prerequisites, then up, outputs
  tools STACK     only the tools step of the set-up
  preview STACK   preview with the policy pack (mandatory policies fail it)
  smoke STACK     the six end-to-end checks through the official SDK; out/<stack>/smoke.json
  bench STACK     warm vs cold claim latency; out/<stack>/bench.json and bench.png
  down STACK      destroy, verify nothing of ours remains, remove the stack (--cluster: and the cluster)

Exit codes: 0 success, 1 the operation or a check failed, 2 usage or configuration error,
3 prerequisites missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from automation import cluster as clusters
from automation.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_PREREQUISITES, EXIT_USAGE, DriverError
from automation.interrupt import engine_operation, engine_was_interrupted, install_signal_cleanup
from automation.kube import kube_args
from automation.overrides import (
    command_overrides,
    load_overrides,
    overrides_path,
    parse_overrides,
    save_overrides,
    save_setup_overrides,
    setup_overrides_path,
)
from automation.paths import ProjectPaths, default_paths
from automation.prereqs import missing_prerequisites
from automation.report import smoke_summary, validate_bench_report, validate_smoke_report, write_json
from automation.session import deployed_stack
from automation.stack_files import stack_config
from agent_sandbox_pulumi.sandbox_iac.config import ConfigError, StackConfig
from agent_sandbox_pulumi.sandbox_iac.manifests import ManifestError, check_manifest_source

# The package's own errors about the stack's config and its manifest source: usage errors too.
PACKAGE_USAGE_ERRORS = (ConfigError, ManifestError)
DEFAULT_BENCH_N = 10


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommand in ``args.command``)."""
    parser = argparse.ArgumentParser(
        prog="python -m automation",
        description="Deploy, check, measure and remove an Agent Sandbox stack (Pulumi Automation API, "
                    "local file backend in .pulumi-state).",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage/config error, 3 prerequisites missing. "
               "PULUMI_CONFIG_PASSPHRASE protects secrets in the local state (default: empty).",
    )
    parser.add_argument("--out-dir", help="where reports go (default $OUT_DIR or ./out); files land in <dir>/<stack>/")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def stack_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("stack", metavar="STACK", help="stack name, e.g. gvisor or kata (Pulumi.<STACK>.yaml)")
        return sub

    up = stack_command("up", "check prerequisites, create the kind/minikube cluster if missing, deploy, print outputs")
    _config_option(up)
    up.add_argument("--skip-prerequisites", action="store_true", help="do not check for tools first")
    up.add_argument("--show-secrets", action="store_true", help="print secret outputs (the router token) in clear")
    up.add_argument("--no-policy", action="store_true",
                    help="do not enforce the policy pack during up (it is enforced by default: unlike a first "
                         "preview, up sees every value, so no policy is skipped as unknown)")
    up.add_argument("--policy-config", type=Path, help="JSON policy pack config (--policy-pack-config)")

    preview = stack_command("preview", "preview the stack with the policy pack applied")
    _config_option(preview)
    preview.add_argument("--policy-config", type=Path, help="JSON policy pack config (--policy-pack-config)")
    preview.add_argument("--no-policy", action="store_true", help="preview without the policy pack")

    stack_command("tools", "find, download (when allowed) or build every tool the stack needs; say where each came from")

    stack_command("smoke", "run the end-to-end checks through the official SDK; writes out/<stack>/smoke.json")

    bench = stack_command("bench", "measure warm vs cold claim latency; writes out/<stack>/bench.json and .png")
    bench.add_argument("-n", type=_positive_int, default=DEFAULT_BENCH_N,
                       help=f"claims per mode (default {DEFAULT_BENCH_N})")

    down = stack_command("down", "destroy the stack, verify nothing remains, remove the stack")
    down.add_argument("--cluster", action="store_true",
                      help="also delete the kind/minikube cluster if this driver created it")
    down.add_argument("--keep-stack", action="store_true", help="destroy resources but keep the stack record")
    down.add_argument("--forget", action="store_true",
                      help="the cluster is gone: drop the stack record without destroying (nothing is deleted "
                           "in any cluster)")
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", metavar="KEY=VALUE",
                        help="set agent-sandbox:KEY for this stack without editing Pulumi.<STACK>.yaml "
                             "(repeatable; remembered by later commands until `down` removes the stack)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# ----------------------------------------------------------------------------- commands

def _streamer() -> Callable[[str], None]:
    def stream(line: str) -> None:
        print(line, end="" if line.endswith("\n") else "\n", flush=True)
    return stream


def _color() -> str:
    return "always" if sys.stdout.isatty() else "never"


def cmd_up(args: argparse.Namespace, paths: ProjectPaths, config: StackConfig) -> int:
    from automation.bootstrap import Setup
    from automation.workspace import open_stack, printable_outputs

    # The set-up below derives config afresh (its earlier values are only for other commands);
    # the user's own --config values win over what it derives.
    overrides = dict(args.user_overrides)
    config = stack_config(paths, config.stack, overrides)  # without the last set-up's values
    if config.cluster_flavour == "kind":
        # KIND: the set-up gets every missing tool, the engine, the node image, the cluster and the
        # images the cluster cannot pull, and says which config this run needs because of that.
        setup = Setup(config, paths, workers=config.kind_workers).run()
    else:
        if not args.skip_prerequisites:
            missing = missing_prerequisites(config)
            if missing:
                print(f"up {config.stack}: prerequisites missing:", *[f"  - {m}" for m in missing], sep="\n",
                      file=sys.stderr)
                return EXIT_PREREQUISITES
            print(f"prerequisites: all present for {config.cluster_flavour}/{config.runtime}")
        clusters.ensure_cluster(config, paths)
        setup = Setup(config, paths).images_only()
    notices = setup.notices
    overrides.update({k: v for k, v in setup.overrides.items() if k not in args.user_overrides})
    save_setup_overrides(paths, config.stack, setup.overrides)
    config = stack_config(paths, config.stack, overrides)
    # The manifest source (vendored copy, or a download checked against its digest) is checked
    # here, so a bad one is one line before the engine starts rather than a trace inside it.
    check_manifest_source(config.controller_manifest, paths.root)
    if config.autoscaling is not None and not config.install_keda:
        from automation.kube import Cluster, api_client, require_autoscaler
        require_autoscaler(config, Cluster(api_client(config)).has_crd)
    check_pool_capacity(config)
    stack = open_stack(paths, config.stack, overrides)
    print(f"stack: {config.stack} (backend {paths.state_dir})")
    policy = None if args.no_policy else [str(paths.policy_pack_dir)]
    policy_config = [str(args.policy_config)] if args.policy_config and policy else None
    def engine_up(**only: Any) -> Any:
        return stack.up(on_output=_streamer(), color=_color(), show_secrets=False, policy_packs=policy,
                        policy_pack_configs=policy_config, **only)

    with engine_operation():
        stale = stale_autoscalers(stack) if config.autoscaling is None else []
        if stale:
            # Pulumi deletes what left the program after its updates: KEDA's HPA could resize the
            # pool between our update and the ScaledObject's deletion, and nothing would set it back.
            print("up: warmPoolAutoscaling is off: removing the pool's ScaledObject first (a targeted up), "
                  "then setting warmPoolReplicas")
            engine_up(target=stale)
        result = engine_up()
    print(f"up: {result.summary.result}; changes {result.summary.resource_changes}")
    outputs = printable_outputs(stack, show_secrets=args.show_secrets)
    print(json.dumps(outputs, indent=2))
    for notice in notices:
        print(f"NOTE: {notice}")
    print(f"next: make smoke STACK={config.stack}   make bench STACK={config.stack}   "
          f"make down STACK={config.stack}   (make down-cluster STACK={config.stack} also deletes the cluster)")
    return EXIT_OK


def stale_autoscalers(stack: Any) -> list[str]:
    """URNs of the ScaledObjects in the stack's state (the program may no longer declare them)."""
    resources = (stack.export_stack().deployment or {}).get("resources") or []
    return [r["urn"] for r in resources if str(r.get("type", "")).endswith(":ScaledObject")]


def check_pool_capacity(config: StackConfig) -> None:
    """One line on whether the warm pool fits the nodes; a pool that cannot fit on a cluster this
    driver made stops here (CapacityError), elsewhere it is a warning (a node autoscaler may add room)."""
    from automation.bench import runtime_class_terms
    from automation.kube import Cluster, api_client
    from automation.pool_capacity import check_pool_fit, fit_when_settled, pool_fit

    try:
        cluster = Cluster(api_client(config))
        # only the overhead: the RuntimeClass's node label (Kata) may be applied by this very `up`
        overhead, _, _ = runtime_class_terms(cluster, config.runtime)
        fit = fit_when_settled(lambda: pool_fit(cluster, config, overhead), config.warm_pool_floor)
    except Exception as error:  # noqa: BLE001 - the check helps; it never blocks an unreachable read
        print(f"capacity: not checked ({type(error).__name__}: {str(error)[:160]})")
        return
    warning = check_pool_fit(config, fit, strict=config.cluster_flavour == "kind")
    print(warning or f"capacity: the nodes fit {fit.fits} sandbox(es) now; the pool keeps {config.warm_pool_floor}")


def cmd_tools(args: argparse.Namespace, paths: ProjectPaths, config: StackConfig) -> int:
    from automation import tools

    tools.resolve_all(tools.tools_for(config.cluster_flavour, config.runtime))
    return EXIT_OK


def cmd_preview(args: argparse.Namespace, paths: ProjectPaths, config: StackConfig) -> int:
    from automation.workspace import open_stack

    check_manifest_source(config.controller_manifest, paths.root)
    stack = open_stack(paths, config.stack, args.overrides)
    policy = None if args.no_policy else [str(paths.policy_pack_dir)]
    policy_config = [str(args.policy_config)] if args.policy_config else None
    with engine_operation():
        result = stack.preview(on_output=_streamer(), color=_color(), policy_packs=policy,
                               policy_pack_configs=policy_config)
    print(f"preview: {result.change_summary}" + ("" if args.no_policy else " (policy pack passed)"))
    return EXIT_OK


def cmd_smoke(args: argparse.Namespace, paths: ProjectPaths, config: StackConfig) -> int:
    from automation.smoke import run_smoke

    target, cluster = deployed_stack(paths, config, args.overrides)
    report = run_smoke(target, cluster, kube_args(config))
    data = report.to_dict()
    problems = validate_smoke_report(data)
    if problems:  # a bug of ours; say so rather than write a report nobody can parse
        raise RuntimeError(f"smoke report does not match its schema: {problems}")
    path = write_json(paths.stack_out_dir(config.stack) / "smoke.json", data)
    print(smoke_summary(report))
    print(f"report: {path}")
    return EXIT_OK if report.passed else EXIT_FAILED


def cmd_bench(args: argparse.Namespace, paths: ProjectPaths, config: StackConfig) -> int:
    from automation.bench import bench_summary, plot_bench, run_bench

    target, cluster = deployed_stack(paths, config, args.overrides)
    report = run_bench(target, cluster, kube_args(config), args.n)
    problems = validate_bench_report(report)
    if problems:
        raise RuntimeError(f"bench report does not match its schema: {problems}")
    out = paths.stack_out_dir(config.stack)
    path = write_json(out / "bench.json", report)
    plot = plot_bench(report, out / "bench.png")
    print(bench_summary(report))
    print(f"report: {path}" + (f", plot: {plot}" if plot else ""))
    failed = sum(report[m]["failed"] for m in ("warm", "cold"))
    return EXIT_OK if failed == 0 else EXIT_FAILED


def cmd_down(args: argparse.Namespace, paths: ProjectPaths, config: StackConfig) -> int:
    from automation.kube import Cluster, api_client
    from automation.workspace import open_stack, remove_work_dir

    stack = open_stack(paths, config.stack, args.overrides, create=False)
    leftovers: Optional[list[str]] = None
    if args.forget:
        print(f"forget: not destroying anything; removing the record of stack {config.stack}")
    else:
        with engine_operation():
            result = stack.destroy(on_output=_streamer(), color=_color(), show_secrets=False)
        print(f"destroy: {result.summary.result}")
        try:
            leftovers = Cluster(api_client(config)).wait_gone(config)
        except Exception as error:  # noqa: BLE001 - an unreachable cluster cannot hold leftovers we could check
            print(f"verify: could not reach the cluster to verify ({type(error).__name__}: {error})",
                  file=sys.stderr)
    if leftovers:
        print("verify: still present after destroy:", *[f"  - {item}" for item in leftovers], sep="\n",
              file=sys.stderr)
    elif leftovers == []:
        print("verify: no namespace, CRD or RuntimeClass of this stack remains")
    if not args.keep_stack:
        # preserve_config: `stack rm` would otherwise delete the tracked Pulumi.<stack>.yaml
        stack.workspace.remove_stack(config.stack, force=args.forget or None, preserve_config=True)
        remove_work_dir(paths, config.stack)
        overrides_path(paths, config.stack).unlink(missing_ok=True)
        setup_overrides_path(paths, config.stack).unlink(missing_ok=True)
        print(f"stack: removed {config.stack} (and its --config overrides) from {paths.state_dir}")
    if args.cluster:
        clusters.delete_created_cluster(paths, config.stack)
    return EXIT_FAILED if leftovers else EXIT_OK


def exit_code(error: BaseException) -> int:
    """The exit code an error of the driver (or a usage error of the package) stands for."""
    if isinstance(error, DriverError):
        return error.exit_code
    return EXIT_USAGE if isinstance(error, PACKAGE_USAGE_ERRORS) else EXIT_FAILED


def _report(args: argparse.Namespace, error: BaseException) -> int:
    """One line saying what to fix (no traceback); returns the error's exit code."""
    print(f"{args.command} {args.stack}: {error}", file=sys.stderr)
    return exit_code(error)


COMMANDS = {"up": cmd_up, "tools": cmd_tools, "preview": cmd_preview, "smoke": cmd_smoke, "bench": cmd_bench, "down": cmd_down}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, load and validate the stack config, run the command; returns the exit code."""
    args = build_parser().parse_args(argv)
    install_signal_cleanup()
    paths = default_paths(args.out_dir)
    try:
        given = parse_overrides(getattr(args, "config", None))
        args.user_overrides = {**load_overrides(paths, args.stack), **given}
        args.overrides = command_overrides(paths, args.stack, args.user_overrides)
        config = stack_config(paths, args.stack, args.overrides)
    except (DriverError, ConfigError) as error:
        return _report(args, error)
    if given:
        save_overrides(paths, args.stack, args.user_overrides)
    try:
        return COMMANDS[args.command](args, paths, config)
    except (DriverError, ManifestError) as error:
        return _report(args, error)
    except Exception as error:
        from pulumi.automation import CommandError

        if isinstance(error, CommandError) and engine_was_interrupted():
            print(f"{args.command} {args.stack}: interrupted; the engine stopped cleanly and saved its state. "
                  f"Run `python -m automation {args.command} {args.stack}` again to finish.", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(error, CommandError):
            print(f"{args.command} {args.stack}: the Pulumi command failed (see the output above):\n{error}",
                  file=sys.stderr)
            if args.command == "down" and "connection refused" in str(error).lower():
                print(f"if the cluster no longer exists: python -m automation down {args.stack} --forget",
                      file=sys.stderr)
            return EXIT_FAILED
        if os.environ.get("AUTOMATION_DEBUG"):
            raise
        print(f"{args.command} {args.stack}: {type(error).__name__}: {error}\n"
              "(set AUTOMATION_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILED

