# Sandbox router (owner: router): run it locally, test it, benchmark it against the runtime.
.PHONY: router-run test-router bench-router

router-run: venv ## run the router on :8080 outside a cluster (ROUTER_RESOLVER=dns; needs ROUTER_AUTH_TOKEN)
	ROUTER_RESOLVER=$${ROUTER_RESOLVER:-dns} PYTHONPATH=images/router $(PY) -m sandbox_router

test-router: venv ## router unit, component and SDK-through-router tests
	$(PY) -m pytest tests/unit/test_router_*.py tests/component/test_router_*.py tests/component/test_sdk_*.py

bench-router: venv ## req/s and p50/p99 direct vs through-router at c=1/10/50 (wrk); JSON in $(OUT_DIR)/bench/router.json
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(PY) bench/router_bench.py --out $(OUT_DIR)/bench/router.json
