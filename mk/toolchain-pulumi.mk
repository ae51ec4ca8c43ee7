# Pulumi toolchain (CLI, Python language host, provider plugins) built offline into $(CACHE_DIR).
.PHONY: toolchain-pulumi toolchain-pulumi-env

toolchain-pulumi: ## build/cache the Pulumi CLI, Python language host and provider plugins (prints versions, times)
	@bash e2e/toolchain/pulumi.sh

toolchain-pulumi-env: ## print the exports that use the cached Pulumi toolchain (same as sourcing e2e/toolchain/env.sh)
	@bash -c 'source e2e/toolchain/env.sh'
