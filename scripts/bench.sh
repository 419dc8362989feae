#!/usr/bin/env bash
# Benchmarks (docs/benchmarks.md): every number is measured by this command
# in one run, on the machine it runs on. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --locked -p emptcp --bins 2>&1 | grep -E '^error' -A5 || true
./target/release/emptcp-bench "$@"
