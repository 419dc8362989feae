#!/usr/bin/env bash
# Re-makes the reference captures of `emptcp simulate` with the project's own
# two-path testbed (tests/mptcp/testbed.sh), WITHOUT emptcp attached:
#
#   downloads.pcap.gz   three MPTCP downloads on path A, in this order:
#                       100 KiB (short), 2 MiB (medium), 6 MiB (long, waits
#                       for the join the server's ADD_ADDR allows on path B)
#   reqresp.pcap.gz     one MPTCP connection that waits for its join on path
#                       B, then 4 request/response rounds of 512 KiB each way
#                       with a 300 ms pause before each request: idle
#                       periods on an open connection (packet copy's
#                       subflow_idle) and a size that grows in steps over
#                       more than a second (flow_bytes_at)
#   uploads.pcap.gz     two MPTCP uploads on path A: 100 KiB, then 6 MiB
#                       (waits for the join): the server's segments are
#                       pure ACKs, with room for a re-inserted ADD_ADDR
#   loss.pcap.gz        one 6 MiB download through a token bucket on both
#                       of the server's interfaces (tbf 100mbit, 8 KB
#                       queue): the queue overflows, so the capture holds
#                       losses, SACKs and retransmissions (the host kernel
#                       has no netem)
#   ipv6.pcap.gz        the downloads' short and long cases over IPv6
#                       (100 KiB, 6 MiB; 2001:db8:a::/64 on path A,
#                       2001:db8:b::/64 on path B, the server's endpoint on
#                       B alone announced by ADD_ADDR), with v6xfer.py (the
#                       testbed's client speaks IPv4 only)
#
# Taken on the client (`tcpdump -i any`: Linux cooked v1 headers, so the
# direction of each packet is recorded), snaplen 128 (headers only: the
# replay zero-fills payloads), gzip -9. Offloads are off on all four veth
# ends, so the capture holds the wire-sized segments XDP sees (not GRO/TSO
# super-packets) with complete checksums.
#
# Needs root, iproute2, ethtool, python3, tcpdump (apt-get install tcpdump).
# Usage: tests/captures/make.sh [OUTDIR [NAME...]]   (default: this directory,
#        every capture)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$HERE}
shift || true
NAMES=("$@")
[[ ${#NAMES[@]} -gt 0 ]] || NAMES=(downloads reqresp uploads loss ipv6)
TB="$HERE/../mptcp/testbed.sh"
export LAB_ID=-cap$$ LAB_RUN=${TMPDIR:-/tmp}/emptcp-capture
CLI=emptcp-cli$LAB_ID SRV=emptcp-srv$LAB_ID
command -v tcpdump >/dev/null || { echo "make.sh: needs tcpdump (apt-get install tcpdump)" >&2; exit 1; }

cleanup() {
    [[ -n ${TCPDUMP:-} ]] && kill "$TCPDUMP" 2>/dev/null || true
    [[ -n ${V6SERVER:-} ]] && kill "$V6SERVER" 2>/dev/null || true
    "$TB" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$TB" up
for d in cli0 cli1; do ip netns exec "$CLI" ethtool -K "$d" tso off gso off gro off tx off >/dev/null; done
for d in srv0 srv1; do ip netns exec "$SRV" ethtool -K "$d" tso off gso off gro off tx off >/dev/null; done

capture() {
    local name=$1; shift
    local pcap="$LAB_RUN$LAB_ID/$name.pcap"
    ip netns exec "$CLI" tcpdump -i any -s 128 -B 65536 -w "$pcap" 'tcp port 5201' 2>"$LAB_RUN$LAB_ID/$name.log" &
    TCPDUMP=$!
    sleep 1   # tcpdump opens its socket
    "$@"
    sleep 2   # tcpdump drains its buffer
    kill -INT "$TCPDUMP"; wait "$TCPDUMP" 2>/dev/null || true; TCPDUMP=
    # Every packet the filter took must be in the file.
    local log="$LAB_RUN$LAB_ID/$name.log" captured filtered
    captured=$(sed -n 's/^\([0-9]*\) packets captured/\1/p' "$log")
    filtered=$(sed -n 's/^\([0-9]*\) packets received by filter/\1/p' "$log")
    if [[ -z $captured || $captured != "$filtered" ]] || ! grep -q '^0 packets dropped by kernel' "$log"; then
        echo "make.sh: tcpdump lost packets (run it again on a quieter machine):" >&2
        cat "$log" >&2
        exit 1
    fi
    gzip -9 -n -c "$pcap" > "$OUT/$name.pcap.gz"
    echo "$OUT/$name.pcap.gz: $(stat -c %s "$OUT/$name.pcap.gz") bytes"
}

downloads() {
    "$TB" xfer --download 100K
    "$TB" xfer --download 2M
    "$TB" xfer --download 6M --wait-subflows 1 --wait-timeout 3
}
reqresp() {
    "$TB" xfer --reqresp 4 --rr-size 512K --rr-pause 0.3 --wait-subflows 1 --wait-timeout 3
}
uploads() {
    "$TB" xfer --upload 100K
    "$TB" xfer --upload 6M --wait-subflows 1 --wait-timeout 3
}
loss() {
    local d
    for d in srv0 srv1; do
        ip netns exec "$SRV" tc qdisc replace dev $d root tbf rate 100mbit burst 8kb limit 8kb
    done
    "$TB" xfer --download 6M --wait-subflows 1 --wait-timeout 3
    for d in srv0 srv1; do ip netns exec "$SRV" tc qdisc del dev $d root; done
}
v6_up() {
    local ns
    for ns in "$CLI" "$SRV"; do
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
    done
    for d in cli0 cli1; do ip netns exec "$CLI" sysctl -qw net.ipv6.conf.$d.disable_ipv6=0; done
    for d in srv0 srv1; do ip netns exec "$SRV" sysctl -qw net.ipv6.conf.$d.disable_ipv6=0; done
    ip netns exec "$CLI" ip -6 addr add 2001:db8:a::1/64 dev cli0 nodad
    ip netns exec "$CLI" ip -6 addr add 2001:db8:b::1/64 dev cli1 nodad
    ip netns exec "$SRV" ip -6 addr add 2001:db8:a::2/64 dev srv0 nodad
    ip netns exec "$SRV" ip -6 addr add 2001:db8:b::2/64 dev srv1 nodad
    # Only the IPv6 address is announced (the testbed announces 198.51.100.2).
    ip netns exec "$SRV" ip mptcp endpoint flush
    ip netns exec "$SRV" ip mptcp endpoint add 2001:db8:b::2 dev srv1 signal
    ip netns exec "$SRV" python3 "$HERE/v6xfer.py" server :: 5201 >/dev/null &
    V6SERVER=$!
    sleep 1
}
ipv6() {
    ip netns exec "$CLI" python3 "$HERE/v6xfer.py" client 2001:db8:a::2 5201 102400 1
    ip netns exec "$CLI" python3 "$HERE/v6xfer.py" client 2001:db8:a::2 5201 6291456 1
}
for n in "${NAMES[@]}"; do
    case $n in
        downloads|reqresp|uploads|loss) capture "$n" "$n" ;;
        ipv6) v6_up; capture ipv6 ipv6 ;;
        *) echo "make.sh: no capture named $n (downloads, reqresp, uploads, loss, ipv6)" >&2; exit 1 ;;
    esac
done
