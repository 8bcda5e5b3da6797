#!/usr/bin/env bash
# Copy the CRD (single source of truth: crds/) into the Helm chart, which cannot read files outside itself.
#   scripts/sync-crds.sh          write charts/archop/files/ from crds/
#   scripts/sync-crds.sh --check  exit 1 if the copy differs (operator/tests/test_chart.py checks the same)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/crds/archop.io_architectures.yaml"
dst="$root/charts/archop/files/archop.io_architectures.yaml"

if [[ ! -f "$src" ]]; then
  echo "sync-crds: $src is missing" >&2
  exit 1
fi
if [[ "${1:-}" == "--check" ]]; then
  if cmp -s "$src" "$dst"; then
    echo "sync-crds: $dst is up to date"
    exit 0
  fi
  echo "sync-crds: $dst differs from $src; run scripts/sync-crds.sh" >&2
  exit 1
fi
mkdir -p "$(dirname "$dst")"
cp "$src" "$dst"
echo "sync-crds: wrote $dst"
