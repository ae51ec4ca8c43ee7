# One vocabulary for people, CI and scripts. Every target creates or reuses the
# project's virtual environment itself. Area-specific targets live in mk/*.mk.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= gvisor
# Toolchain, base images and wheelhouses are cached by version outside the repo.
CACHE_DIR ?= /var/cache/agent-sandbox-iac
OUT_DIR ?= out
export CACHE_DIR OUT_DIR

.DEFAULT_GOAL := help
.PHONY: help venv test test-unit toolchain

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN{FS=":.*?## "}{printf "  make %-16s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## create or update the virtual environment

$(VENV)/.installed: requirements.txt requirements-dev.txt images/runtime/requirements.txt images/router/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "venv: installing requirements-dev.txt into $(VENV) (one line per package)"
	$(PY) -m pip install --progress-bar off --disable-pip-version-check -r requirements-dev.txt
	@touch $@

test: venv ## run every test this machine can run (unit, component, and e2e when the toolchain is cached)
	$(PY) -m pytest tests

test-unit: venv ## run only the fast unit tests
	$(PY) -m pytest tests/unit

toolchain: toolchain-pulumi toolchain-cluster ## build the offline toolchain (Pulumi engine + plugins, Kubernetes, etcd, gVisor, controller)

-include mk/*.mk
