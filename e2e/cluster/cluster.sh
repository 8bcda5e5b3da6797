#!/usr/bin/env bash
# The offline kind cluster: `cluster.sh up | down | kubeconfig`.
#   ARCHOP_ONLINE=1 uses the published kind node image and upstream images instead of local builds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
KUBECONFIG_PATH=${KUBECONFIG_PATH:-$ARCHOP_CACHE/kubeconfig}

# Outputs are captured before grep: `cmd | grep -q` can fail on SIGPIPE under pipefail.
cluster_exists() { local c; c=$(kind get clusters 2>/dev/null); grep -qx "$CLUSTER_NAME" <<<"$c"; }
cluster_healthy() {
  local nodes
  cluster_exists && nodes=$(kubectl --kubeconfig "$KUBECONFIG_PATH" get nodes --no-headers 2>/dev/null) \
    && [ -n "$nodes" ] && ! grep -qv ' Ready ' <<<"$nodes"
}

up() {
  "$here/host-setup.sh"
  if [ "${ARCHOP_ONLINE:-0}" = 1 ]; then
    # With internet: kind's published node image; kindnetd and local-path come with it.
    node_image=${ARCHOP_KIND_NODE_IMAGE:-$KIND_ONLINE_NODE_IMAGE}
    traefik_image=${ARCHOP_TRAEFIK_IMAGE:-traefik:$TRAEFIK_VERSION}
    command -v kind >/dev/null || go install "sigs.k8s.io/kind@$KIND_VERSION"
  else
    "$here/build-tools.sh"
    "$here/build-base.sh"
    "$here/build-images.sh"
    node_image=$(cat "$ARCHOP_CACHE/node-image")
    traefik_image="$OFFLINE/traefik:$TRAEFIK_VERSION"
  fi
  if cluster_healthy && [ "$(docker inspect -f '{{.Config.Image}}' "$CLUSTER_NAME-control-plane")" = "$node_image" ]; then
    log "cluster $CLUSTER_NAME is already up with $node_image"
  else
    cluster_exists && kind delete cluster --name "$CLUSTER_NAME"
    log "creating cluster $CLUSTER_NAME from $node_image"
    start=$(date +%s)
    kind create cluster --name "$CLUSTER_NAME" --image "$node_image" --config "$here/kind-config.yaml" \
      --kubeconfig "$KUBECONFIG_PATH" --wait 180s
    log "cluster created in $(( $(date +%s) - start ))s"
  fi
  export KUBECONFIG=$KUBECONFIG_PATH
  if [ "${ARCHOP_ONLINE:-0}" != 1 ]; then
    kubectl apply -f "$here/manifests/coredns-configmap.yaml" >/dev/null
  fi
  sed "s|TRAEFIK_IMAGE|$traefik_image|" "$here/manifests/traefik.yaml" | kubectl apply -f - >/dev/null
  kubectl wait --for=condition=Ready nodes --all --timeout=180s >/dev/null
  netpol_enforcer
  kubectl -n traefik rollout status deploy/traefik --timeout=120s
  kubectl -n kube-system rollout status deploy/coredns --timeout=120s
  log "cluster ready; KUBECONFIG=$KUBECONFIG_PATH; ingress at http://$(ingress_ip)/"
}

# The NetworkPolicy enforcer (lib.sh: ARCHOP_NETPOL_ENFORCER). Offline only: its image is built here.
netpol_enforcer() {
  case "$NETPOL_ENFORCER" in
    none)
      if kubectl -n kube-system get daemonset kube-router-netpol >/dev/null 2>&1; then
        log "removing the NetworkPolicy enforcer (ARCHOP_NETPOL_ENFORCER=none)"
        # Deleting the pods leaves their iptables chains and ipsets on the nodes: recreate the cluster for a
        # clean slate (cluster.sh down && cluster.sh up).
        kubectl delete -f "$here/manifests/kube-router-netpol.yaml" --ignore-not-found >/dev/null
      fi ;;
    kube-router)
      [ "${ARCHOP_ONLINE:-0}" = 1 ] && { echo "ARCHOP_NETPOL_ENFORCER=kube-router needs the offline build" >&2; exit 2; }
      local image="$OFFLINE/kube-router:$KUBE_ROUTER_VERSION"
      kind load docker-image --name "$CLUSTER_NAME" "$image"
      sed "s|KUBE_ROUTER_IMAGE|$image|" "$here/manifests/kube-router-netpol.yaml" | kubectl apply -f - >/dev/null
      kubectl -n kube-system rollout status daemonset/kube-router-netpol --timeout=180s
      log "NetworkPolicies enforced by kube-router $KUBE_ROUTER_VERSION" ;;
  esac
}

ingress_ip() {
  docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$CLUSTER_NAME-control-plane"
}

down() {
  cluster_exists && kind delete cluster --name "$CLUSTER_NAME"
  rm -f "$KUBECONFIG_PATH"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  kubeconfig) echo "$KUBECONFIG_PATH" ;;
  ingress-ip) ingress_ip ;;
  *) echo "usage: $0 up|down|kubeconfig|ingress-ip" >&2; exit 2 ;;
esac
