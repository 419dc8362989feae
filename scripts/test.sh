#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, lint, then every test tier.
#   unit + scenario tests (no kernel), datapath tests (BPF_PROG_TEST_RUN) and
#   integration tests (namespaces, veth, MPTCP). Kernel tests skip loudly
#   when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
echo "== fmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --all-targets --locked -- -D warnings
echo "== tests"
# Tests run in parallel: each has its own namespaces and bpffs root.
cargo test --locked --release -- --test-threads "${EMPTCP_TEST_THREADS:-4}"
echo "== leftovers"
./scripts/check-clean.sh
