#!/usr/bin/env bash
# The whole test suite: sets up what is missing, type-checks, then runs every test file with node's
# test runner (real BPF in the real kernel: run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> typecheck"
npx tsc -p tsconfig.json --noEmit
echo "==> tests"
mapfile -t files < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
exec node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
