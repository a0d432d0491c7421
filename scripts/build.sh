#!/usr/bin/env bash
# Builds the BPF objects, the native addon and the compiled TypeScript (dist/); each skips when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-bpf.sh
bash scripts/build-native.sh
bash scripts/build-ts.sh
