#!/usr/bin/env bash
# Installs what bridle needs on a fresh Debian machine and builds it. Idempotent: every step checks
# first and skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

APT_PKGS=(clang libbpf-dev bpftool libelf-dev zlib1g-dev iproute2 cmake make g++ python3)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "setup needs root to install packages (bridle itself needs root to load BPF)" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  step "apt: packages present"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "npm: installing dependencies"
  npm ci --no-audit --no-fund --loglevel=error
else
  step "npm: dependencies present"
fi

bash scripts/build.sh
