#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, lint, dependency checks
# (cargo deny), then every test tier.
#   unit + scenario tests (no kernel), datapath tests (BPF_PROG_TEST_RUN) and
#   integration tests (namespaces, veth, MPTCP; the packet fuzzer), a short
#   run of the policy fuzz target, and on a second kernel in a QEMU guest
#   (scripts/vm.sh), beside the host's kernel tests: the datapath tests and
#   the link checks over WireGuard and VLAN (devices this host lacks).
# Kernel tests need CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN and FAIL without
# them. EMPTCP_ALLOW_SKIP=1 turns that into a skip: each skipped test is
# recorded, and this script prints at the end how many and why.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# Skipped kernel tests (tests/common/gate.rs appends "test<TAB>reason").
EMPTCP_SKIP_LOG=$(mktemp -t emptcp-skips.XXXXXX)
# Steps retried after a kernel fault a test recognised (tests/common/gate.rs
# `record_retry`; the one known: tests/mptcp_common/deadlock.rs).
EMPTCP_RETRY_LOG=$(mktemp -t emptcp-retries.XXXXXX)
export EMPTCP_SKIP_LOG EMPTCP_RETRY_LOG
report_skips() {
    local rc=$?
    local n
    n=$(wc -l <"$EMPTCP_SKIP_LOG")
    if ((n > 0)); then
        echo
        echo "== $n kernel tests SKIPPED (EMPTCP_ALLOW_SKIP=1): nothing was tested on the kernel for them"
        sort "$EMPTCP_SKIP_LOG" | sed 's/^/   SKIPPED /; s/\t/: /'
    fi
    n=$(wc -l <"$EMPTCP_RETRY_LOG")
    if ((n > 0)); then
        echo
        echo "== $n test steps RETRIED once after a kernel fault they recognised (docs/development.md)"
        sort "$EMPTCP_RETRY_LOG" | sed 's/^/   RETRIED /; s/\t/: /'
    fi
    rm -f "$EMPTCP_SKIP_LOG" "$EMPTCP_RETRY_LOG"
    # Tests ignored in the source (#[ignore = "why"]) are not run: listed
    # with their reason so a green run never hides them.
    awk '/#\[ignore/ { r = $0; sub(/.*#\[ignore( = )?"?/, "", r); sub(/"?\].*/, "", r); next }
         r != "" && /fn / { n = $0; sub(/.*fn /, "", n); sub(/\(.*/, "", n);
                             printf "   IGNORED %s (%s): %s\n", n, FILENAME, r; r = "" }' tests/*.rs |
        { mapfile -t ign; ((${#ign[@]})) && { echo; echo "== ${#ign[@]} tests ignored in the source (not run):"; printf '%s\n' "${ign[@]}"; }; true; }
    # The guest link checks run here over WireGuard and VLAN (`scripts/vm.sh
    # test links`); their IP tunnel cells do not: said, so a green run does
    # not read as covering them (docs/development.md has their last runs).
    printf '\n== not run by this command: tunnel_check.sh over gre, ipip, sit, ip6tnl, ip6gre (by hand: scripts/vm.sh test tunnel_check)\n'
    exit "$rc"
}
trap report_skips EXIT

# Each tier's start, with the minutes since the command began (the wall
# times docs/development.md records come from these lines).
phase() { printf '== %s (at %dm%02ds)\n' "$1" $((SECONDS / 60)) $((SECONDS % 60)); }

phase fmt; cargo fmt --all -- --check
# No module imports a higher layer, no import circles (docs/architecture.md):
# seconds, so it fails before the long tiers; the full run repeats it.
phase "layering"; cargo test --locked --release -p emptcp --test layering
phase "clippy"; cargo clippy --all-targets --locked -- -D warnings
# Dependencies (deny.toml): licences, duplicate versions, sources, in
# seconds; RustSec advisories too when its database can be fetched (it
# lives on GitHub: a machine that reaches only the package registries
# checks the other three and says so).
phase "cargo deny"
# cargo-deny reads the metadata of every crate in Cargo.lock, for every
# target (Windows-only ones too) and the fuzz target's: a build fetches only
# what it compiles, so a fresh machine has not downloaded the rest, and the
# offline check below cannot run without them.
cargo fetch --locked --quiet
if cargo deny fetch db >/dev/null 2>&1; then
    cargo deny --locked check licenses bans sources advisories
else
    echo "advisories NOT checked: the RustSec advisory database cannot be fetched here"
    cargo deny --locked --offline check licenses bans sources
fi
phase "tests"
cargo test --locked --release --no-run 2>&1 | grep -vE '^\s+(Executable|Compiling|Finished)|^warning: emptcp@' || true
# Two side jobs run one after the other in the background while the kernel
# tests run, on the CPU those leave idle while they wait on the network (a
# load the suite is built to bear: it passes with a CPU hog per core,
# scripts/flake.sh): the fuzz target's instrumented build (its own
# target directory keeps cargo's locks apart), then, in one boot of a second
# kernel (Debian's 6.12 LTS in a QEMU guest, scripts/vm.sh), the datapath
# tier and the link checks over WireGuard and VLAN (about 5 and 4 min
# alone, plus 2.5 min to build the cached image the first time).
# Each writes its log and exit code under target/side-jobs.
side=target/side-jobs
rm -rf "$side"
mkdir -p "$side" target/fuzz
guest_skip=
if [[ ${EMPTCP_VM:-1} == 0 ]]; then
    guest_skip="EMPTCP_VM=0"
elif [[ $(id -u) != 0 && ! -f ${EMPTCP_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emptcp/vm}/image.stamp ]]; then
    guest_skip="building the guest image needs root"
fi
setsid bash -c '
    ./scripts/fuzz.sh build >"$1/fuzz-build.log" 2>&1
    echo $? >"$1/fuzz-build.rc"
    [[ -n $2 ]] && exit 0
    ./scripts/vm.sh test datapath links >"$1/guest.log" 2>&1
    echo $? >"$1/guest.rc"
' side-jobs "$side" "$guest_skip" &
side_jobs=$!
# Its own process group (setsid): a failing run stops the side jobs (and the
# guest's QEMU). The kill finds no group once they ended; `|| true`, or
# errexit (which holds inside the trap) would turn a passing run into exit 1.
trap 'rc=$?; kill -- -"$side_jobs" 2>/dev/null || true; (exit $rc); report_skips' EXIT
# The exit code of side job $1, once it wrote one (empty if the jobs died).
side_rc() {
    while [[ ! -f $side/$1.rc ]] && kill -0 "$side_jobs" 2>/dev/null; do sleep 1; done
    cat "$side/$1.rc" 2>/dev/null || true
}
# Tests run in parallel: each has its own namespaces and bpffs root.
cargo test --locked --release -- --test-threads "${EMPTCP_TEST_THREADS:-4}"
# The policy loader under cargo-fuzz for a short, fixed budget (the 10^6
# run is `scripts/fuzz.sh policy`, docs/development.md "Fuzzing"); a crash
# fails the command. The packet fuzzer ran above (tests/datapath_fuzz.rs).
phase "fuzz policy (50000 inputs)"
if [[ $(side_rc fuzz-build) != 0 ]]; then
    tail -40 "$side/fuzz-build.log"
    echo "fuzz policy: the build failed (log: $side/fuzz-build.log)"
    exit 1
fi
./scripts/fuzz.sh policy --runs "${EMPTCP_FUZZ_RUNS:-50000}"
phase "leftovers"
./scripts/check-clean.sh
# The datapath tier and the link checks on 6.12, started after the fuzz
# build (above); their output once they end. scripts/vm.sh runs the other
# tiers too (docs/development.md).
phase "datapath and link checks on 6.12 (guest)"
if [[ -n $guest_skip ]]; then
    echo "SKIPPED guest datapath tier and link checks: $guest_skip"
else
    guest_rc=$(side_rc guest)
    cat "$side/guest.log"
    [[ $guest_rc == 0 ]] || { echo "guest tier: FAILED (exit ${guest_rc:-none}, log: $side/guest.log)"; exit 1; }
fi
phase done
