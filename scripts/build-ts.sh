#!/usr/bin/env bash
# Compiles src/ and bench/ to dist/ (bin/bridle and the benchmarks' measured processes run that: no
# TypeScript transpiler loaded into the agent; tests run the sources through tsx). Skips when dist/ is
# newer than every source; a full compile takes about 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=dist/.stamp
# Up to date when nothing in src/ or bench/ (files, or directories: deletes and renames) or the tsconfigs
# changed since the stamp.
if [ -f "$stamp" ] && [ -z "$(find src bench tsconfig.json tsconfig.build.json -newer "$stamp" -print -quit)" ]; then
  exit 0
fi
echo "==> typescript: compiling src/ and bench/ to dist/"
# The stamp is taken before compiling: a source saved during the compile is newer than it, so not skipped.
start=$(mktemp)
trap 'rm -f "$start"' EXIT
rm -rf dist
npx --no-install tsc -p tsconfig.build.json
mv "$start" "$stamp"
