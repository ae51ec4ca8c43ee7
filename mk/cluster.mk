# The offline builds behind the KIND cluster: Kubernetes (with kubeadm), etcd, gVisor, CoreDNS,
# kube-router, the controller, and the node image's containerd/runc/crictl/CNI plugins.
.PHONY: toolchain-cluster

toolchain-cluster: ## build k8s, etcd, gVisor, CoreDNS, kube-router, controller, kind, containerd, runc, crictl, CNI into $(CACHE_DIR)
	@bash e2e/toolchain/cluster.sh
