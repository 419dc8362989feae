#!/usr/bin/env bash
# The short-flow policy over a tunnel path: WireGuard and the kernel's IP
# tunnels (needs their modules and wg(8): run it in the guest,
#   scripts/vm.sh run tests/mptcp/tunnel_check.sh "$PWD/target/release/emptcp" [KIND...]
# KIND: wg, gre, ipip, sit (over IPv4), ip6tnl, ip6gre (over IPv6); all by
# default).
#
# Path A (the first subflow, where the server's ADD_ADDR arrives and the
# download flows) is a tunnel of that kind (testbed.sh LINK_A=KIND: raw IP,
# link type none, gre, ipip, sit, tunnel6 or gre6), emptcp's XDP program on
# the client's tunnel device in skb (generic) mode, the only mode these
# devices have. For IPv4, then IPv6 (FAMILIES, "4 6"; ipip carries IPv4
# only), each in one testbed:
#
# * control, no emptcp: a 100 KB download joins path B; the server's ADD_ADDR
#   is in a capture on cli0 (the tunnel carried the traffic: its device
#   counted the bytes it decapsulated);
# * emptcp: plan notes the raw-IP link, status shows it (none, skb, in-kernel
#   recovery attached); a 100 KB download opens no subflow and does not fall
#   back, no ADD_ADDR passes the XDP hook (the capture sees the packets after
#   generic XDP) and every pure segment it saw has a valid TCP checksum;
# * 20 MB download, control: the address stripped, nothing recovering it:
#   single-path when the last byte arrives;
# * 20 MB download with `emptcp apply` alone: the in-kernel recovery delivers
#   the address (add_addr_recovered_kernel moves, kernel_recovery_failed 0)
#   and the client joins B before the last byte;
# * no fallback, no TCP checksum error, no "hw csum failure" in the kernel log.
#
# WireGuard marks decrypted packets CHECKSUM_UNNECESSARY, so the client's
# stack does not verify the TCP checksum of a segment emptcp rewrote: the
# TcpInCsumErrors check cannot fail there, and the capture's checksum check
# is what verifies the rewritten pure ACKs. GRE and IP-in-IP keep the
# checksum state the underlay gave the packet: with the server's offload
# off (`csum-offload off`) the client's stack verifies every segment.
# Exit 0 only if every check holds.
set -euo pipefail
ALL_KINDS=(wg gre ipip sit ip6tnl ip6gre)
# `--kinds`: the kinds a run without KIND covers (scripts/vm.sh reads them
# to say which of them a test set leaves out).
[[ ${1:-} == --kinds ]] && { echo "${ALL_KINDS[*]}"; exit 0; }
E=${1:?usage: tunnel_check.sh EMPTCP_BINARY [wg|gre|ipip|sit|ip6tnl|ip6gre ...] | --kinds}
shift
KINDS=("$@")
((${#KINDS[@]})) || KINDS=("${ALL_KINDS[@]}")
# The server's ADD_ADDR is sent once (no retransmission that could reach the
# client after the strip-only control).
export LAB_ID=-tunchk ADD_ADDR_TIMEOUT=0 LINK_A
# shellcheck source=check_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/check_lib.sh"

# policy RECOVER(0|1): emptcp on both client interfaces, cli0 in auto mode
# (plan picks skb on a raw-IP link).
policy() {
    local actions="record_flow, strip_add_addr, count"
    [[ $1 == 1 ]] && actions="record_flow, strip_add_addr, recover_add_addr, count"
    cat <<EOP
version: 1
settings: {flow_capacity: 16384}
interfaces:
  - {name: cli0, xdp_mode: auto, chains: [mptcp]}
  - {name: cli1, xdp_mode: native, chains: [mptcp]}
chains:
  - name: mptcp
    match: {remote: [192.0.2.0/24, 198.51.100.0/24, "2001:db8::/32"], remote_ports: [5201]}
    thresholds: {remove_below: 1MiB, recover_at: 4MiB}
    actions: [$actions]
EOP
}

# The server's segments on path A without payload (pure ACKs: where the
# kernel sends ADD_ADDR), as a capture filter.
pure_from_server() {
    if [[ $1 == 6 ]]; then
        echo 'src host 2001:db8:a::2 and ip6 and ip6[6] == 6 and ip6[4:2] - ((ip6[52] & 0xf0) >> 2) == 0'
    else
        echo 'src host 192.0.2.2 and tcp and ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) == 0'
    fi
}

# The link type `ip link` (and emptcp's plan and status) gives a tunnel kind.
link_type() {
    case $1 in
    wg) echo none ;;
    ip6tnl) echo tunnel6 ;;
    ip6gre) echo gre6 ;;
    *) echo "$1" ;;
    esac
}

