"""The policy pack the Pulumi engine runs (`pulumi preview --policy-pack ./policy`, or
`python -m automation preview STACK`). Every policy is MANDATORY: a violation fails the
preview/update.

Never import this module from tests: ``PolicyPack(...)`` starts a gRPC server and blocks
forever. Tests import ``policy.policies`` instead."""

import sys
from pathlib import Path

# The engine runs this file with the pack directory as sys.path[0]; the shared constants
# (router labels, metadata address, ...) live in the project's sandbox_iac package one level up.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies import ALL_POLICIES, POLICY_PACK_NAME  # noqa: E402

PolicyPack(
    name=POLICY_PACK_NAME,
    policies=ALL_POLICIES,
    enforcement_level=EnforcementLevel.MANDATORY,
)
