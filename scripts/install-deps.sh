#!/usr/bin/env bash
# Debian packages this project needs on a fresh machine of this kind (idempotent, quick when present):
#   the container engine and image tools for the offline cluster, and the real Postgres, Redis and nginx
#   that the local integration tests start on loopback.
set -euo pipefail
pkgs=(docker.io debootstrap jq unzip postgresql-15 redis-server nginx-light python3-venv gcc libc6-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install-deps] installing ${missing[*]}"
  [ "$(id -u)" = 0 ] || { echo "[install-deps] run as root (apt-get)"; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The tests start their own servers on free ports; the packaged services are not needed.
for svc in postgresql redis-server nginx; do service "$svc" stop >/dev/null 2>&1 || true; done
