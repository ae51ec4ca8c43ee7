"""The CI workflow runs the driver's own flow: up -> smoke -> down (always) -> upload."""

from __future__ import annotations

from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "e2e.yml"


def steps():
    data = yaml.safe_load(WORKFLOW.read_text())
    (job,) = data["jobs"].values()
    return job["steps"]


def test_workflow_runs_up_smoke_and_down_in_order_with_cleanup_and_upload():
    runs = [(s.get("name", ""), s.get("run", ""), s.get("if")) for s in steps()]
    index = {name: i for i, (name, _, _) in enumerate(runs)}
    assert index["up"] < index["smoke"] < index["down (destroy, verify nothing remains, delete the cluster the driver created)"]
    up = runs[index["up"]][1]
    assert "make up" in up and "make smoke" in runs[index["smoke"]][1]
    down = next(r for r in runs if r[1].strip().startswith("make down"))
    assert down[2] == "always()"
    upload = next(s for s in steps() if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and "out/" in upload["with"]["path"]


def test_workflow_installs_what_the_gvisor_kind_prerequisites_ask_for():
    text = WORKFLOW.read_text()
    for needed in ("/usr/local/bin/runsc", "/usr/local/bin/containerd-shim-runsc-v1", "kind", "get.pulumi.com"):
        assert needed in text
