"""Every error the driver raises on purpose, and the exit code each one stands for.

One base, :class:`DriverError`: a step failed in a way the user can fix, and its message (one
line) says how. The narrow subclasses say what failed; ``python -m automation`` prints the
message and exits with the class's ``exit_code``, so what happens follows the type, never the
wording. The modules raise them under the names they always had (``automation.bootstrap.
SetupError`` is :class:`SetupError`).

Exit codes: 0 success, 1 the operation or a check failed, 2 usage or configuration error,
3 prerequisites missing, 130 interrupted (the engine stopped cleanly).
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PREREQUISITES = 0, 1, 2, 3
EXIT_INTERRUPTED = 130


class DriverError(RuntimeError):
    """A driver step failed in a way the user can fix; the message says how."""

    exit_code = EXIT_FAILED


# ----------------------------------------------------------------------------- usage (exit 2)

class UsageError(DriverError):
    """The command line or the stack's configuration is wrong; nothing was changed."""

    exit_code = EXIT_USAGE


class OverrideError(UsageError):
    """A ``--config KEY=VALUE`` argument is malformed."""


class StackFileMissing(UsageError):
    """There is no ``Pulumi.<stack>.yaml`` for the stack named; the message lists the known ones."""


# ----------------------------------------------------------------------------- prerequisites (exit 3)

class MissingPrerequisite(DriverError):
    """A tool the command needs is not on this machine; the message says how to get it."""

    exit_code = EXIT_PREREQUISITES


# ----------------------------------------------------------------------------- failures (exit 1)

class ProjectNotFound(DriverError):
    """The driver does not run from a project checkout (no ``Pulumi.yaml``)."""


class StackNotFound(DriverError):
    """The stack does not exist in the backend: it was never brought up, or it was removed."""


class StackNotDeployed(DriverError, ValueError):
    """The stack lacks the outputs smoke and bench need (still a ValueError, as it always was)."""


class SetupError(DriverError):
    """A set-up step of ``up`` failed; the message says which and what to do."""


class PreflightError(SetupError):
    """A bad state of the machine that ``up`` cannot fix by itself; the message holds the fix."""


class ToolError(SetupError):
    """A tool could not be found, downloaded or built; the message says what to do."""


class NodeImageError(SetupError):
    """The KIND node image cannot be built; the message says what is missing and how to get it."""


class ClusterError(DriverError):
    """A cluster command (kind, minikube) failed; the message holds the command and its output."""


class TunnelError(DriverError):
    """The tunnel to the router did not come up; the message includes kubectl's output."""


class CapacityError(DriverError):
    """The cluster cannot schedule what was asked for; the message says why."""
