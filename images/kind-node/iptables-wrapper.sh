#!/bin/sh
# iptables mode selection for the kube-proxy and kube-router images of the KIND node image.
#
# iptables has two backends (legacy and nf_tables) whose rules do not see each other; every
# component of one node must use the one the node itself uses. The image's iptables,
# ip6tables and their -save/-restore commands start as links to this script. On first use it
# looks for the chains kubelet creates (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY) in each
# backend, else counts the rules each holds, re-points the links at that backend and runs the
# command it was called as. Later calls go straight to the chosen backend.
set -eu

detect_mode() {
	for mode in nft legacy; do
		if "xtables-$mode-multi" iptables-save -t mangle 2>/dev/null | grep -Eq 'KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY'; then
			echo "$mode"
			return
		fi
	done
	legacy=$( (xtables-legacy-multi iptables-save; xtables-legacy-multi ip6tables-save) 2>/dev/null | grep -c '^-' || true)
	nft=$( (xtables-nft-multi iptables-save; xtables-nft-multi ip6tables-save) 2>/dev/null | grep -c '^-' || true)
	if [ "$nft" -gt "$legacy" ]; then echo nft; else echo legacy; fi
}

mode=$(detect_mode)
for command in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
	ln -sf "xtables-$mode-multi" "/usr/sbin/$command"
done
exec "/usr/sbin/$(basename "$0")" "$@"
