#!/usr/bin/env bash
# Prepare this host for the offline cluster: Debian packages, kernel limits, and a running dockerd.
# Idempotent: cheap when everything is already in place.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { echo "[host-setup] $*"; }

need_pkgs=()
for pair in dockerd:docker.io debootstrap:debootstrap jq:jq unzip:unzip; do
  command -v "${pair%%:*}" >/dev/null || need_pkgs+=("${pair#*:}")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# kind's docs: multi-node clusters need more inotify instances than the default 128.
if [ "$(sysctl -n fs.inotify.max_user_instances)" -lt 512 ]; then
  sysctl -qw fs.inotify.max_user_instances=512
  log "raised fs.inotify.max_user_instances to 512"
fi
sysctl -qw fs.inotify.max_user_watches=524288 || true

if docker info >/dev/null 2>&1; then
  log "dockerd already running"
  exit 0
fi

runtime_args=()
bnd=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
# CAP_SYS_RESOURCE is bit 24; any missing capability below CAP_LAST_CAP breaks --privileged.
last_cap=$(cat /proc/sys/kernel/cap_last_cap)
full=$(( (1 << (last_cap + 1)) - 1 ))
if (( (bnd & full) != full )); then
  install -D -m 0755 "$here/runc-wrapper" /usr/local/lib/archop/runc-wrapper
  runtime_args=(--add-runtime "archop-runc=/usr/local/lib/archop/runc-wrapper" --default-runtime archop-runc)
  log "capability bounding set $(printf '%x' "$bnd") lacks capabilities: dockerd uses the runc wrapper (/usr/local/lib/archop/runc-wrapper) as its default runtime"
fi
log "starting dockerd"
nohup dockerd "${runtime_args[@]}" >/var/log/archop-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && { log "dockerd is up"; exit 0; }
  sleep 1
done
log "dockerd did not start; see /var/log/archop-dockerd.log"
exit 1
