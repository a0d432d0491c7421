#!/usr/bin/env bash
# Benchmarks (not tests): each prints its configurations side by side, measured in one run, as ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
for b in bench/*.bench.ts; do
  echo "==> $b"
  node --import tsx "$b"
done
