#!/usr/bin/env bash
# Make the cluster's certificates with openssl and a kubeconfig per client.
# Usage: e2e/cluster/pki.sh   (writes $PKI_DIR and $STATE_DIR/*.kubeconfig; overwrites nothing valid)
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DAYS=30
mkdir -p "$PKI_DIR"; chmod 700 "$PKI_DIR"
cd "$PKI_DIR"

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

# sign NAME SUBJECT EXTENSIONS: a certificate for NAME signed by the cluster CA.
sign() {
  local name=$1 subject=$2 extensions=$3
  [[ -f $name.crt ]] && return 0
  new_key "$name.key"
  openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr" 2>/dev/null
  printf '%s\n' "$extensions" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days $DAYS \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

client_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'

if [[ ! -f ca.crt ]]; then
  new_key ca.key
  openssl req -x509 -new -key ca.key -subj "/CN=agent-sandbox-e2e-ca" -days $DAYS -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
fi
sign kube-apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:127.0.0.1,IP:$KUBERNETES_SERVICE_IP,IP:$NODE_IP"
sign admin "/O=system:masters/CN=e2e-admin" "$client_ext"
sign kube-controller-manager "/CN=system:kube-controller-manager" "$client_ext"
sign kube-scheduler "/CN=system:kube-scheduler" "$client_ext"
sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client_ext"
sign kube-proxy "/CN=system:kube-proxy" "$client_ext"
sign apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" "$client_ext"
sign coredns "/CN=e2e:coredns" "$client_ext"
sign kube-router "/CN=e2e:kube-router" "$client_ext"
if [[ ! -f sa.key ]]; then
  openssl genrsa -out sa.key 2048 2>/dev/null; chmod 600 sa.key
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
fi

# kubeconfig NAME: $STATE_DIR/NAME.kubeconfig authenticating with NAME.crt, with a context of that name.
kubeconfig() {
  local name=$1 context=${2:-$1}
  local file=$STATE_DIR/$name.kubeconfig
  umask 077
  cat >"$file" <<EOF2
apiVersion: v1
kind: Config
clusters:
- name: agent-sandbox-e2e
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 ca.crt)
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$name.crt")
    client-key-data: $(base64 -w0 "$name.key")
contexts:
- name: $context
  context: {cluster: agent-sandbox-e2e, user: $name}
current-context: $context
EOF2
}
for client in kube-controller-manager kube-scheduler kubelet kube-proxy coredns kube-router; do
  kubeconfig "$client"
done
kubeconfig admin agent-sandbox-e2e
