#!/usr/bin/env bash
# Builds the BPF objects (bpf/build/*.bpf.o and test/fixtures/bpf/build/*.bpf.o). Idempotent: make only
# rebuilds what changed; vmlinux.h is generated from the running kernel's BTF when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VMLINUX_H="$ROOT/bpf/include/vmlinux.h"
BTF="${BTF:-/sys/kernel/btf/vmlinux}"

for tool in clang bpftool make; do
  command -v "$tool" >/dev/null || { echo "build-bpf: $tool not found (apt-get install clang bpftool make)" >&2; exit 1; }
done

if [[ ! -s "$VMLINUX_H" ]]; then
  [[ -r "$BTF" ]] || { echo "build-bpf: no kernel BTF at $BTF; set BTF=/path/to/vmlinux" >&2; exit 1; }
  echo "build-bpf: generating $VMLINUX_H from $BTF"
  mkdir -p "$(dirname "$VMLINUX_H")"
  bpftool btf dump file "$BTF" format c > "$VMLINUX_H.tmp"
  mv "$VMLINUX_H.tmp" "$VMLINUX_H"
fi

echo "build-bpf: make -C bpf"
make --no-print-directory -C "$ROOT/bpf" "$@"
