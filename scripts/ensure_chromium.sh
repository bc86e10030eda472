#!/usr/bin/env bash
# The browser tests drive Debian's chromium through Playwright (never `playwright install`,
# which downloads a browser build). Install it when we can (root), else say how.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [[ $(id -u) == 0 ]]; then
    echo "chromium is missing; installing it with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium fonts-liberation >/dev/null
else
    echo "chromium is missing. Install it with: sudo apt-get install -y chromium" >&2
    exit 1
fi
