#!/usr/bin/env bash
# Build every image the offline cluster runs, from the Debian base and the binaries of build-tools.sh:
#   - images preloaded into the node image under the exact names kubeadm expects;
#   - the kind node image itself (docker run + containerd import + docker commit, as `kind build node-image`);
#   - operand images (postgres, redis, nginx) with the official images' binaries on PATH and user ids.
# An image that already exists under its versioned tag is not rebuilt.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bin="$ARCHOP_CACHE/bin"
k8s="$ARCHOP_CACHE/k8s-$K8S_VERSION"

# docker build from an inline Dockerfile with a context holding the given files.
#   $1 image  $2 Dockerfile text  $3.. files to put in the context
build() {
  local image=$1 dockerfile=$2; shift 2
  have_image "$image" && return 0
  log "building $image"
  local ctx; ctx=$(mktemp -d)
  for f in "$@"; do cp -a "$f" "$ctx/"; done
  printf '%s\n' "$dockerfile" > "$ctx/Dockerfile"
  docker build -q --build-arg BASE="$BASE_IMAGE" -t "$image" "$ctx" >/dev/null
  rm -rf "$ctx"
}

binary_image() {  # $1 image  $2 binary path  $3 name in /usr/local/bin
  local tmp; tmp=$(mktemp -d); cp "$2" "$tmp/$3"
  build "$1" "ARG BASE
FROM \${BASE}
COPY $3 /usr/local/bin/$3" "$tmp/$3"
  rm -rf "$tmp"
}

