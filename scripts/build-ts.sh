#!/usr/bin/env bash
# Compiles src/ and bench/ to dist/ (bin/bridle and the benchmarks' measured processes run that: no
# TypeScript transpiler loaded into the agent; tests run the sources through tsx). Skips when dist/ is
# newer than every source; a full compile takes about 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=dist/.stamp
if [ -f "$stamp" ] && [ "$stamp" -nt tsconfig.build.json ] && [ "$stamp" -nt tsconfig.json ] &&
  [ -z "$(find src bench -name '*.ts' -newer "$stamp" -print -quit)" ]; then
  exit 0
fi
echo "==> typescript: compiling src/ and bench/ to dist/"
rm -rf dist
npx tsc -p tsconfig.build.json
touch "$stamp"
