#!/usr/bin/env bash
# Build the Kubernetes binaries from the k8s.io/kubernetes Go module.
# k8s.io/kubernetes replaces its staging modules with ./staging paths, which do not exist in the module
# zip, so a wrapper module replaces each with its published v0.X.Y twin. The list comes from the module's
# own go.mod, never from a hand-written list.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
out=${1:?usage: build-kubernetes.sh OUTDIR}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
staging_ver="v0.${K8S_VERSION#v1.}"
gomod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | jq -r .GoMod)
go_line=$(grep -m1 '^go ' "$gomod")
{
  echo "module archop.local/k8sbuild"
  echo "$go_line"
  echo "require k8s.io/kubernetes ${K8S_VERSION}"
  echo "replace ("
  grep -E '^\s+k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging_ver" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
GOFLAGS=-mod=mod go mod download
ver=${K8S_VERSION#v}
major=${ver%%.*}; rest=${ver#*.}; minor=${rest%%.*}
pkgs="k8s.io/component-base/version k8s.io/client-go/pkg/version"
ldflags="-s -w"
for p in $pkgs; do
  ldflags+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=${major} -X $p.gitMinor=${minor}"
  ldflags+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.gitTreeState=clean"
  ldflags+=" -X $p.buildDate=1970-01-01T00:00:00Z"
done
for cmd in kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  echo "building $cmd ${K8S_VERSION}"
  # No DWARF at all (the linker strips it anyway with -s -w): the compiler then never generates it, which
  # shortens a cold build of these seven binaries on two cores.
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -gcflags=all=-dwarf=false -ldflags "$ldflags" \
    -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done
