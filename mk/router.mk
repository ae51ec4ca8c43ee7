# Sandbox router (owner: router): build, run it locally, test it, benchmark it against the runtime.
# Two implementations of one contract: compiled (images/router-go, the default image) and python
# (images/router); ROUTER_IMPL picks the one router-run starts.
.PHONY: router-build router-run test-router bench-router bench-router-peers

ROUTER_IMPL ?= compiled

router-build: ## build the compiled router (images/router-go, Go standard library only) into its cache; prints the path
	@images/router-go/build.sh

router-run: venv ## run the router on :8080 outside a cluster (ROUTER_RESOLVER=dns; needs ROUTER_AUTH_TOKEN; ROUTER_IMPL=python|compiled)
ifeq ($(ROUTER_IMPL),python)
	ROUTER_RESOLVER=$${ROUTER_RESOLVER:-dns} PYTHONPATH=images/router $(PY) -m sandbox_router
else
	ROUTER_RESOLVER=$${ROUTER_RESOLVER:-dns} "$$(images/router-go/build.sh)"
endif

test-router: venv ## router unit tests (Python and Go) and the component + SDK tests, once per implementation
	$(PY) -m pytest tests/unit/test_router_*.py tests/component/test_router_*.py tests/component/test_sdk_*.py

bench-router: venv ## req/s and p50/p99 direct vs through-router at c=1/10/50 (wrk); JSON in $(OUT_DIR)/bench/router.json
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(PY) bench/router_bench.py --out $(OUT_DIR)/bench/router.json

bench-router-peers: venv ## both of our routers vs upstream's Go router vs direct, 1…200 connections; JSON + PNG in $(OUT_DIR)/bench
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(PY) bench/router_vs_go.py --out $(OUT_DIR)/bench/router_vs_go.json
