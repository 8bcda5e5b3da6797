# Shared helpers for the offline cluster scripts. Source it; do not run it.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
export ARCHOP_CACHE=${ARCHOP_CACHE:-/var/cache/archop}
export GOBIN="$ARCHOP_CACHE/bin"
export PATH="$ARCHOP_CACHE/bin:$PATH"
CLUSTER_NAME=${ARCHOP_CLUSTER_NAME:-archop}
# Which NetworkPolicy enforcer the cluster runs: none (policies are stored, not enforced) or kube-router
# (netpol-enforcer.md). Off until it has been proven on the cluster; then make kube-router the default.
NETPOL_ENFORCER=${ARCHOP_NETPOL_ENFORCER:-none}
case "$NETPOL_ENFORCER" in none|kube-router) ;; *) echo "ARCHOP_NETPOL_ENFORCER: none or kube-router" >&2; exit 2 ;; esac
# Images built here carry this prefix, except those that must have the exact upstream names that
# kubeadm and kind expect (they are preloaded into the node image under those names).
OFFLINE=${ARCHOP_OFFLINE_PREFIX:-archop-offline}
BASE_IMAGE="$OFFLINE/debian:$DEBIAN_SUITE"
PYTHON_BASE_IMAGE="$OFFLINE/python:3.11-$DEBIAN_SUITE"
NODE_BASE_IMAGE="$OFFLINE/kind-base:$KIND_VERSION"
NODE_IMAGE="$OFFLINE/kind-node:$K8S_VERSION"
mkdir -p "$ARCHOP_CACHE/bin" "$ARCHOP_CACHE/images"

log() { echo "[$(date +%H:%M:%S) ${0##*/}] $*"; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The host's Debian mirror, read from its apt sources so that no address is written into the repo.
debian_mirror() {
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true
    grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' || true
  } | grep -v security | head -n1 || true
}
