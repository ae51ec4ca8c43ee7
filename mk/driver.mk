# The one-command driver (automation/, Pulumi Automation API) and the policy pack (policy/).
# Every target uses the project venv (created by `venv`) and the offline toolchain when present
# (e2e/toolchain/env.sh is sourced if it exists; PATH otherwise).
.PHONY: up tools down down-cluster preview smoke bench test-driver test-policy
N ?= 10
# ARGS: extra driver arguments, e.g. ARGS="--config warmPoolReplicas=3"
ARGS ?=
# OFFLINE=1: never download a tool or pull an image; build what is missing from Go modules instead.
ifneq ($(OFFLINE),)
export AGENT_SANDBOX_OFFLINE := $(OFFLINE)
endif
DRIVER = set -e; if [ -f e2e/toolchain/env.sh ]; then TOOLCHAIN_ENV_QUIET=1 . e2e/toolchain/env.sh 2>/dev/null || true; fi; \
	$(PY) -m automation --out-dir $(OUT_DIR)

up: venv ## deploy STACK (default gvisor): tools, Docker engine, node image, KIND cluster, images, pulumi up, outputs
	@$(DRIVER) up $(STACK) $(ARGS)

tools: venv ## only get the tools STACK needs (PATH, cache, pinned download unless OFFLINE=1, else build from Go modules)
	@$(DRIVER) tools $(STACK)

preview: venv ## preview STACK with the policy pack (mandatory policies fail the preview)
	@$(DRIVER) preview $(STACK) $(ARGS)

smoke: venv ## run the seven end-to-end checks on STACK through the official SDK (out/STACK/smoke.json)
	@$(DRIVER) smoke $(STACK) $(ARGS)

bench: venv ## warm vs cold claim latency on STACK with N claims each (out/STACK/bench.json, bench.png)
	@$(DRIVER) bench $(STACK) -n $(N) $(ARGS)

down: venv ## destroy STACK, verify nothing remains, remove the stack record
	@$(DRIVER) down $(STACK) $(ARGS)

down-cluster: venv ## like down, and delete the kind/minikube cluster if the driver created it
	@$(DRIVER) down $(STACK) --cluster $(ARGS)

test-driver: venv ## unit tests of the driver (no cluster needed)
	$(PY) -m pytest tests/unit/test_automation_*.py

test-policy: venv ## unit tests of the policy pack (no CLI needed)
	$(PY) -m pytest tests/unit/test_policy*.py

.PHONY: connect
# CODE='...': run that Python with `client` in scope instead of the console (what the README's snippet uses).
connect: venv ## Python console with `client`, a SandboxClient connected to STACK (tunnel + router token from its outputs)
	@set -e; if [ -f e2e/toolchain/env.sh ]; then TOOLCHAIN_ENV_QUIET=1 . e2e/toolchain/env.sh 2>/dev/null || true; fi; \
	PULUMI_BACKEND_URL="$${PULUMI_BACKEND_URL:-file://$(CURDIR)/.pulumi-state}" \
	$(PY) -m agent_sandbox_pulumi.client $(STACK) $(if $(CODE),-c '$(CODE)')
