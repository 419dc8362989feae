#!/usr/bin/env bash
# Benchmarks (docs/benchmarks.md): every number is measured by this command
# in one run, on the machine it runs on. Needs root.
#   scripts/bench.sh              everything
#   scripts/bench.sh reconcile|watch|datapath|throughput|sender|recovery
#   scripts/bench.sh reconcile|watch|sender|throughput [--write-docs]
#     (apply and no-op reconcile; the watch daemon's latency, idle CPU and RSS;
#      the packet-copy sender's rates and trigger latency; download throughput
#      through the chain against a bare program, GRO off and on; --write-docs rewrites
#      the section's generated region of docs/benchmarks.md)
#   scripts/bench.sh recovery [--write-docs] [--runs N]
#     (recovery latency of a pure download: in-kernel path vs the agent;
#      --write-docs rewrites its generated region of docs/benchmarks.md)
#   scripts/bench.sh simulate [--write-docs] [--runs N] [--cpu C]
#     (replay rate and memory of `emptcp simulate` on synthetic captures of
#      10^6 and 4x10^6 packets, pinned to one CPU)
#   scripts/bench.sh effect       what a policy buys (not part of "everything": it
#                                 runs in the guest of scripts/vm.sh, ~16 min: the workload, then path A failing mid-run);
#                                 EMPTCP_EFFECT_ARGS passes options to
#                                 tests/mptcp/effect.py run (--seed, --conns, --rate, --only, --no-outage)
#   scripts/bench.sh segment-cost [POLICY...]
#     (ns per segment of the attached XDP program in a GRO download, from
#      kernel.bpf_stats_enabled: the bare program, then each policy; default
#      the quickstart; EMPTCP_SEGMENT_ROUNDS rounds, default 3)
#   scripts/bench.sh datapath [--write-docs] [--samples N] [--rounds R] [--flow-capacity N] [--only TEXT]...
#     (--write-docs rewrites the generated region of docs/benchmarks.md;
#      --flow-capacity sizes the connection tables as settings.flow_capacity
#      does, --only times the rows whose name contains TEXT (and a row that
#      gives the bare program's figure); neither with --write-docs: the docs
#      and targets are the whole table at the default sizing)
#   scripts/bench.sh compare REV [--pairs N] [--only TEXT]...
#     (not part of "everything", no target: whether this worktree's build
#      moved the datapath rows against revision REV's, beyond the noise:
#      the two datapath benches alternated N times (default 4), each row's
#      runs, medians and a verdict (scripts/bench_compare.py); REV's build
#      is kept in target/compare, so comparing with it again rebuilds
#      nothing)
#   scripts/bench.sh prior-art --checkout DIR [--write-docs] [--rounds R]
#     (not part of "everything": emptcp's data chain against the prior art's
#      C programs, eMPTCP 2022, on the same frame; DIR is a checkout of
#      github.com/chonepieceyb/mptcp_ebpf_control_frame; installs clang and
#      libbpf-dev to build them)
#   scripts/bench.sh profile PATH [--repeat]
#     (not part of "everything", no target: where the time of one datapath
#      path goes, per program and per source line of its JIT code; PATH is
#      part of a row name of the datapath table, --repeat profiles its
#      repeated frame instead of fresh ones; installs linux-perf)
# Exits non-zero when a measured target is missed (the other sections of
# `all` still run).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --locked -p emptcp -p emptcp-bench --bins 2>&1 | grep -E '^error' -A5 || true
what=${1:-all}

# Helpers of the testbed benchmarks (throughput, segment_cost), which set
# TB (testbed.sh), cli (the client namespace), hold (the holder's output
# file) and holder (its pid) as locals; bash's dynamic scope shares them.
# One 200 MB MPTCP download; its Mbit/s.
download_mbit() { "$TB" xfer --download 200M | python3 -c 'import json,sys; print(json.load(sys.stdin)["mbit_s"])'; }
# Bare XDP_PASS (--hold-pass) or the metadata program (--hold-meta) on both
# client interfaces, held by a process of its own.
hold_start() {
    ./target/release/emptcp-bench-datapath "$1" "$cli" cli0 cli1 >"$hold" &
    holder=$!
    for _ in $(seq 50); do
        grep -q ready "$hold" 2>/dev/null && return 0
        kill -0 "$holder" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: $1 did not attach" >&2; return 1
}
hold_stop() { kill "$holder"; wait "$holder" 2>/dev/null || true; holder=; }
# GRO on the client's veths (veth then merges in its NAPI poll what XDP passed).
gro_on() { local dev; for dev in cli0 cli1; do ip netns exec "$cli" ethtool -K "$dev" gro on >/dev/null; done; }

