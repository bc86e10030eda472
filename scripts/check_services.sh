#!/usr/bin/env bash
# Say which of PostgreSQL, Redis and RabbitMQ is not reachable, and how to start it.
# With --start, start the missing ones (as CI must: it runs on the machine as it was left).
set -uo pipefail
start=0
[[ "${1:-}" == "--start" ]] && start=1

declare -A PORTS=([PostgreSQL]=5432 [Redis]=6379 [RabbitMQ]=5672)
declare -A STARTS=(
    [PostgreSQL]='pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
    [Redis]='redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log'
    [RabbitMQ]='rabbitmq-server -detached'
)

reachable() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

missing=0
for name in PostgreSQL Redis RabbitMQ; do
    port=${PORTS[$name]}
    reachable "$port" && continue
    if [[ $start == 1 ]]; then
        echo "$name is not running on 127.0.0.1:$port; starting it"
        bash -c "${STARTS[$name]}" || true
        for _ in $(seq 1 60); do reachable "$port" && break; sleep 1; done
        reachable "$port" && continue
    fi
    echo "$name is not reachable on 127.0.0.1:$port. Start it with:"
    echo "    ${STARTS[$name]}"
    missing=1
done
exit $missing