# --- control plane and add-ons, under the names kubeadm and our manifests use
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  binary_image "registry.k8s.io/$c:$K8S_VERSION" "$k8s/$c" "$c"
done
tmp=$(mktemp -d); cp "$k8s/kube-proxy" "$tmp/"
build "registry.k8s.io/kube-proxy:$K8S_VERSION" "ARG BASE
FROM \${BASE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables conntrack ipset kmod \
 && rm -rf /var/lib/apt/lists/*
COPY kube-proxy /usr/local/bin/kube-proxy" "$tmp/kube-proxy"
rm -rf "$tmp"
etcd_tag=$(echo "$ETCD_VERSION" | sed 's/^v//')-0
binary_image "registry.k8s.io/etcd:$etcd_tag" "$bin/etcd-$ETCD_VERSION" etcd
tmp=$(mktemp -d); cp "$bin/coredns-$COREDNS_VERSION" "$tmp/coredns"
build "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "ARG BASE
FROM \${BASE}
COPY coredns /coredns
ENTRYPOINT [\"/coredns\"]" "$tmp/coredns"
cp "$bin/pause-$K8S_VERSION" "$tmp/pause"
build "registry.k8s.io/pause:3.10.1" "FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT [\"/pause\"]" "$tmp/pause"
rm -rf "$tmp"
binary_image "$OFFLINE/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION" \
  "$bin/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION" local-path-provisioner
build "$OFFLINE/cni-routes:v1" "ARG BASE
FROM \${BASE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY kubectl cni-routes.sh /usr/local/bin/
CMD [\"/usr/local/bin/cni-routes.sh\"]" "$k8s/kubectl" "$here/node/cni-routes.sh"

# --- operand images: Debian packages, the official images' user ids and binaries on PATH
build "$OFFLINE/postgres:15" 'ARG BASE
FROM ${BASE}
RUN groupadd -r -g 999 postgres && useradd -r -u 999 -g 999 -d /var/lib/postgresql -s /bin/bash postgres \
 && mkdir -p /etc/postgresql-common && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
 && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 procps \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man \
 && mkdir -p /var/run/postgresql /var/lib/postgresql/data && chown -R 999:999 /var/run/postgresql /var/lib/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
# As the official image: a stop is a fast shutdown (sessions end, nothing more is acknowledged), not a smart
# one that waits for every client to leave.
STOPSIGNAL SIGINT
USER 999'
build "$OFFLINE/redis:7" 'ARG BASE
FROM ${BASE}
RUN groupadd -r -g 999 redis && useradd -r -u 999 -g 999 -d /data redis \
 && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc && mkdir -p /data && chown 999:999 /data
WORKDIR /data
USER 999
CMD ["redis-server"]'
build "$OFFLINE/nginx:1.22" 'ARG BASE
FROM ${BASE}
RUN groupadd -r -g 101 nginx && useradd -r -u 101 -g 101 -d /var/cache/nginx -s /sbin/nologin nginx \
 && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc && mkdir -p /var/cache/nginx && chown 101:101 /var/cache/nginx
CMD ["nginx", "-g", "daemon off;"]'

# --- the ingress controller, preloaded into the node image
binary_image "$OFFLINE/traefik:$TRAEFIK_VERSION" "$bin/traefik-$TRAEFIK_VERSION" traefik

# --- the NetworkPolicy enforcer (cluster.sh loads it with `kind load`; it is not preloaded into the node image,
# so turning it on or off does not rebuild the node). kube-router runs iptables-restore/-save and ipset; Debian's
# iptables uses the nf_tables backend, as kube-proxy's image does (same package), so both see one ruleset.
if [ "$NETPOL_ENFORCER" = kube-router ]; then
  tmp=$(mktemp -d); cp "$bin/kube-router-$KUBE_ROUTER_VERSION" "$tmp/kube-router"
  build "$OFFLINE/kube-router:$KUBE_ROUTER_VERSION" "ARG BASE
FROM \${BASE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables ipset \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man
COPY kube-router /usr/local/bin/kube-router
ENTRYPOINT [\"/usr/local/bin/kube-router\"]" "$tmp/kube-router"
  rm -rf "$tmp"
fi

# --- the node image
node_inputs_hash() {
  cat "$here/versions.env" "$here/runc-wrapper" "$here/node/"* "$here/build-images.sh" | sha256sum | cut -c1-12
}
NODE_BASE_TAG="$NODE_BASE_IMAGE-$(node_inputs_hash)"
NODE_TAG="$NODE_IMAGE-$(node_inputs_hash)"
if ! have_image "$NODE_BASE_TAG"; then
  log "building $NODE_BASE_TAG"
  ctx=$(mktemp -d)
  kind_dir=$(go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir)
  cp -r "$kind_dir/images/base/files" "$ctx/files"; chmod -R u+w "$ctx/files"
  cp "$bin/crictl-$CRICTL_VERSION" "$ctx/crictl"; cp "$here/runc-wrapper" "$ctx/"; cp "$here/node/Dockerfile.base" "$ctx/Dockerfile"
  docker build -q --build-arg BASE="$BASE_IMAGE" -t "$NODE_BASE_TAG" "$ctx" >/dev/null
  rm -rf "$ctx"
fi
if ! have_image "$NODE_TAG"; then
  log "building $NODE_TAG"
  preload=(
    "registry.k8s.io/kube-apiserver:$K8S_VERSION" "registry.k8s.io/kube-controller-manager:$K8S_VERSION"
    "registry.k8s.io/kube-scheduler:$K8S_VERSION" "registry.k8s.io/kube-proxy:$K8S_VERSION"
    "registry.k8s.io/etcd:$etcd_tag" "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "registry.k8s.io/pause:3.10.1"
    "$OFFLINE/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION" "$BASE_IMAGE" "$OFFLINE/cni-routes:v1"
    "$OFFLINE/traefik:$TRAEFIK_VERSION"
  )
  cid=$(docker run -d --entrypoint=sleep --security-opt seccomp=unconfined "$NODE_BASE_TAG" infinity)
  trap 'docker rm -f -v "$cid" >/dev/null 2>&1 || true' EXIT
  for b in kubeadm kubelet kubectl; do docker cp "$k8s/$b" "$cid:/usr/bin/$b"; done
  docker exec "$cid" bash -c "mkdir -p /kind/manifests && echo $K8S_VERSION > /kind/version"
  docker cp "$here/node/default-cni.yaml" "$cid:/kind/manifests/default-cni.yaml"
  sed "s/LPP_VERSION/$LOCAL_PATH_PROVISIONER_VERSION/" "$here/node/default-storage.yaml" \
    | docker exec -i "$cid" tee /kind/manifests/default-storage.yaml >/dev/null
  docker exec "$cid" bash -c 'nohup containerd >/dev/null 2>&1 &'
  docker exec "$cid" bash -c 'for i in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; exit 1'
  docker save "${preload[@]}" | docker exec -i "$cid" ctr --namespace=k8s.io images import \
    --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >/dev/null
  docker exec "$cid" ctr --namespace=k8s.io images list -q | grep -v '^sha256:' | sort
  docker exec "$cid" pkill containerd || true
  sleep 1
  docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' "$cid" "$NODE_TAG" >/dev/null
  log "built $NODE_TAG"
fi
docker tag "$NODE_TAG" "$NODE_IMAGE"
echo "$NODE_TAG" > "$ARCHOP_CACHE/node-image"
