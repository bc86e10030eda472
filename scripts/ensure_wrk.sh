#!/usr/bin/env bash
# The benchmarks load the stack with wrk (C, Lua scripts). Install it when we can (root), else say how.
set -euo pipefail
command -v wrk >/dev/null 2>&1 && exit 0
if [[ $(id -u) == 0 ]]; then
    echo "wrk is missing; installing it with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
else
    echo "wrk is missing. Install it with: sudo apt-get install -y wrk" >&2
    exit 1
fi
