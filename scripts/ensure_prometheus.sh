#!/usr/bin/env bash
# Debian's Prometheus (`prometheus` and `promtool`): the observability tests run a real one
# against the stack and check the rules with promtool; `make prometheus` runs it for `make run`.
# Installs it when we can (root), else says how. Never starts the system service.
set -euo pipefail
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && exit 0
if [[ $(id -u) != 0 ]]; then
    echo "prometheus is missing. Install it with: sudo apt-get install -y prometheus" >&2
    exit 1
fi
echo "prometheus is missing; installing it with apt-get"
# Keep the package's service from starting (the tests run their own instances).
created_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
fi
trap 'if [[ $created_policy == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus >/dev/null && command -v promtool >/dev/null
