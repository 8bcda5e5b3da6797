#!/bin/bash
# Keep this node's CNI conflist and its routes to the other nodes' pod CIDRs right.
set -u
if [ -n "${CONTROL_PLANE_ENDPOINT:-}" ]; then
  # Reach the API server directly: the Service VIP needs kube-proxy, which may not be up yet.
  export KUBERNETES_SERVICE_HOST=${CONTROL_PLANE_ENDPOINT%:*} KUBERNETES_SERVICE_PORT=${CONTROL_PLANE_ENDPOINT##*:}
fi
conf=/etc/cni/net.d/10-archop.conflist
while true; do
  kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' 2>/dev/null \
  | while read -r name cidr ip; do
      [ -n "$cidr" ] && [ -n "$ip" ] || continue
      if [ "$name" = "$NODE_NAME" ]; then
        want=$(printf '{"cniVersion":"0.4.0","name":"archop","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,"ipam":{"type":"host-local","dataDir":"/run/cni-ipam-state","ranges":[[{"subnet":"%s"}]],"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}' "$cidr")
        if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
          echo "$want" > "$conf.tmp" && mv "$conf.tmp" "$conf" && echo "wrote $conf for $cidr"
        fi
      else
        if ! ip route show "$cidr" 2>/dev/null | grep -q "via $ip "; then
          ip route replace "$cidr" via "$ip" && echo "route $cidr via $ip ($name)"
        fi
      fi
    done
  sleep 3
done
