#!/usr/bin/env bash
# Remove old content-tagged agent-sandbox images: every source change makes new tags, old ones pile up.
#
#   images/base/prune-images.sh [KEEP]    keep the KEEP newest tags of each repository (default 3)
#
# Only agent-sandbox/runtime and agent-sandbox/router tags and dangling layers of finished builds are
# touched; images a container still uses are left alone (docker refuses to remove them without --force).
set -euo pipefail
KEEP=${1:-3}
[[ $KEEP =~ ^[0-9]+$ ]] || { echo "prune-images: KEEP=$KEEP is not a number" >&2; exit 2; }
DOCKER=${DOCKER:-$("$(dirname "${BASH_SOURCE[0]}")/../../e2e/docker-engine.sh" client)}
for repository in agent-sandbox/runtime agent-sandbox/router; do
	# `docker images` lists newest first.
	"$DOCKER" images --format '{{.Repository}}:{{.Tag}}' "$repository" | tail -n +$((KEEP + 1)) | while read -r ref; do
		if "$DOCKER" rmi "$ref" >/dev/null 2>&1; then echo "removed $ref"; else echo "kept $ref (in use)"; fi
	done
done
"$DOCKER" image prune --force >/dev/null
