#!/usr/bin/env bash
# Sets up bridle (idempotent) and runs the demo: an embedded collector, and a scripted "agent" run as a
# session under examples/demo-policy.yaml, showing each exec with its verdict and the session tree.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ./bin/bridle demo "$@"
