#!/usr/bin/env bash
# Run nginx in the foreground as the local gateway, with its own prefix under .run/.
#
# SIGTERM (what the supervisor and Kubernetes send to stop a process) means a *fast* shutdown
# to nginx: it closes every connection at once, requests in flight included. Its graceful stop
# is SIGQUIT (stop accepting, finish what is in flight, then exit), so this script turns
# SIGTERM and SIGINT into SIGQUIT (the gateway image says STOPSIGNAL SIGQUIT for the same reason).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${GATEWAY_RUN_DIR:-.run/gateway}"
conf="$(python3 scripts/render_gateway.py --prefix "$prefix" \
    --port "${GATEWAY_PORT:-8000}" \
    --auth "127.0.0.1:${AUTH_PORT:-8001}" \
    --orders "127.0.0.1:${ORDERS_PORT:-8002}")"
nginx -e stderr -p "$(dirname "$conf")" -c "$conf" -g 'daemon off;' &
nginx_pid=$!
trap 'kill -QUIT "$nginx_pid" 2>/dev/null || true' TERM INT
# `wait` returns early (128 + the signal) when a trapped signal arrives: wait again until
# nginx has exited, and exit with nginx's own status.
while :; do
    status=0
    wait "$nginx_pid" || status=$?
    kill -0 "$nginx_pid" 2>/dev/null || exit "$status"
done
