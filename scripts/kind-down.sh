#!/usr/bin/env bash
# Delete the kind cluster made by scripts/kind-up.sh (and everything in it).
set -euo pipefail
CLUSTER="${KIND_CLUSTER:-order-platform}"
command -v kind >/dev/null || { echo "kind is not installed; nothing to delete" >&2; exit 0; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind delete cluster --name "$CLUSTER"
else
    echo "no kind cluster named $CLUSTER"
fi
