#!/usr/bin/env bash
# Make rootful podman usable on a machine without a Docker engine or a registry (Debian 12):
# runc (crun fails on hybrid cgroups), vfs storage, capped ulimits, and a base image
# bootstrapped from Debian's packages, since no image registry is reachable.
# Also a stand-in for the official nginx image (scripts/podman/nginx-base) for the gateway.
# Idempotent; prints BASE_IMAGE=... and NGINX_IMAGE=... on its last two lines.
set -euo pipefail

BASE_IMAGE="${LOCAL_BASE_IMAGE:-localhost/order-platform/python:3.11-bookworm}"
NGINX_IMAGE="${LOCAL_NGINX_IMAGE:-localhost/order-platform/nginx:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

need=()
for tool in podman buildah runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
    echo "installing ${need[*]} (and slirp4netns, uidmap) with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap \
        slirp4netns uidmap iptables >/dev/null
fi

mkdir -p /etc/containers/containers.conf.d
cat >/etc/containers/containers.conf.d/50-order-platform.conf <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=8192:8192"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
if [[ ! -f /etc/containers/storage.conf ]] || ! grep -q '^driver *= *"vfs"' /etc/containers/storage.conf; then
    if ! podman images -q 2>/dev/null | grep -q .; then
        cat >/etc/containers/storage.conf <<'CONF'
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
    fi
fi

build_nginx_base() {
    podman image exists "$NGINX_IMAGE" && return 0
    echo "building $NGINX_IMAGE (Debian nginx + the official image's template rendering)" >&2
    podman build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$NGINX_IMAGE" \
        "$(dirname "$0")/nginx-base" >&2
}

if podman image exists "$BASE_IMAGE"; then
    build_nginx_base
    echo "BASE_IMAGE=$BASE_IMAGE"
    echo "NGINX_IMAGE=$NGINX_IMAGE"
    exit 0
fi

# python3-venv and pip: the Dockerfile's builder makes a venv for uv; the runtime needs only
# python3 (3.11 in bookworm, the same minor version as python:3.11-slim-bookworm).
rootfs="$(mktemp -d /var/tmp/op-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
chmod 0755 "$rootfs"  # it becomes the image's `/`: mktemp's 0700 would lock non-root users out
echo "bootstrapping Debian $SUITE into $rootfs (a few minutes)" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$rootfs" "$MIRROR" >&2
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
# The official python images expose `python`; make the same name work here.
ln -sf python3 "$rootfs/usr/bin/python"
# Trust what this host trusts: where egress goes through a TLS-inspecting proxy, pip and uv in
# the builder need its CA. This is a property of the local base only, never of the Dockerfile.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
ca=/etc/ssl/certs/ca-certificates.crt
tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV SSL_CERT_FILE=$ca" \
    --change "ENV PIP_CERT=$ca" \
    --change "ENV REQUESTS_CA_BUNDLE=$ca" \
    --change 'CMD ["python3"]' - "$BASE_IMAGE" >&2
build_nginx_base
echo "BASE_IMAGE=$BASE_IMAGE"
echo "NGINX_IMAGE=$NGINX_IMAGE"
