#!/bin/sh
# Stand-in for the official nginx image's entrypoint: when the command is nginx, render every
# /etc/nginx/templates/**/*.template into $NGINX_ENVSUBST_OUTPUT_DIR (default
# /etc/nginx/conf.d) with envsubst, substituting only the variables that are defined.
set -eu
if [ "${1:-}" = "nginx" ] || [ "${1:-}" = "nginx-debug" ]; then
    template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
    output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
    suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
    # shellcheck disable=SC2016,SC2046 # a literal ${NAME} list, one word per variable
    defined_envs=$(printf '${%s} ' $(env | cut -d= -f1))
    find "$template_dir" -follow -type f -name "*$suffix" -print | while read -r template; do
        relative_path="${template#"$template_dir/"}"
        output_path="$output_dir/${relative_path%"$suffix"}"
        mkdir -p "$(dirname "$output_path")"
        envsubst "$defined_envs" <"$template" >"$output_path"
    done
fi
exec "$@"