throughput() {
    # MPTCP download through native XDP on veth, with the quickstart chain
    # attached vs without, same testbed, same run; median of 5 each. Then
    # the same with GRO on the client's veths (ethtool -K gro on: veth then
    # merges what XDP passed in its NAPI poll), bare XDP_PASS and chain
    # interleaved, and a program that leaves per-packet metadata (what the
    # datapath's description in XDP metadata amounted to: GRO merges
    # nothing behind it). Returns 1 when a target is missed.
    local E=$PWD/target/release/emptcp TB=tests/mptcp/testbed.sh
    export LAB_ID=-bench$$
    local root=/sys/fs/bpf/emptcp-bench-tp$$ cli=emptcp-cli$LAB_ID hold=/tmp/emptcp-hold$$
    local holder=
    trap '[[ -n $holder ]] && kill "$holder" 2>/dev/null; "$E" --bpffs-root "$root" --netns "$cli" destroy >/dev/null 2>&1; "$TB" down >/dev/null 2>&1; rm -rf "$root" "$hold"; trap - RETURN EXIT' RETURN EXIT
    "$TB" up >/dev/null
    # Medians over ROUNDS; a verdict is the median of the rounds' own
    # ratios: a round's downloads follow each other within a second or two
    # and meet about the same load, while on a shared machine the load
    # moves between rounds by more than the targets' margins (a ratio of
    # two medians then compares downloads of different rounds).
    local rounds=${EMPTCP_THROUGHPUT_ROUNDS:-7}
    # The median of the numbers in the arguments, or on stdin without any.
    median() {
        { (($#)) && printf '%s\n' "$@" || cat; } |
            python3 -c 'import statistics, sys; print(f"{statistics.median(float(x) for x in sys.stdin.read().split()):.1f}")'
    }
    run() { for _ in $(seq "$rounds"); do download_mbit; done | median; }
    ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }
    # The rounds' ratios of $2 (Mbit/s, in round order) to $1, and their
    # median: "0.98 1.01 ..., median 0.990".
    per_round() {
        python3 -c "import statistics as s; p='$1'.split(); c='$2'.split(); r=[float(b)/float(a) for a, b in zip(p, c)]; print(' '.join(f'{x:.2f}' for x in r) + f', median {s.median(r):.3f}')"
    }
    # "met" / "**MISSED**": whether ratio $1 reaches $2.
    met() { python3 -c "print('met' if $1 >= $2 else '**MISSED**')"; }
    chain_on() { "$E" --bpffs-root "$root" --netns "$cli" apply -f examples/policies/quickstart.yaml >/dev/null; }
    chain_off() { "$E" --bpffs-root "$root" --netns "$cli" destroy >/dev/null; }
    # One download behind the bare XDP_PASS / through the quickstart chain
    # at XDP, appended to the array named $1.
    bare_into() { local -n into=$1; hold_start --hold-pass; into+=("$(download_mbit)"); hold_stop; }
    chain_into() { local -n into=$1; chain_on; into+=("$(download_mbit)"); chain_off; }
    local none status=0 r k rounds_xdp rounds_tc x
    none=$(run)
    # Bare XDP_PASS on the same interfaces: what any XDP program costs on
    # veth (the peer loses GSO), the baseline the chain is compared with;
    # one download of each per round, which goes first alternating.
    local xp=() xc=()
    for r in $(seq "$rounds"); do
        if ((r % 2)); then bare_into xp; chain_into xc; else chain_into xc; bare_into xp; fi
    done
    rounds_xdp=$(per_round "${xp[*]}" "${xc[*]}")
    x=${rounds_xdp##*median }
    echo "| MPTCP download 200 MB over veth, native XDP: bare XDP_PASS / quickstart chain (medians of $rounds interleaved rounds; ratio: the median of the rounds' ratios) | $(median "${xp[@]}") / $(median "${xc[@]}") Mbit/s | ${x}× | ≥ 0.95× — $(met "$x" 0.95) |"
    echo "| the same without any XDP program (veth keeps GSO), for reference (median of $rounds) | ${none} Mbit/s | medians: chain $(ratio "$(median "${xc[@]}")" "$none")×, bare XDP_PASS $(ratio "$(median "${xp[@]}")" "$none")× | |"
    echo "| rounds without GRO, Mbit/s: bare ${xp[*]}; chain ${xc[*]} | | per round: $rounds_xdp | |"
    [[ $(met "$x" 0.95) == met ]] || status=1

    # GRO on: ROUNDS rounds, each one download with the bare program, one with
    # the chain at XDP (before GRO, per wire segment) and one with the same
    # chain at TC ingress (after GRO, per merged skb: ingress_hook: tc,
    # examples/policies/after-gro.yaml) behind the same bare XDP_PASS, so
    # the veth runs the same XDP and GRO as in the baseline and the only
    # difference is the chain. The order rotates each round (a change of
    # the machine's load falls on all three).
    local gp=() gc=() gt=() gm=()
    gro_on
    bare() { bare_into gp; }
    at_xdp() { chain_into gc; }
    at_tc() {
        hold_start --hold-pass
        "$E" --bpffs-root "$root" --netns "$cli" apply -f examples/policies/after-gro.yaml >/dev/null
        gt+=("$(download_mbit)")
        # The chain ran there (and on nothing else): its `count` step
        # counted the download, and both interfaces are on the TC hook.
        "$E" --bpffs-root "$root" --netns "$cli" -o json status | python3 -c '
import json, sys
s = json.load(sys.stdin)
hooks = {i["name"]: i["ingress_hook"] for i in s["interfaces"]}
ran = s["programs"]["count"]["applied"]
if hooks != {"cli0": "tc", "cli1": "tc"} or ran < 1000:
    sys.exit(f"bench: the chain at TC did not run: hooks {hooks}, count applied {ran}")
'
        chain_off; hold_stop
    }
    local order=(bare at_xdp at_tc)
    for r in $(seq 0 $((rounds - 1))); do
        for k in 0 1 2; do "${order[(r + k) % 3]}"; done
    done
    # A kernel that gives XDP programs no bpf_xdp_adjust_meta (the verifier
    # refuses the helper: seen on a hardened 6.18 host build) cannot load
    # the metadata program: the holder says so and that row says why
    # instead of a figure. Any other failure to attach fails the command.
    local meta_row
    if hold_start --hold-meta 2>/dev/null; then
        gm=("$(run)")
        hold_stop
    else
        wait "$holder" 2>/dev/null || true
        holder=
        grep -q '^unsupported' "$hold" || { echo "bench: the metadata program did not attach" >&2; return 1; }
        meta_row="| GRO on, per-packet XDP metadata (the datapath's description before 2026-12: GRO merges nothing) | not measured: $(sed 's/^unsupported: //' "$hold") | | |"
    fi
    local gpass gchain
    gpass=$(median "${gp[@]}"); gchain=$(median "${gc[@]}")
    rounds_xdp=$(per_round "${gp[*]}" "${gc[*]}")
    rounds_tc=$(per_round "${gp[*]}" "${gt[*]}")
    x=${rounds_tc##*median }
    echo "| the same with GRO on the client's veths, chain at XDP (before GRO: once per wire segment): bare XDP_PASS / quickstart chain (medians of $rounds rotated rounds; ratio: the median of the rounds' ratios) | ${gpass} / ${gchain} Mbit/s | ${rounds_xdp##*median }× | |"
    echo "| GRO on, the same chain at TC ingress (\`ingress_hook: tc\`, after GRO: once per merged skb) behind the same bare XDP_PASS: bare XDP_PASS / bare XDP_PASS + chain at TC (the same rounds) | ${gpass} / $(median "${gt[@]}") Mbit/s | ${x}× | ≥ 0.97× — $(met "$x" 0.97) |"
    ((${#gm[@]})) && meta_row="| GRO on, per-packet XDP metadata (the datapath's description before 2026-12: GRO merges nothing) | ${gm[0]} Mbit/s | chain at XDP $(ratio "$gchain" "${gm[0]}")× | |"
    echo "$meta_row"
    echo "| GRO rounds, Mbit/s: bare ${gp[*]}; chain at XDP ${gc[*]}; chain at TC ${gt[*]} | | per round: at XDP $rounds_xdp; at TC $rounds_tc | |"
    [[ $(met "$x" 0.97) == met ]] || status=1
    return $status
}

segment_cost() {
    # What one segment costs in the receive path, not in BPF_PROG_TEST_RUN:
    # the kernel times every run of the attached XDP program (tail calls
    # included) when kernel.bpf_stats_enabled is 1. One 200 MB MPTCP
    # download with GRO on per round through the bare XDP_PASS program, then
    # through each policy given (default: the quickstart); ns per run =
    # run_time_ns / run_cnt of the attached program. Informational (no
    # target): the way to compare two builds or policies part by part
    # (docs/benchmarks.md "On a quiet machine"); steady to about +-10 ns on
    # a quiet machine.
    local E=$PWD/target/release/emptcp TB=tests/mptcp/testbed.sh
    export LAB_ID=-bench-sc$$
    local root=/sys/fs/bpf/emptcp-bench-sc$$ cli=emptcp-cli$LAB_ID hold=/tmp/emptcp-hold-sc$$
    local holder= stats_was
    stats_was=$(sysctl -n kernel.bpf_stats_enabled)
    trap '[[ -n $holder ]] && kill "$holder" 2>/dev/null; sysctl -qw kernel.bpf_stats_enabled="$stats_was"; "$E" --bpffs-root "$root" --netns "$cli" destroy >/dev/null 2>&1; "$TB" down >/dev/null 2>&1; rm -rf "$root" "$hold"; trap - RETURN EXIT' RETURN EXIT
    local policies=("$@") rounds=${EMPTCP_SEGMENT_ROUNDS:-3}
    ((${#policies[@]})) || policies=(examples/policies/quickstart.yaml)
    "$TB" up >/dev/null
    # ns per run of the XDP program named $1 over one download; its Mbit/s.
    timed() {
        local prog=$1 mbit out
        sysctl -qw kernel.bpf_stats_enabled=1
        mbit=$(download_mbit)
        out=$(bpftool prog show -j | python3 -c '
import json, sys
runs = [p for p in json.load(sys.stdin) if p["name"] == sys.argv[1] and p.get("run_cnt", 0) > 1000]
if len(runs) != 1:
    sys.exit("bench: %d attached programs named %s ran" % (len(runs), sys.argv[1]))
t, n = runs[0]["run_time_ns"], runs[0]["run_cnt"]
print("%.1f ns over %d segments, %s Mbit/s" % (t / n, n, sys.argv[2]))' "$prog" "$mbit") || out=
        sysctl -qw kernel.bpf_stats_enabled=0
        [[ -n $out ]] || return 1
        echo "$out"
    }
    echo "| program on the client's veths (GRO on, 200 MB download) | ns per segment (bpf_stats), each round |"
    echo "|---|---|"
    local r line p
    line=
    for r in $(seq "$rounds"); do
        hold_start --hold-pass
        gro_on
        line+="$(timed bench_pass); "
        hold_stop
    done
    echo "| bare XDP_PASS | ${line%; } |"
    for p in "${policies[@]}"; do
        line=
        for r in $(seq "$rounds"); do
            # A fresh apply per round: the program's counters start at 0.
            "$E" --bpffs-root "$root" --netns "$cli" apply -f "$p" >/dev/null
            gro_on
            line+="$(timed entry); "
            "$E" --bpffs-root "$root" --netns "$cli" destroy >/dev/null
        done
        echo "| emptcp, $p | ${line%; } |"
    done
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

# Runs "$@" with `--write-docs` naming the file it rewrites
# (docs/benchmarks.md); every other argument goes through as it is.
with_docs() {
    local cmd=()
    for a in "$@"; do
        case $a in --write-docs) cmd+=(--write-docs docs/benchmarks.md) ;; *) cmd+=("$a") ;; esac
    done
    "${cmd[@]}"
}

recovery() {
    with_docs python3 tests/mptcp/recovery_latency.py --emptcp "$PWD/target/release/emptcp" "$@"
}

prior_art() {
    local pkgs=()
    command -v clang >/dev/null || pkgs+=(clang)
    [[ -f /usr/include/bpf/bpf_helpers.h ]] || pkgs+=(libbpf-dev)
    if ((${#pkgs[@]})); then
        echo "bench: installing ${pkgs[*]} (to build the prior art's programs)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    fi
    with_docs python3 tests/mptcp/prior_art.py --emptcp "$PWD/target/release/emptcp" "$@"
}

profile() {
    local which=${1:?usage: scripts/bench.sh profile PATH [--repeat]} repeat=()
    [[ ${2:-} == --repeat ]] && repeat=(EMPTCP_BENCH_PROFILE_REPEAT=1)
    if ! command -v perf >/dev/null; then
        echo "bench: installing linux-perf (to sample the JIT code)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
    fi
    # The path runs alone on the last CPU for 10 s; perf samples that CPU
    # for 4 s once the frames flow (the bench prints "profiling").
    local cpu=$(($(nproc) - 1)) log pid
    log=$(mktemp)
    env EMPTCP_BENCH_PROFILE="$which" "${repeat[@]}" taskset -c "$cpu" \
        ./target/release/emptcp-bench-datapath >/dev/null 2>"$log" &
    pid=$!
    for _ in $(seq 100); do
        grep -q '^profiling' "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^profiling' "$log"; then
        cat "$log" >&2
        rm -f "$log"
        wait "$pid" || true
        return 1
    fi
    sleep 1
    local status=0
    python3 scripts/jit_profile.py --cpu "$cpu" --seconds 4 || status=1
    wait "$pid" || status=1
    rm -f "$log"
    return "$status"
}

# The datapath bench of revision REV against this worktree's, alternated
# (scripts/bench_compare.py): whether a change moved a row beyond the noise.
compare() {
    local rev=${1:?usage: scripts/bench.sh compare REV [--pairs N] [--only TEXT]...}
    shift
    local sha dir=target/compare log
    sha=$(git rev-parse --verify "$rev^{commit}")
    # A worktree and a target directory of its own: REV's build never
    # touches this one's, and stays for the next comparison.
    if [[ -e $dir/src/.git ]]; then
        git -C "$dir/src" checkout -q --detach "$sha"
    else
        # A worktree removed with target/ (cargo clean) is still registered.
        git worktree prune
        mkdir -p "$dir"
        git worktree add -q --detach "$dir/src" "$sha"
    fi
    echo "bench: building $rev (${sha:0:12}) in $dir (the first time: a few minutes)" >&2
    log=$(mktemp)
    # A failed build must not leave an older REV's binary to be compared.
    if ! (cd "$dir/src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked \
        -p emptcp-bench --bin emptcp-bench-datapath) >"$log" 2>&1; then
        grep -E '^error' -A5 "$log" >&2 || tail -20 "$log" >&2
        rm -f "$log"
        echo "bench: $rev's datapath bench did not build" >&2
        return 1
    fi
    rm -f "$log"
    local base=$dir/target/release/emptcp-bench-datapath
    python3 scripts/bench_compare.py --base "$base" --base-name "$rev (${sha:0:10})" \
        --head ./target/release/emptcp-bench-datapath \
        --head-name "this worktree ($(git describe --always --dirty))" "$@"
}

# The throughput table with its header line (machine, kernel, load); with
# --write-docs also into its generated region of docs/benchmarks.md. The
# status is the table's: 1 when a target is missed.
throughput_table() {
    local out status=0
    out=$(mktemp)
    {
        echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) vCPU $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r) (release build; load average $(cut -d' ' -f1 /proc/loadavg) at the start)."
        echo
        echo "| measurement | result | ratio | target |"
        echo "|---|---|---|---|"
        throughput
    } | tee "$out" || status=$? # pipefail: throughput's status
    if [[ ${1:-} == --write-docs ]]; then
        python3 - docs/benchmarks.md "$out" <<'PY'
import sys
doc, table = sys.argv[1], open(sys.argv[2]).read()
begin = "<!-- generated by `scripts/bench.sh throughput --write-docs` (bench.sh): begin -->"
end = "<!-- generated by `scripts/bench.sh throughput --write-docs`: end -->"
s = open(doc).read()
b, e = s.find(begin), s.find(end)
if b < 0 or e < b:
    sys.exit(f"{doc}: no generated region: put the lines\n{begin}\n{end}\nwhere the table goes")
open(doc, "w").write(s[:b] + begin + "\n" + table + s[e:])
print(f"\nwrote the generated region of {doc}")
PY
    elif [[ -n ${1:-} ]]; then
        echo "bench: throughput takes only --write-docs, not $1" >&2
        status=2
    fi
    rm -f "$out"
    return "$status"
}

case $what in
    reconcile) with_docs ./target/release/emptcp-bench "${@:2}" ;;
    watch) with_docs ./target/release/emptcp-bench --watch "${@:2}" ;;
    datapath) ./target/release/emptcp-bench-datapath "${@:2}" ;;
    sender) with_docs ./target/release/emptcp-bench-sender "${@:2}" ;;
    simulate) ./target/release/emptcp-bench-simulate "${@:2}" ;;
    throughput) throughput_table "${@:2}" ;;
    segment-cost) segment_cost "${@:2}" ;;
    recovery) recovery "${@:2}" ;;
    prior-art) prior_art "${@:2}" ;;
    profile) profile "${@:2}" ;;
    compare) compare "${@:2}" ;;
    effect) effect ;;
    all)
        status=0
        ./target/release/emptcp-bench || status=1; echo
        ./target/release/emptcp-bench --watch || status=1; echo
        ./target/release/emptcp-bench-datapath || status=1; echo
        ./target/release/emptcp-bench-sender || status=1; echo
        ./target/release/emptcp-bench-simulate || status=1; echo
        recovery || status=1; echo
        throughput_table || status=1
        exit $status ;;
    *) echo "usage: $0 [all|reconcile|watch|datapath|throughput|segment-cost|sender|simulate|recovery|effect|prior-art]" >&2; exit 1 ;;
esac
