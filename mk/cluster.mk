# Single-node Kubernetes + gVisor cluster for the e2e checks (owner: cluster).
.PHONY: toolchain-cluster cluster-up cluster-down cluster-preflight cluster-logs cluster-load-images

toolchain-cluster: ## build k8s, etcd, gVisor, CoreDNS, kube-router, controller, images into $(CACHE_DIR)
	@bash e2e/toolchain/cluster.sh

cluster-preflight: ## check kernel features, packages and toolchain artefacts for the e2e cluster
	@bash e2e/cluster/preflight.sh

cluster-up: ## start the single-node e2e cluster (host processes); last line: KUBECONFIG=<path>
	@bash e2e/cluster/up.sh

cluster-down: ## stop the e2e cluster and remove its processes, iptables rules, mounts and state
	@bash e2e/cluster/down.sh

cluster-logs: ## print where the e2e cluster's component logs are
	@echo /var/log/agent-sandbox-e2e

cluster-load-images: ## import IMAGES="ref-or-tarball ..." into the e2e cluster's containerd (no pull)
	@bash e2e/cluster/load-images.sh $(IMAGES)
