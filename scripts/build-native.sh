#!/usr/bin/env bash
# Builds the Node-API addon to native/build/Release/bridle_native.node with cmake-js, offline:
# native/package.json declares napi_versions, so cmake-js compiles against the node-api-headers package
# in node_modules (no download of Node headers). Skips the build when the .node file is newer than every
# source. FORCE=1 rebuilds; DEBUG=1 builds with -O0 -g (into native/build/Debug).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG=Release
[[ "${DEBUG:-0}" == 1 ]] && CONFIG=Debug
OUT="$ROOT/native/build/$CONFIG/bridle_native.node"
CMAKE_JS="$ROOT/node_modules/.bin/cmake-js"

[[ -x "$CMAKE_JS" ]] || { echo "build-native: $CMAKE_JS missing (npm install)" >&2; exit 1; }
command -v cmake >/dev/null || { echo "build-native: cmake not found" >&2; exit 1; }
pkg-config --exists libbpf || { echo "build-native: libbpf not found (apt-get install libbpf-dev)" >&2; exit 1; }

if [[ -f "$OUT" && "${FORCE:-0}" != 1 ]]; then
  newer="$(find "$ROOT/native/src" "$ROOT/native/CMakeLists.txt" "$ROOT/native/package.json" -newer "$OUT" -print -quit)"
  if [[ -z "$newer" ]]; then
    echo "build-native: $OUT is up to date"
    exit 0
  fi
  echo "build-native: $newer changed"
fi

args=(compile -d "$ROOT/native" -O "$ROOT/native/build" --config "$CONFIG")
[[ "$CONFIG" == Debug ]] && args+=(--debug)
echo "build-native: cmake-js ${args[*]}"
# npm_config_nodedir would make cmake-js look for full Node sources; Node-API needs only the headers.
env -u npm_config_nodedir "$CMAKE_JS" "${args[@]}"
[[ -f "$OUT" ]] || { echo "build-native: build finished but $OUT is missing" >&2; exit 1; }
touch "$OUT"
echo "build-native: built $OUT"
