#!/usr/bin/env bash
# Benchmarks (docs/benchmarks.md): every number is measured by this command
# in one run, on the machine it runs on. Needs root.
#   scripts/bench.sh              everything
#   scripts/bench.sh reconcile|watch|datapath|throughput|sender|recovery
#   scripts/bench.sh recovery [--write-docs] [--runs N]
#     (recovery latency of a pure download: in-kernel path vs the agent;
#      --write-docs rewrites its generated region of docs/benchmarks.md)
#   scripts/bench.sh simulate [--write-docs] [--runs N] [--cpu C]
#     (replay rate and memory of `emptcp simulate` on synthetic captures of
#      10^6 and 4x10^6 packets, pinned to one CPU)
#   scripts/bench.sh effect       what a policy buys (not part of "everything": it
#                                 runs in the guest of scripts/vm.sh, ~15 min);
#                                 EMPTCP_EFFECT_ARGS passes options to
#                                 tests/mptcp/effect.py run (--seed, --conns, --rate, --only)
#   scripts/bench.sh datapath [--write-docs] [--samples N] [--rounds R]
#     (--write-docs rewrites the generated region of docs/benchmarks.md)
# Exits non-zero when a measured target is missed (the other sections of
# `all` still run).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --locked -p emptcp -p emptcp-bench --bins 2>&1 | grep -E '^error' -A5 || true
what=${1:-all}

throughput() {
    # MPTCP download through native XDP on veth, with the quickstart chain
    # attached vs without, same testbed, same run; median of 5 each.
    local E=$PWD/target/release/emptcp TB=tests/mptcp/testbed.sh
    export LAB_ID=-bench$$
    local root=/sys/fs/bpf/emptcp-bench-tp$$ cli=emptcp-cli$LAB_ID
    trap '"$E" --bpffs-root "$root" --netns "$cli" destroy >/dev/null 2>&1; "$TB" down >/dev/null 2>&1; rm -rf "$root"' RETURN
    "$TB" up >/dev/null
    run() { for _ in 1 2 3 4 5; do "$TB" xfer --download 200M | python3 -c 'import json,sys; print(json.load(sys.stdin)["mbit_s"])'; done | sort -n | sed -n 3p; }
    local none pass with holder
    none=$(run)
    # Bare XDP_PASS on the same interfaces: what any XDP program costs on
    # veth (the peer loses GSO), the baseline the chain is compared with.
    ./target/release/emptcp-bench-datapath --hold-pass "$cli" cli0 cli1 > /tmp/emptcp-hold$$ &
    holder=$!
    for _ in $(seq 50); do grep -q ready /tmp/emptcp-hold$$ 2>/dev/null && break; sleep 0.1; done
    pass=$(run)
    kill "$holder"; wait "$holder" 2>/dev/null || true; rm -f /tmp/emptcp-hold$$
    "$E" --bpffs-root "$root" --netns "$cli" apply -f examples/policies/quickstart.yaml >/dev/null
    with=$(run)
    echo "| MPTCP download 200 MB over veth, native XDP: bare XDP_PASS / quickstart chain (median of 5) | ${pass} / ${with} Mbit/s | $(python3 -c "print(f'{$with/$pass:.2f}×')") | ≥ 0.95× |"
    echo "| the same without any XDP program (veth keeps GSO), for reference | ${none} Mbit/s | chain $(python3 -c "print(f'{$with/$none:.2f}×')"), bare XDP_PASS $(python3 -c "print(f'{$pass/$none:.2f}×')") | |"
}

effect() {
    # Shaped paths need netem, which the host kernel lacks: the workload
    # runs in Debian's 6.12 kernel under QEMU (scripts/vm.sh, image cached),
    # its raw result comes back on the guest's output, and the host renders
    # the tables, the plot and the targets (exit 1 when one is missed).
    local out=target/bench/effect host
    mkdir -p "$out"
    # shellcheck disable=SC2086
    ./scripts/vm.sh run python3 tests/mptcp/effect.py run --emptcp "$PWD/target/release/emptcp" \
        ${EMPTCP_EFFECT_ARGS:-} >"$out/guest.log" 2>&1 || {
        grep -v '^EFFECT-RESULT' "$out/guest.log" | tail -40 >&2
        echo "bench: the effect run failed in the guest (log: $out/guest.log)" >&2
        return 1
    }
    grep '^effect: ' "$out/guest.log" >&2 || true
    grep '^EFFECT-RESULT ' "$out/guest.log" | tail -1 | cut -d' ' -f2- >"$out/result.json"
    host="$(nproc) vCPU $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r), load average $(cut -d' ' -f1 /proc/loadavg) at the end"
    python3 tests/mptcp/effect.py render "$out/result.json" --doc docs/benchmarks.md \
        --svg docs/effect-fct.svg --host "$host"
}

recovery() {
    local args=()
    for a in "$@"; do
        case $a in --write-docs) args+=(--write-docs docs/benchmarks.md) ;; *) args+=("$a") ;; esac
    done
    python3 tests/mptcp/recovery_latency.py --emptcp "$PWD/target/release/emptcp" "${args[@]}"
}

case $what in
    reconcile) ./target/release/emptcp-bench ;;
    watch) ./target/release/emptcp-bench --watch ;;
    datapath) ./target/release/emptcp-bench-datapath "${@:2}" ;;
    sender) ./target/release/emptcp-bench-sender ;;
    simulate) ./target/release/emptcp-bench-simulate "${@:2}" ;;
    throughput) echo "| measurement | result | ratio | target |"; echo "|---|---|---|---|"; throughput ;;
    recovery) recovery "${@:2}" ;;
    effect) effect ;;
    all)
        ./target/release/emptcp-bench; echo
        ./target/release/emptcp-bench --watch; echo
        status=0
        ./target/release/emptcp-bench-datapath || status=1; echo
        ./target/release/emptcp-bench-sender; echo
        ./target/release/emptcp-bench-simulate || status=1; echo
        recovery || status=1; echo
        echo "| measurement | result | ratio | target |"; echo "|---|---|---|---|"; throughput
        exit $status ;;
    *) echo "usage: $0 [all|reconcile|watch|datapath|throughput|sender|simulate|recovery|effect]" >&2; exit 1 ;;
esac
