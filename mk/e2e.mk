# The end-to-end proof on KIND: the example programs (Python, YAML) up and down on a cluster of their
# own, the gvisor stack on 1- and 2-node clusters made by `up` (README's "Use it" snippet on the
# first), and an existing cluster with a registry (needs the caches of `make tools` + `make toolchain`).
# Each module makes and deletes its own cluster, one at a time; `make test` runs the same files.
.PHONY: e2e results-page

e2e: venv ## the KIND e2e (examples, 1 node, 2 nodes, existing cluster + registry); regenerates docs/results.md
	AGENT_SANDBOX_OFFLINE=1 $(PY) -m pytest tests/e2e -v -s
	@$(MAKE) --no-print-directory results-page

results-page: venv ## regenerate docs/results.md from the last e2e run's reports in $(OUT_DIR)
	$(PY) e2e/results_page.py --stack gvisor --out $(OUT_DIR) --docs docs
