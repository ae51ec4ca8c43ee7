# The end-to-end proof on the local single-node gVisor cluster (needs `make toolchain`).
.PHONY: e2e results-page

e2e: venv ## cluster checks + real Pulumi engine + the whole stack via the driver; regenerates docs/results.md
	$(PY) -m pytest tests/e2e -v -s
	@$(MAKE) --no-print-directory results-page

results-page: venv ## regenerate docs/results.md from the last e2e run's reports in $(OUT_DIR)
	$(PY) e2e/results_page.py --stack local --out $(OUT_DIR) --docs docs
