#!/usr/bin/env bash
# The main job (README): set up the machine, build emptcp, build a two-path
# MPTCP testbed in namespaces, show the effect of examples/policies/quickstart.yaml
# (plan, apply, status, flows, kernel counters), and tear everything down.
#
#   client ns (emptcp-cli-demoN)                 server ns (emptcp-srv-demoN)
#   cli0 192.0.2.1    <== path A ==>  srv0 192.0.2.2     (first subflow)
#   cli1 198.51.100.1 <== path B ==>  srv1 198.51.100.2  (announced with ADD_ADDR)
#
# emptcp runs on the client's receive path (XDP on cli0/cli1).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "demo: needs root (namespaces, bpffs, XDP)" >&2; exit 1; }
./scripts/setup.sh
echo "== building emptcp (release)"
cargo build --release --locked -p emptcp 2>&1 | grep -vE '^warning: emptcp@|Compiling|^\s*$' || true
E=$PWD/target/release/emptcp
export LAB_ID=-demo$$
CLI=emptcp-cli$LAB_ID
TB=tests/mptcp/testbed.sh
ROOT=/sys/fs/bpf/emptcp-demo$$
POLICY=examples/policies/quickstart.yaml
em() { "$E" --bpffs-root "$ROOT" --netns "$CLI" "$@"; }

AGENT_PID=
cleanup() {
    echo "== teardown"
    [[ -n $AGENT_PID ]] && kill "$AGENT_PID" 2>/dev/null || true
    em destroy >/dev/null 2>&1 || true
    "$TB" down >/dev/null 2>&1 || true
    # testbed.sh's run directory (server and forwarder logs).
    rm -rf "${LAB_RUN:-${TMPDIR:-/tmp}/emptcp-testbed}$LAB_ID"
    rm -rf "$ROOT"
    echo "testbed and pins removed"
}
trap cleanup EXIT

joins() { "$TB" counters cli '^MPTcpExtMPJoinSynTx ' | awk '{print $2}'; }
fallbacks() { "$TB" counters cli '^(MPTcpExtMPCapableDataFallback|TcpInCsumErrors) ' | awk '{s+=$2} END {print s+0}'; }
xfer() { # $1 = download|upload, $2 = size, $3 = wait (s), more client args; prints the joins of that one connection
    local before after dir=$1 size=$2 wait=${3:-1}
    shift $(($# < 3 ? $# : 3))
    before=$(joins)
    "$TB" xfer --"$dir" "$size" --wait-subflows 1 --wait-timeout "$wait" "$@" >/dev/null
    after=$(joins)
    echo "$dir $size: second subflow joins +$((after - before))"
}

echo "== testbed up"
"$TB" up
"$TB" csum-offload off   # the client then verifies every TCP checksum we rewrite

echo; echo "== baseline, without emptcp: every flow opens the second subflow"
# The short download waits (up to 2 s, connection open) for the join before
# its 100 KB: the kernel opens no subflow once the server has closed its side,
# which it does about 1 ms after a short download starts.
short() { xfer download 100K 1 --wait-subflows-before 1 --wait-before-timeout 2; }
short
xfer upload 20M

echo; echo "== emptcp validate / plan / apply ($POLICY)"
em validate -f "$POLICY"
em plan -f "$POLICY"
em apply -f "$POLICY" | tail -1
echo "-- a second plan is empty:"
em plan --detailed-exitcode -f "$POLICY"

echo; echo "== with emptcp: a short flow stays on one path, a long one gets the second"
# The recovery agent (also part of `emptcp watch`) delivers stored ADD_ADDRs
# to pure downloads, whose segments have no option room left.
em agent 2>/dev/null &
AGENT_PID=$!
sleep 0.3
f0=$(fallbacks)
short
xfer upload 20M 3
xfer download 20M 3
echo "fallbacks to TCP / checksum errors during the demo: $(( $(fallbacks) - f0 ))"

echo; echo "== emptcp flows (a short download held open 2 s: its ADD_ADDR is stored, not delivered)"
"$TB" xfer --download 100K --linger 2 >/dev/null &
held=$!
sleep 1
em flows
wait "$held"

echo; echo "== emptcp status"
em status
echo; echo "== client kernel counters (MPTcpExt)"
"$TB" counters cli '^MPTcpExt(AddAddr|MPJoinSynTx|MPJoinSynAckRx|MPCapableDataFallback|EchoAddTx) |^TcpInCsumErrors '
