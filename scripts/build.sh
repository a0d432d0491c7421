#!/usr/bin/env bash
# Builds the BPF objects and the native addon; each skips when already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-bpf.sh
bash scripts/build-native.sh
