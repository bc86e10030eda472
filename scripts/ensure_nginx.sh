#!/usr/bin/env bash
# The local gateway is a real nginx. Install it when we can (root), else say how.
set -euo pipefail
command -v nginx >/dev/null 2>&1 && exit 0
if [[ $(id -u) == 0 ]]; then
    echo "nginx is missing; installing it with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
else
    echo "nginx is missing. Install it with: sudo apt-get install -y nginx" >&2
    exit 1
fi