# Bytes the client's tunnel device received (what it decrypted or
# decapsulated).
tunnel_rx_bytes() { ip netns exec "$CLI" cat /sys/class/net/cli0/statistics/rx_bytes; }

# family KIND 4|6: every check of the header on one testbed.
family() {
    local kind=$1 v=$2 t0=$SECONDS j f c s n lt stored malformed recovered failed
    lt=$(link_type "$kind")
    export IPV6=0
    [[ $v == 6 ]] && IPV6=1
    echo "== $kind, IPv$v"
    "$TB" up >/dev/null
    "$TB" csum-offload off
    echo "path A: $(ip -n "$CLI" -d -j link show cli0 | python3 -c 'import json,sys; d=json.load(sys.stdin)[0]; print(d["linkinfo"]["info_kind"], "link type", d["link_type"])') over $(ip -n "$CLI" -br addr show cli0u | awk '{print $3}')"
    local csum_failures
    csum_failures=$(hw_csum_failures)

    capture_start cli0
    read -r j _ _ _ < <(short_download)
    capture_stop
    check "control, no emptcp: 100 KB download joins B" "$j" 1
    n=$(capture_read cli0 "$(pure_from_server "$v")" | grep -c 'add-addr' || true)
    check_more "control: ADD_ADDR seen on cli0" "$n" 0
    # The join splits the download between the paths, but the server's first
    # window (10 segments of ~1.3-1.4 KB: MSS under the tunnel's MTU, 1420 for
    # WireGuard, 1476 for GRE, 1480 for IP-in-IP) leaves on path A before a
    # join can exist, so the tunnel carried over 10 KB.
    n=$(tunnel_rx_bytes)
    check_more "control: bytes received through the tunnel" "$n" 10000

    policy 1 >"$DIR/recover.yaml"
    policy 0 >"$DIR/strip.yaml"
    n=$(em plan -f "$DIR/recover.yaml" | grep -c "cli0: raw-IP link (link type $lt)" || true)
    check "plan notes cli0 as a raw-IP link" "$n" 1
    em apply -f "$DIR/recover.yaml" >/dev/null
    check "status of cli0: link type, raw IP, XDP mode, in-kernel recovery" "$(iface_status cli0)" "$lt True skb True"

    capture_start cli0
    read -r j f c _ < <(short_download)
    capture_stop
    check "100 KB download: joins / fallbacks / csum errors" "$j $f $c" "0 0 0"
    capture_read cli0 "$(pure_from_server "$v")" >"$DIR/pure.txt"
    check "100 KB download: ADD_ADDR past the XDP hook" "$(grep -c 'add-addr' "$DIR/pure.txt" || true)" 0
    check_more "100 KB download: pure segments from the server with a valid TCP checksum" \
        "$(grep -c '(correct)' "$DIR/pure.txt" || true)" 0
    check "100 KB download: pure segments with a bad checksum" "$(grep -cE 'incorrect|bad cksum' "$DIR/pure.txt" || true)" 0
    read -r stored malformed < <(datapath_events add_addr_stored malformed)
    check_more "addresses stored" "$stored" 0
    check "segments refused as malformed" "$malformed" 0

    em apply -f "$DIR/strip.yaml" >/dev/null
    read -r j f c s < <(download 20M)
    check "20 MB download, strip only: joins / fallbacks / csum errors / subflows at the last byte" "$j $f $c $s" "0 0 0 0"

    em apply -f "$DIR/recover.yaml" >/dev/null
    n=$(datapath_events add_addr_recovered_kernel)
    read -r j f c s < <(download 20M)
    check "20 MB download, apply alone: joins / fallbacks / csum errors / subflows at the last byte" "$j $f $c $s" "1 0 0 1"
    read -r recovered failed < <(datapath_events add_addr_recovered_kernel kernel_recovery_failed)
    check_more "add_addr_recovered_kernel" "$recovered" "$n"
    check "kernel_recovery_failed" "$failed" 0
    check "new \"hw csum failure\" lines in the kernel log" "$(($(hw_csum_failures) - csum_failures))" 0

    em destroy >/dev/null
    "$TB" down
    echo "$kind, IPv$v: $((SECONDS - t0)) s"
}

for kind in "${KINDS[@]}"; do
    case $kind in
    wg | gre | sit | ip6tnl | ip6gre) families=${FAMILIES:-4 6} ;;
    ipip) families=${FAMILIES:-4} families=${families//6/} ;; # IPv4 in IPv4 only
    *)
        echo "unknown tunnel kind '$kind' (wg, gre, ipip, sit, ip6tnl, ip6gre)" >&2
        exit 2
        ;;
    esac
    LINK_A=$kind
    for v in $families; do family "$kind" "$v"; done
done
finish
