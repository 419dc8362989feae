#!/usr/bin/env bash
# Fuzzing, for a fixed budget (docs/development.md, "Fuzzing").
#
#   scripts/fuzz.sh policy  [--runs N] [--time SECONDS] [--sanitizer address]
#       The cargo-fuzz target fuzz/fuzz_targets/policy.rs: policy files and
#       drop-in directories through load_file/load_dir and the error
#       renderer. Default budget 1,000,000 inputs. Seeds: tests/policies and
#       examples/policies (written to target/fuzz/seeds/policy); the corpus
#       grows in target/fuzz/corpus/policy; a crashing input is saved in
#       target/fuzz/artifacts/policy/ (replay: add it as the only argument to
#       `cargo +nightly fuzz run policy`). Built without a sanitizer by
#       default (about 4x the inputs per second; the code is safe Rust
#       except yaml_serde's libyaml-rs): --sanitizer address for ASan.
#   scripts/fuzz.sh build [--sanitizer address]
#       Only the policy target's instrumented build (the test command runs it
#       in the background while the kernel tests run).
#   scripts/fuzz.sh packets [--frames N] [--seed S]
#       The packet fuzzer (tests/datapath_fuzz.rs) on the real kernel.
#       Default 1,000,000 frames.
#
# Exits non-zero on any crash, oracle violation or timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
NIGHTLY=${EMPTCP_NIGHTLY:-nightly}

usage() {
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

what=${1:-}
[[ -n $what ]] || usage
shift
runs=1000000 time=0 frames=1000000 seed= sanitizer=none
while (($#)); do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --time) time=$2; shift 2 ;;
        --frames) frames=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --sanitizer) sanitizer=$2; shift 2 ;;
        *) usage ;;
    esac
done

# Seed inputs in the target's format (fuzz/fuzz_targets/policy.rs): a
# policy file as is; a drop-in directory as "%%dir" then "%%file NAME" +
# contents for each of its files.
policy_seeds() {
    local out=$1 f d name
    rm -rf "$out"
    mkdir -p "$out"
    for f in tests/policies/*/*.yaml examples/policies/*.yaml; do
        cp "$f" "$out/$(echo "$f" | tr / _)"
    done
    for d in tests/policies/bad-dropins/*/ examples/policies/dropin/; do
        name=$(echo "${d%/}" | tr / _)
        {
            printf '%%%%dir\n'
            find "$d" -maxdepth 1 -type f ! -name expect.txt | sort | while read -r f; do
                printf '%%%%file %s\n' "$(basename "$f")"
                cat "$f"
                [[ -z $(tail -c1 "$f") ]] || echo
            done
        } >"$out/$name"
    done
}

# The instrumented build has its own target directory: cargo locks a
# target directory per build, and this one may run beside `cargo test`.
FUZZ_TARGET_DIR=target/fuzz/build

build_policy() {
    ./scripts/setup.sh
    # The policy code needs no eBPF object; skipping its build keeps the
    # instrumented build to the user-space crates.
    export AYA_BUILD_SKIP=1
    echo "fuzz policy: building (cargo-fuzz, $NIGHTLY, debug assertions and overflow checks, sanitizer $sanitizer)"
    cargo +"$NIGHTLY" fuzz build --target-dir "$FUZZ_TARGET_DIR" --sanitizer "$sanitizer" policy
}

fuzz_policy() {
    build_policy
    local seeds=target/fuzz/seeds/policy corpus=target/fuzz/corpus/policy
    local artifacts=target/fuzz/artifacts/policy log
    policy_seeds "$seeds"
    mkdir -p "$corpus" "$artifacts"
    # The target writes its scratch files under TMPDIR: one removed on exit.
    scratch=$(mktemp -d -t emptcp-fuzz.XXXXXX)
    log=$scratch/libfuzzer.log
    trap 'rm -rf "$scratch"' EXIT
    local limit=
    [[ $time == 0 ]] || limit=" (at most $time s)"
    echo "fuzz policy: $runs inputs$limit, $(ls "$seeds" | wc -l) seeds, corpus $corpus"
    local rc=0 start=$SECONDS
    TMPDIR=$scratch cargo +"$NIGHTLY" fuzz run --target-dir "$FUZZ_TARGET_DIR" --sanitizer "$sanitizer" policy "$corpus" "$seeds" -- \
        -runs="$runs" -max_total_time="$time" -timeout=10 -rss_limit_mb=4096 \
        -max_len=16384 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        >"$log" 2>&1 || rc=$?
    local done_line
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)
    if ((rc != 0)) || [[ -z $done_line ]]; then
        tail -60 "$log"
        echo "fuzz policy: FAILED (exit $rc) after $((SECONDS - start)) s; crashing input in $artifacts/"
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
    echo "fuzz policy: $done_line 0 crashes; wall $((SECONDS - start)) s; corpus $(ls "$corpus" | wc -l) inputs"
}

fuzz_packets() {
    echo "fuzz packets: $frames frames${seed:+, seed $seed}"
    env EMPTCP_FUZZ_FRAMES="$frames" ${seed:+EMPTCP_FUZZ_SEED="$seed"} \
        cargo test --locked --release --test datapath_fuzz -- --nocapture
}

case $what in
    policy) fuzz_policy ;;
    build) build_policy ;;
    packets) fuzz_packets ;;
    *) usage ;;
esac
