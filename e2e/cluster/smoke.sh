#!/usr/bin/env bash
# Prove the cluster does what the project's tests rely on. Each check prints PASS or fails the script.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export KUBECONFIG=${KUBECONFIG:-$ARCHOP_CACHE/kubeconfig}
ns=archop-smoke
nginx_image=${ARCHOP_NGINX_IMAGE:-$OFFLINE/nginx:1.22}
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; kubectl -n "$ns" get pods -o wide || true; exit 1; }
wait_node() {  # $1 node  $2 True|False|Unknown-or-False
  local want=$2
  for _ in $(seq 1 120); do
    s=$(kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
    if [ "$want" = NotReady ]; then [ "$s" != True ] && return 0; else [ "$s" = "$want" ] && return 0; fi
    sleep 2
  done
  return 1
}

if [ "${ARCHOP_ONLINE:-0}" != 1 ]; then
  kind load docker-image --name "$CLUSTER_NAME" "$nginx_image" >/dev/null
fi
kubectl delete ns "$ns" --ignore-not-found --wait=true >/dev/null
kubectl create ns "$ns" >/dev/null
workers=$(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[*].metadata.name}')
n_workers=$(wc -w <<<"$workers")
[ "$n_workers" -ge 2 ] || fail "need at least two workers, have $n_workers"

kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: echo}
spec:
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
        - name: nginx
          image: $nginx_image
          imagePullPolicy: IfNotPresent
          command: [bash, -c, 'echo "\$HOSTNAME" > /var/www/html/index.html && exec nginx -g "daemon off;"']
          readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: echo}
spec:
  rules:
    - host: echo.smoke.local
      http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}]
YAML
# A brand-new DaemonSet can report "rolled out" before its controller has created any pod: poll instead.
running_on() {
  local pods  # captured first: `kubectl | grep -q` can fail on SIGPIPE under pipefail
  pods=$(kubectl -n "$ns" get pods -l app=echo -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.phase}{"\n"}{end}')
  grep -qx "$1 Running" <<<"$pods"
}
for w in $workers; do
  for _ in $(seq 1 120); do running_on "$w" && break; sleep 1; done
  running_on "$w" || fail "no running pod on $w"
done
kubectl -n "$ns" rollout status ds/echo --timeout=120s >/dev/null || fail "echo DaemonSet not ready"
pass "a pod runs on each of the $n_workers workers"

first=$(kubectl -n "$ns" get pods -l app=echo -o jsonpath='{.items[0].metadata.name}')
# Bash's /dev/tcp resolves the Service name through CoreDNS, then kube-proxy spreads the connections.
seen=$(kubectl -n "$ns" exec "$first" -- bash -c '
  for i in $(seq 1 40); do
    exec 3<>/dev/tcp/echo.archop-smoke.svc.cluster.local/80 || exit 1
    printf "GET / HTTP/1.0\r\nHost: echo\r\n\r\n" >&3; tail -n1 <&3; exec 3>&-
  done' | sort -u)
[ "$(wc -l <<<"$seen")" -ge 2 ] || fail "ClusterIP Service reached only: $seen"
pass "CoreDNS resolves echo.archop-smoke.svc.cluster.local and the ClusterIP Service reaches pods on $(wc -l <<<"$seen") nodes"

kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
    - {name: w, image: $nginx_image, command: [bash, -c, 'echo kept-$RANDOM > /data/f && cat /data/f'], volumeMounts: [{name: d, mountPath: /data}]}
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
YAML
kubectl -n "$ns" wait pod/writer --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s >/dev/null || fail "PVC writer did not finish"
written=$(kubectl -n "$ns" logs writer)
kubectl -n "$ns" delete pod writer --wait=true >/dev/null
kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  containers:
    - {name: r, image: $nginx_image, command: [cat, /data/f], volumeMounts: [{name: d, mountPath: /data}]}
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
YAML
kubectl -n "$ns" wait pod/reader --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s >/dev/null || fail "PVC reader did not finish"
[ "$(kubectl -n "$ns" get pvc data -o jsonpath='{.status.phase}')" = Bound ] || fail "PVC not bound"
[ "$(kubectl -n "$ns" logs reader)" = "$written" ] || fail "PVC lost its data across pods"
pass "a PVC binds and keeps its data ($written) across a pod restart"

ip=$("$here/cluster.sh" ingress-ip)
ok=""
for _ in $(seq 1 30); do
  body=$(curl -s -m 2 -H 'Host: echo.smoke.local' "http://$ip/" || true)
  if grep -q '^echo-' <<<"$body"; then ok=1; break; fi
  sleep 1
done
[ -n "$ok" ] || fail "ingress did not route echo.smoke.local"
pass "HTTP to http://$ip/ with Host echo.smoke.local reaches a backend ($body)"

victim=$(awk '{print $NF}' <<<"$workers")
docker stop "$victim" >/dev/null
wait_node "$victim" NotReady || fail "$victim did not become NotReady after docker stop"
pass "docker stop $victim makes it NotReady"
docker start "$victim" >/dev/null
wait_node "$victim" True || fail "$victim did not come back after docker start"
pass "docker start $victim brings it back Ready"

victim=$(awk '{print $1}' <<<"$workers")
net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$victim")
docker network disconnect "$net" "$victim"
wait_node "$victim" NotReady || { docker network connect "$net" "$victim"; fail "$victim stayed Ready while disconnected"; }
pass "docker network disconnect cuts $victim off (NotReady)"
docker network connect "$net" "$victim"
wait_node "$victim" True || fail "$victim did not come back after reconnect"
pass "reconnecting $victim brings it back Ready"
kubectl -n "$ns" rollout status ds/echo --timeout=120s >/dev/null || fail "echo pods did not recover"
kubectl delete ns "$ns" --wait=false >/dev/null
echo "cluster smoke: all checks passed"
