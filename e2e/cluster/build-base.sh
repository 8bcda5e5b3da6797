#!/usr/bin/env bash
# Debian base image from debootstrap + docker import, and a python base on top of it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if ! have_image "$BASE_IMAGE"; then
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { log "no Debian mirror found in the host's apt sources"; exit 1; }
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap --variant=minbase $DEBIAN_SUITE"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" "$mirror" >"$ARCHOP_CACHE/debootstrap.log" 2>&1
  # Use the host's apt sources (main, updates, security) inside the image too.
  rm -f "$rootfs/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/" 2>/dev/null \
    || echo "deb $mirror $DEBIAN_SUITE main" > "$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  log "imported $BASE_IMAGE"
fi

if ! have_image "$PYTHON_BASE_IMAGE"; then
  log "building $PYTHON_BASE_IMAGE"
  ctx=$(mktemp -d)
  mkdir -p "$ctx/ca"
  # Machines here reach the package registries through a TLS proxy whose CA the host trusts; builds on
  # this base (pip install in the project Dockerfile) must trust it too. Elsewhere the folder is empty.
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
ARG BASE
FROM ${BASE}
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates && rm -rf /var/lib/apt/lists/* && update-ca-certificates >/dev/null
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
DOCKERFILE
  docker build -q -t "$PYTHON_BASE_IMAGE" --build-arg BASE="$BASE_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
fi
