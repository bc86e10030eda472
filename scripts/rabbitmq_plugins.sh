#!/usr/bin/env bash
# Enable RabbitMQ's management UI (http://localhost:15672, guest/guest) and its Prometheus
# endpoint (:15692/metrics) on the local broker. Never fatal: `make run` works without them.
set -uo pipefail
plugins=(rabbitmq_management rabbitmq_prometheus)

if ! command -v rabbitmq-plugins >/dev/null 2>&1; then
    echo "rabbitmq-plugins not found; skipping the management UI (RabbitMQ runs elsewhere?)"
    exit 0
fi
# Already on: nothing to do, and no root needed to find out.
if enabled=$(rabbitmq-plugins list --enabled --minimal 2>/dev/null); then
    missing=0
    for plugin in "${plugins[@]}"; do grep -qx "$plugin" <<<"$enabled" || missing=1; done
    [[ $missing == 0 ]] && exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "RabbitMQ's management UI is off; to turn it on:"
    echo "    sudo rabbitmq-plugins enable ${plugins[*]}"
    exit 0
fi
if rabbitmq-plugins enable "${plugins[@]}" >/dev/null 2>&1; then
    echo "RabbitMQ management UI: http://localhost:15672 (guest/guest)"
else
    echo "could not enable ${plugins[*]} (is RabbitMQ running?); continuing without them"
fi
exit 0
