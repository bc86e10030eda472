#!/usr/bin/env bash
# Run nginx in the foreground as the local gateway, with its own prefix under .run/.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${GATEWAY_RUN_DIR:-.run/gateway}"
conf="$(python3 scripts/render_gateway.py --prefix "$prefix" \
    --port "${GATEWAY_PORT:-8000}" \
    --auth "127.0.0.1:${AUTH_PORT:-8001}" \
    --orders "127.0.0.1:${ORDERS_PORT:-8002}")"
exec nginx -e stderr -p "$(dirname "$conf")" -c "$conf" -g 'daemon off;'
