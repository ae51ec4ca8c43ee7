"""The policy pack as the engine runs it: ``python -m pulumi.policy <engine> policy/`` in a child
process (PolicyPack serves gRPC on loopback and blocks), queried over gRPC for its metadata and
for a verdict on a violating resource. No CLI needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from policy import policies
from agent_sandbox_pulumi.sandbox_iac.config import parse_stack_config
from agent_sandbox_pulumi.sandbox_iac.sandbox_spec import sandbox_template_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_DIR = REPO_ROOT / "policy"
TEMPLATE_TYPE = "kubernetes:extensions.agents.x-k8s.io/v1beta1:SandboxTemplate"


@pytest.fixture(scope="module")
def analyzer():
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(PACK_DIR)],
        cwd=PACK_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline().strip()
        if not line.isdigit():
            process.kill()
            pytest.fail(f"policy pack did not print its port: {line!r} {process.stderr.read()}")
        channel = grpc.insecure_channel(f"127.0.0.1:{line}")
        grpc.channel_ready_future(channel).result(timeout=20)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        process.kill()
        process.wait(timeout=10)


def test_pack_serves_every_policy_as_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=20)
    assert info.name == policies.POLICY_PACK_NAME
    served = {p.name: p.enforcementLevel for p in info.policies}
    assert set(served) == {p.name for p in policies.ALL_POLICIES}
    assert set(served.values()) == {analyzer_pb2.MANDATORY}


def test_pack_rejects_a_runc_template_over_grpc(analyzer):
    config = parse_stack_config({"imageBuild": "prebuilt", "sandboxImage": "a/r:1", "routerImage": "a/o:1"}, "t")
    spec = sandbox_template_spec(config, "a/r:1")
    spec["podTemplate"]["spec"]["runtimeClassName"] = "runc"
    properties = struct_pb2.Struct()
    properties.update({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
                       "metadata": {"name": "t"}, "spec": spec})
    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(
        type=TEMPLATE_TYPE, properties=properties, urn=f"urn:pulumi:s::p::{TEMPLATE_TYPE}::t", name="t"), timeout=20)
    assert [d.policyName for d in response.diagnostics] == ["sandbox-runtime-class"]
    assert "no isolation" in response.diagnostics[0].message
