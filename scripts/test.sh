#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, lint, dependency checks
# (cargo deny), then every test tier.
#   unit + scenario tests (no kernel), datapath tests (BPF_PROG_TEST_RUN) and
#   integration tests (namespaces, veth, MPTCP; the packet fuzzer), a short
#   run of the policy fuzz target, and on a second kernel in a QEMU guest
#   (scripts/vm.sh), beside the host's kernel tests: the datapath tests, the
#   link checks over WireGuard and VLAN (devices this host lacks) and
#   mptcp_gro (its metadata control needs bpf_xdp_adjust_meta, which some
#   host kernels refuse).
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
# Controls this kernel cannot build, replaced by the stand-in the test names
# (tests/common/gate.rs `record_stand_in`).
EMPTCP_STAND_IN_LOG=$(mktemp -t emptcp-stand-ins.XXXXXX)
export EMPTCP_SKIP_LOG EMPTCP_RETRY_LOG EMPTCP_STAND_IN_LOG
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
    n=$(wc -l <"$EMPTCP_STAND_IN_LOG")
    if ((n > 0)); then
        echo
        echo "== $n controls STOOD IN for on this kernel (the real one runs in the guest tier)"
        sort "$EMPTCP_STAND_IN_LOG" | sed 's/^/   STAND-IN /; s/\t/: /'
    fi
    rm -f "$EMPTCP_SKIP_LOG" "$EMPTCP_RETRY_LOG" "$EMPTCP_STAND_IN_LOG"
    # Tests ignored in the source (#[ignore = "why"]) are not run: listed
    # with their reason so a green run never hides them.
    awk '/#\[ignore/ { r = $0; sub(/.*#\[ignore( = )?"?/, "", r); sub(/"?\].*/, "", r); next }
         r != "" && /fn / { n = $0; sub(/.*fn /, "", n); sub(/\(.*/, "", n);
                             printf "   IGNORED %s (%s): %s\n", n, FILENAME, r; r = "" }' tests/*.rs |
        { mapfile -t ign; ((${#ign[@]})) && { echo; echo "== ${#ign[@]} tests ignored in the source (not run):"; printf '%s\n' "${ign[@]}"; }; true; }
    # The guest link checks this command leaves out (`scripts/vm.sh
    # untested`: those of tests/mptcp/ and their kinds outside the set the
    # guest runs, all of them without a guest): said, so a green run does
    # not read as covering them (docs/development.md has their last runs).
    local ran=(links) left
    [[ -n ${guest_skip:-} ]] && ran=()
    left=$(./scripts/vm.sh untested "${ran[@]}" | paste -sd' ') || true
    [[ -z $left ]] || printf '\n== guest link checks not run by this command: %s (by hand: scripts/vm.sh test %s)\n' "$left" "$left"
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
# Two side jobs run in the background beside the kernel tests, on the CPU
# those leave idle while they wait on the network (a load the suite is
# built to bear: it passes with a CPU hog per core, scripts/flake.sh): the
# fuzz target's instrumented build (its own target directory keeps cargo's
# locks apart; niced, as nothing waits on it before the suite ends), and,
# in one boot of a second kernel (Debian's 6.12 LTS in a QEMU guest,
# scripts/vm.sh), the datapath tier, the link checks over WireGuard and
# VLAN and mptcp_gro (about 5, 4 and 1 min alone, plus 2.5 min to build the
# cached image the first time), the longest job of the command, started at
# once.
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
    {
        nice -n 10 ./scripts/fuzz.sh build >"$1/fuzz-build.log" 2>&1
        echo $? >"$1/fuzz-build.rc"
    } &
    if [[ -z $2 ]]; then
        ./scripts/vm.sh test datapath links mptcp_gro >"$1/guest.log" 2>&1
        echo $? >"$1/guest.rc"
    fi
    wait
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
# The datapath tier, the link checks and mptcp_gro on 6.12, started with the tests
# (above); their output once they end. scripts/vm.sh runs the other
# tiers too (docs/development.md).
phase "datapath, link checks and mptcp_gro on 6.12 (guest)"
if [[ -n $guest_skip ]]; then
    echo "SKIPPED guest datapath tier, link checks and mptcp_gro: $guest_skip"
else
    guest_rc=$(side_rc guest)
    cat "$side/guest.log"
    [[ $guest_rc == 0 ]] || { echo "guest tier: FAILED (exit ${guest_rc:-none}, log: $side/guest.log)"; exit 1; }
fi
phase done
