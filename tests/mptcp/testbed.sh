#!/usr/bin/env bash
# Two-path MPTCP testbed: netns emptcp-cli$ID (client) <-> emptcp-srv$ID (server), two veth pairs.
#
#   emptcp-cli                               emptcp-srv
#   cli0 192.0.2.1/24     <== path A ==>  srv0 192.0.2.2/24     (initial subflow)
#   cli1 198.51.100.1/24  <== path B ==>  srv1 198.51.100.2/24  (announced via ADD_ADDR)
#
# Server: endpoint 198.51.100.2 "signal"  -> sends ADD_ADDR on the initial subflow.
# Client: NO endpoints (by default) + limits add_addr_accepted/subflows > 0, so the ONLY
#         way a 2nd subflow appears is: client receives ADD_ADDR -> MP_JOIN to 198.51.100.2.
#
# Verbs:
#   up | down | status
#   counters cli|srv [REGEX]     MPTcpExt*/Tcp csum counters (absolute, "Name Value" lines)
#   monitor-start cli|srv / monitor-stop cli|srv   (ip mptcp monitor -> $RUN/monitor-<ns>.log)
#   xfer [mptcp_xfer.py client args]     e.g. xfer --download 10M --wait-subflows 1
#   prio backup|nobackup         server flips its endpoint -> server sends MP_PRIO to client
#   xdp-attach DEV xdp|xdpgeneric|xdpdrv OBJ [SEC]   (DEV in emptcp-cli, e.g. cli0)
#   xdp-detach [DEV]             detach from cli0+cli1 (default) or DEV
#   csum-offload on|off          TX csum offload on server veths (off => client verifies TCP csum)
#   shape A|B KEY=VAL...         impair a path, both directions (netem at the root of both of
#                                its veth ends): delay=25ms jitter=5ms loss=1% rate=8mbit limit=60
#                                (limit: the bottleneck queue, packets); TSO/GSO off on the path
#                                so netem drops, delays and paces wire-size packets.
#                                Needs sch_netem (the guest of scripts/vm.sh has it)
#   shape A|B off                remove it
#
# Env: LAB_RUN (${TMPDIR:-/tmp}/emptcp-testbed)  LAB_ID ("", suffix for parallel instances)  PORT (5201)  START_SERVER (1)
#      CLIENT_EP (none|subflow|fullmesh)  -- non-"none" adds a client endpoint on cli1, which
#      creates subflows WITHOUT needing ADD_ADDR (don't use it for ADD_ADDR tests).
#      ADD_ADDR_TIMEOUT (unset = kernel default 120s; ADD_ADDR is retransmitted if no echo)
#      RP_FILTER (0)  CLI_LIMITS ("subflows 4 add_addr_accepted 4")  SRV_LIMITS ("subflows 4 add_addr_accepted 0")
#      LINK_A, LINK_B (veth): "vlan" makes that path 802.1Q sub-interfaces (id VLAN_ID, 100) with
#      the usual names (cli0/srv0, cli1/srv1) over a veth pair cli0v/srv0v (cli1v/srv1v) that
#      carries the tagged frames. Needs 8021q (the guest of scripts/vm.sh has it)
#      "tun" makes that path a raw-IP link: a TUN device at each end (same names, no Ethernet
#      header, ARPHRD none), joined by tunfwd.py, which the testbed starts (pid in
#      $RUN/tunfwd-<dev>.pid) and stops on `down`. Use LINK_A=tun to carry the initial subflow
#      (and the server's ADD_ADDR) over it.
#      "wg" makes that path a WireGuard tunnel (raw IP, ARPHRD none, same names): a wireguard
#      device at each end, one peer each, over an underlay veth pair cli0u/srv0u (cli1u/srv1u)
#      on 203.0.113.201|202/30 (path B: .205|.206/30), UDP port 51820 (path B: 51821); keys
#      made per `up` with wg(8) under $RUN. Needs the wireguard module and wireguard-tools
#      (the guest of scripts/vm.sh has both; the 6.18 host has neither).
#      "ipip", "gre" and "sit" make that path a point-to-point IP tunnel of that kind (raw
#      IP: link type ipip, gre or sit, same names) over the same underlay veth pair and /30
#      as "wg"; ipip carries IPv4 only, gre and sit (mode any) IPv4 and IPv6. "ip6tnl" and
#      "ip6gre" do the same over IPv6 (link type tunnel6 or gre6; mode any: IPv4 and IPv6
#      inside), the underlay on 2001:db8:ff:N::1|2/64 (N the path, 0 or 1). Need the
#      ipip, ip_gre, sit, ip6_tunnel or ip6_gre module (the guest loads them on demand; the
#      6.18 host has none of them).
#      IPV6 (0): 1 enables IPv6 in both namespaces and adds 2001:db8:a::1|2/64 on path A and
#      2001:db8:b::1|2/64 on path B (nodad) beside the IPv4 addresses; the server then announces
#      2001:db8:b::2 (not 198.51.100.2), listens on [::] and `xfer` connects to 2001:db8:a::2.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_ID=${LAB_ID:-}            # e.g. LAB_ID=-7 -> emptcp-cli-7/emptcp-srv-7, for parallel instances
RUN=${LAB_RUN:-${TMPDIR:-/tmp}/emptcp-testbed}$LAB_ID
CLI=emptcp-cli$LAB_ID
SRV=emptcp-srv$LAB_ID
PORT=${PORT:-5201}
START_SERVER=${START_SERVER:-1}
CLIENT_EP=${CLIENT_EP:-none}
PY=${PYTHON:-python3}
RP_FILTER=${RP_FILTER:-0}
CLI_LIMITS=${CLI_LIMITS:-"subflows 4 add_addr_accepted 4"}
SRV_LIMITS=${SRV_LIMITS:-"subflows 4 add_addr_accepted 0"}

IPV6=${IPV6:-0}

A_CLI=192.0.2.1   A_SRV=192.0.2.2
B_CLI=198.51.100.1 B_SRV=198.51.100.2
A6_CLI=2001:db8:a::1 A6_SRV=2001:db8:a::2
B6_CLI=2001:db8:b::1 B6_SRV=2001:db8:b::2
# What the server announces and the client connects to: one family per testbed, so
# a connection is never offered an address of the other family.
if [[ $IPV6 == 1 ]]; then SIGNAL=$B6_SRV HOST=$A6_SRV BIND=::; else SIGNAL=$B_SRV HOST=$A_SRV BIND=0.0.0.0; fi

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
ns_of() { case $1 in cli|$CLI) echo $CLI;; srv|$SRV) echo $SRV;; *) echo "bad ns '$1' (cli|srv)" >&2; exit 1;; esac; }
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
die() { echo "testbed: $*" >&2; exit 1; }

ns_sysctls() {
    local ns=$1
    nsx "$ns" sysctl -qw net.mptcp.enabled=1
    # rp_filter: asymmetric subflows (src on one veth, dst on the other, e.g. CLIENT_EP=subflow)
    # are dropped under strict rp_filter=1; IPv4 devconf is inherited from init_net, so set it
    # explicitly (default 0).
    nsx "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=$RP_FILTER net.ipv4.conf.default.rp_filter=$RP_FILTER
    # IPv4 only by default (no DAD/RS noise in XDP counters, no v6 link-local subflow
    # candidates); IPV6=1 enables it, before the links exist, so they inherit it.
    local off=1; [[ $IPV6 == 1 ]] && off=0
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=$off net.ipv6.conf.default.disable_ipv6=$off
    if [[ -n ${ADD_ADDR_TIMEOUT:-} ]]; then nsx "$ns" sysctl -qw net.mptcp.add_addr_timeout="$ADD_ADDR_TIMEOUT"; fi
    nsx "$ns" ip link set lo up
}

start_server() {
    mkdir -p "$RUN"
    rm -f "$RUN/server.ready"
    # call ip directly (not via a shell function) so $! is the real server pid:
    # 'ip netns exec' and 'setsid' both exec() in place
    ip netns exec $SRV setsid "$PY" "$HERE/mptcp_xfer.py" server --bind "$BIND" --port "$PORT" \
        --ready-file "$RUN/server.ready" >"$RUN/server.log" 2>&1 < /dev/null &
    echo $! >"$RUN/server.pid"
    for _ in $(seq 100); do [[ -s $RUN/server.ready ]] && return 0; sleep 0.02; done
    die "server did not start (see $RUN/server.log)"
}

kill_pidfile() {
    local f=$1 pid
    [[ -f $f ]] || return 0
    pid=$(cat "$f")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    rm -f "$f"
}

up() {
    ns_exists $CLI && die "$CLI exists; run '$0 down' first"
    mkdir -p "$RUN"
    ip netns add $CLI
    ip netns add $SRV
    ns_sysctls $CLI
    ns_sysctls $SRV
    # path A and path B
    link_path cli0 srv0 "${LINK_A:-veth}"
    link_path cli1 srv1 "${LINK_B:-veth}"
    nsx $CLI ip addr add $A_CLI/24 dev cli0
    nsx $CLI ip addr add $B_CLI/24 dev cli1
    nsx $SRV ip addr add $A_SRV/24 dev srv0
    nsx $SRV ip addr add $B_SRV/24 dev srv1
    if [[ $IPV6 == 1 ]]; then
        nsx $CLI ip addr add $A6_CLI/64 dev cli0 nodad
        nsx $CLI ip addr add $B6_CLI/64 dev cli1 nodad
        nsx $SRV ip addr add $A6_SRV/64 dev srv0 nodad
        nsx $SRV ip addr add $B6_SRV/64 dev srv1 nodad
    fi
    for d in cli0 cli1; do nsx $CLI ip link set $d up; nsx $CLI sysctl -qw net.ipv4.conf.$d.rp_filter=$RP_FILTER; done
    for d in srv0 srv1; do nsx $SRV ip link set $d up; nsx $SRV sysctl -qw net.ipv4.conf.$d.rp_filter=$RP_FILTER; done

    # server: accept joins (subflows limit counts EXTRA subflows), announce path B
    nsx $SRV ip mptcp limits set $SRV_LIMITS
    nsx $SRV ip mptcp endpoint flush
    nsx $SRV ip mptcp endpoint add $SIGNAL dev srv1 id 2 signal
    # client: accept ADD_ADDRs and create joins for them; no local endpoints by default
    nsx $CLI ip mptcp limits set $CLI_LIMITS
    nsx $CLI ip mptcp endpoint flush
    case $CLIENT_EP in
        none) ;;
        subflow) nsx $CLI ip mptcp endpoint add "$(b_cli)" dev cli1 id 2 subflow ;;
        fullmesh) nsx $CLI ip mptcp endpoint add "$(b_cli)" dev cli1 id 2 subflow fullmesh ;;
        *) die "CLIENT_EP must be none|subflow|fullmesh" ;;
    esac
    # wait for carrier on all four ends (veth normally has it immediately; a TUN
    # device once its forwarder holds it). "cli0@peer:" on veth/vlan, "cli0:" on tun.
    local ok=0
    for _ in $(seq 250); do
        if [[ $(ip -n $CLI -o link show up | grep -cE ' cli[01][@:].*LOWER_UP') == 2 &&
              $(ip -n $SRV -o link show up | grep -cE ' srv[01][@:].*LOWER_UP') == 2 ]]; then ok=1; break; fi
        sleep 0.02
    done
    [[ $ok == 1 ]] || die "links did not come up: $(ip -n $CLI -o link show; ip -n $SRV -o link show)"
    [[ $IPV6 == 1 ]] && v6_ready

    [[ $START_SERVER == 1 ]] && start_server
    return 0
}

# link_path CLI_DEV SRV_DEV veth|vlan|tun|wg|ipip|gre|sit|ip6tnl|ip6gre: one path's two ends.
link_path() {
    local c=$1 s=$2
    case $3 in
        veth) ip link add "$c" netns $CLI type veth peer name "$s" netns $SRV ;;
        vlan)
            ip link add "${c}v" netns $CLI type veth peer name "${s}v" netns $SRV
            nsx $CLI ip link set "${c}v" up
            nsx $SRV ip link set "${s}v" up
            nsx $CLI ip link add link "${c}v" name "$c" type vlan id "${VLAN_ID:-100}" ||
                die "no VLAN devices on this kernel ($(uname -r)): the guest of scripts/vm.sh has 8021q"
            nsx $SRV ip link add link "${s}v" name "$s" type vlan id "${VLAN_ID:-100}"
            ;;
        tun)
            nsx $CLI ip tuntap add dev "$c" mode tun ||
                die "no TUN device on this kernel ($(uname -r)): modprobe tun"
            nsx $SRV ip tuntap add dev "$s" mode tun
            start_tunfwd "$c" "$s"
            ;;
        wg) wg_path "$c" "$s" ;;
        ipip | gre | sit | ip6tnl | ip6gre) ip_tunnel_path "$c" "$s" "$3" ;;
        *) die "LINK_A/LINK_B must be veth, vlan, tun, wg, ipip, gre, sit, ip6tnl or ip6gre, not '$3'" ;;
    esac
}

# underlay CLI_DEV SRV_DEV [6]: the veth pair a tunnel path runs over
# (CLI_DEVu/SRV_DEVu), up, on its own /30 per path (203.0.113.201|202 for path A,
# .205|.206 for path B), or with 6 on its own /64 (2001:db8:ff:N::1|2, IPv6 enabled on
# these two devices only, whatever IPV6 says); sets UC and US to the two ends' addresses.
underlay() {
    local c=$1 s=$2 n=${1: -1} plen=30 flags=()
    UC=203.0.113.$((201 + 4 * n)) US=203.0.113.$((202 + 4 * n))
    ip link add "${c}u" netns $CLI type veth peer name "${s}u" netns $SRV
    if [[ ${3:-} == 6 ]]; then
        UC=2001:db8:ff:$n::1 US=2001:db8:ff:$n::2 plen=64 flags=(nodad)
        nsx $CLI sysctl -qw "net.ipv6.conf.${c}u.disable_ipv6=0"
        nsx $SRV sysctl -qw "net.ipv6.conf.${s}u.disable_ipv6=0"
    fi
    nsx $CLI ip addr add "$UC/$plen" dev "${c}u" "${flags[@]}"
    nsx $SRV ip addr add "$US/$plen" dev "${s}u" "${flags[@]}"
    nsx $CLI ip link set "${c}u" up
    nsx $SRV ip link set "${s}u" up
}

# ip_tunnel_path CLI_DEV SRV_DEV ipip|gre|sit|ip6tnl|ip6gre: a point-to-point tunnel of
# that kind between the namespaces over its underlay (IPv6 for ip6tnl and ip6gre). The
# kernel hands what it decapsulates to the tunnel device starting at the inner IP
# header: a raw-IP link. sit and ip6tnl in mode any carry IPv4 and IPv6.
ip_tunnel_path() {
    local c=$1 s=$2 kind=$3 mode=() hops=(ttl 64)
    case $kind in
    sit | ip6tnl) mode=(mode any) ;;
    esac
    case $kind in
    ip6tnl | ip6gre)
        underlay "$c" "$s" 6
        hops=(hoplimit 64)
        ;;
    *) underlay "$c" "$s" ;;
    esac
    nsx $CLI ip link add "$c" type "$kind" "${mode[@]}" local "$UC" remote "$US" "${hops[@]}" 2>/dev/null ||
        die "no $kind devices on this kernel ($(uname -r)): the guest of scripts/vm.sh has the module"
    nsx $SRV ip link add "$s" type "$kind" "${mode[@]}" local "$US" remote "$UC" "${hops[@]}"
}

# wg_path CLI_DEV SRV_DEV: a WireGuard tunnel between the namespaces. Each end has
# one peer that takes every address (allowed-ips 0/0, ::/0): the routes, not the
# peer table, choose the path. The underlay gets its own /30 and port per path so
# both paths can be WireGuard at once.
wg_path() {
    local c=$1 s=$2 n=${1: -1}
    local port=$((51820 + n))
    nsx $CLI ip link add "$c" type wireguard 2>/dev/null ||
        die "no WireGuard devices on this kernel ($(uname -r)): the guest of scripts/vm.sh has the wireguard module"
    command -v wg >/dev/null ||
        die "no wg(8) to set WireGuard keys and peers: install wireguard-tools (the guest of scripts/vm.sh has it)"
    nsx $SRV ip link add "$s" type wireguard
    underlay "$c" "$s"
    (umask 077 && wg genkey >"$RUN/wg-$c.key" && wg genkey >"$RUN/wg-$s.key")
    nsx $CLI wg set "$c" listen-port $port private-key "$RUN/wg-$c.key" \
        peer "$(wg pubkey <"$RUN/wg-$s.key")" allowed-ips 0.0.0.0/0,::/0 endpoint "$US:$port"
    nsx $SRV wg set "$s" listen-port $port private-key "$RUN/wg-$s.key" \
        peer "$(wg pubkey <"$RUN/wg-$c.key")" allowed-ips 0.0.0.0/0,::/0 endpoint "$UC:$port"
}

# start_tunfwd CLI_DEV SRV_DEV: the forwarder that joins a TUN pair; its own session
# (setsid) so it outlives this script until `down` kills it by its pid file.
start_tunfwd() {
    local c=$1 s=$2 ready=$RUN/tunfwd-$1.ready
    rm -f "$ready"
    setsid "$PY" "$HERE/tunfwd.py" $CLI "$c" $SRV "$s" --ready-file "$ready" \
        >"$RUN/tunfwd-$c.log" 2>&1 </dev/null &
    echo $! >"$RUN/tunfwd-$c.pid"
    for _ in $(seq 100); do [[ -s $ready ]] && return 0; sleep 0.02; done
    die "TUN forwarder for $c did not start (see $RUN/tunfwd-$c.log)"
}

# v6_ready: IPv6 uses an address only once its link is operationally up (linkwatch
# reports carrier up to a second late) and the address is no longer tentative, even
# with nodad; a connection made earlier is refused or its join SYN is lost.
v6_ready() {
    local ns
    for _ in $(seq 250); do
        local busy=0
        for ns in $CLI $SRV; do
            [[ -n $(ip -n "$ns" -6 addr show tentative) ]] && busy=1
            # A WireGuard device or an IP tunnel has no operstate of its own, so it
            # stays UNKNOWN: usable once it is up. Every other kind must say UP.
            local up tunnels
            up=$(ip -n "$ns" -br link show | grep -cE '^(cli|srv)[01][@ ].* UP ' || true)
            tunnels=$(for k in wireguard ipip gre sit ip6tnl ip6gre; do ip -n "$ns" -br link show type $k; done |
                grep -cE '^(cli|srv)[01][@ ].* UNKNOWN ' || true)
            [[ $((up + tunnels)) == 2 ]] || busy=1
        done
        [[ $busy == 0 ]] && return 0
        sleep 0.02
    done
    die "IPv6 addresses not ready: $(ip -n $CLI -6 addr; ip -n $SRV -6 addr)"
}

b_cli() { if [[ $IPV6 == 1 ]]; then echo $B6_CLI; else echo $B_CLI; fi; }

down() {
    for ns in $CLI $SRV; do kill_pidfile "$RUN/monitor-$ns.pid"; done
    kill_pidfile "$RUN/server.pid"
    for d in cli0 cli1; do kill_pidfile "$RUN/tunfwd-$d.pid"; done
    for ns in $CLI $SRV; do
        if ns_exists "$ns"; then
            # kill anything still running inside (only processes in our lab namespaces)
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
            ip netns del "$ns"
        fi
    done
    rm -f "$RUN"/server.ready "$RUN"/tunfwd-*.ready "$RUN"/wg-*.key
}

status() {
    for ns in $CLI $SRV; do
        echo "== $ns"; nsx $ns ip -br addr show | grep -v '^lo'
        nsx $ns ip link show | grep -E 'xdp|prog' || true
        nsx $ns ip mptcp limits show; nsx $ns ip mptcp endpoint show
        nsx $ns ss -MHn 2>/dev/null | head -5 || true
    done
}

counters() {
    local ns; ns=$(ns_of "${1:-cli}"); local re=${2:-'^(MPTcpExt|TcpInCsumErrors)'}
    # absolute values straight from procfs (nstat's history file would be shared across netns)
    nsx "$ns" cat /proc/net/netstat /proc/net/snmp | awk '
        { pfx=$1; sub(":","",pfx)
          if (seen[pfx]) { for (i=2;i<=NF;i++) print pfx h[pfx SUBSEP i], $i; seen[pfx]=0 }
          else           { for (i=2;i<=NF;i++) h[pfx SUBSEP i]=$i;            seen[pfx]=1 } }' | grep -E "$re"
}

monitor_start() {
    local ns; ns=$(ns_of "$1"); mkdir -p "$RUN"
    kill_pidfile "$RUN/monitor-$ns.pid"
    ip netns exec "$ns" setsid ip mptcp monitor >"$RUN/monitor-$ns.log" 2>&1 </dev/null &
    echo $! >"$RUN/monitor-$ns.pid"
    sleep 0.1   # let it subscribe before traffic starts
}
monitor_stop() { local ns; ns=$(ns_of "$1"); sleep 0.1; kill_pidfile "$RUN/monitor-$ns.pid"; cat "$RUN/monitor-$ns.log"; }

# A client connection. When it fails (a stall, bad data), the server's
# sockets as `ss` saw them right then go to stderr: is it still sending,
# against which window.
xfer() {
    local rc=0
    nsx $CLI "$PY" "$HERE/mptcp_xfer.py" client --host $HOST --port "$PORT" "$@" || rc=$?
    if ((rc != 0)); then
        echo "server sockets after the client failed (rc $rc):" >&2
        nsx $SRV ss -taniomeM >&2 || true
    fi
    return $rc
}

prio() {
    local f=${1:-backup}
    nsx $SRV ip mptcp endpoint change id 2 "$f"
}

xdp_attach() {
    local dev=$1 mode=$2 obj=$3 sec=${4:-xdp}
    nsx $CLI ip link set dev "$dev" "$mode" obj "$obj" sec "$sec"
}
xdp_detach() {
    local devs=${1:-"cli0 cli1"} d m
    for d in $devs; do for m in xdp xdpgeneric; do nsx $CLI ip link set dev "$d" $m off 2>/dev/null || true; done; done
}

csum_offload() {
    local v=${1:-off}
    for d in srv0 srv1; do
        # A TUN device offloads nothing unless its reader asks (TUNSETOFFLOAD; tunfwd.py
        # does not): the stack sums every segment it sends there. WireGuard sums every
        # inner packet in software before it encrypts it.
        nsx $SRV test -e "/sys/class/net/$d/tun_flags" && continue
        [[ $(nsx $SRV cat "/sys/class/net/$d/type") == 65534 ]] && continue
        nsx $SRV ethtool -K "$d" tx "$v" >/dev/null
    done
    # a VLAN path's carrier veth too
    for d in srv0v srv1v; do
        if nsx $SRV test -e "/sys/class/net/$d"; then nsx $SRV ethtool -K "$d" tx "$v" >/dev/null; fi
    done
}

# The two veth ends of path A or B: "ns dev" lines.
path_ends() {
    case $1 in
        A) printf '%s cli0\n%s srv0\n' $CLI $SRV ;;
        B) printf '%s cli1\n%s srv1\n' $CLI $SRV ;;
        *) die "shape: path must be A or B, not '$1'" ;;
    esac
}

# netem arguments from KEY=VAL words (delay, jitter, loss, rate, limit).
netem_args() {
    local kv delay="" jitter="" out=()
    for kv in "$@"; do
        case $kv in
            delay=*) delay=${kv#*=} ;;
            jitter=*) jitter=${kv#*=} ;;
            loss=*) out+=(loss "${kv#*=}") ;;
            rate=*) out+=(rate "${kv#*=}") ;;
            limit=*) out+=(limit "${kv#*=}") ;;
            *) die "shape: unknown setting '$kv' (delay= jitter= loss= rate= limit=)" ;;
        esac
    done
    [[ -n $jitter && -z $delay ]] && die "shape: jitter needs a delay"
    # With a rate, netem schedules each packet after the previous one, so
    # jitter does not reorder packets (as on a real bottleneck link).
    [[ -n $delay ]] && out=(delay "$delay" $jitter "${out[@]}")
    echo "${out[@]}"
}

shape() {
    local path=${1:-} ns dev args ends
    shift || die "usage: shape A|B KEY=VAL... | off"
    ends=$(path_ends "$path")
    if [[ ${1:-} == off ]]; then
        while read -r ns dev; do nsx "$ns" tc qdisc del dev "$dev" root 2>/dev/null || true; done <<<"$ends"
        return 0
    fi
    args=$(netem_args "$@")
    modprobe -q sch_netem 2>/dev/null || true
    while read -r ns dev; do
        nsx "$ns" ethtool -K "$dev" tso off gso off >/dev/null 2>&1 || true
        # shellcheck disable=SC2086
        nsx "$ns" tc qdisc replace dev "$dev" root netem $args ||
            die "tc qdisc replace dev $dev root netem $args failed in $ns (kernel $(uname -r): no sch_netem? the guest of scripts/vm.sh has it)"
    done <<<"$ends"
}

cmd=${1:-}; shift || true
case $cmd in
    up) up ;;
    down) down ;;
    status) status ;;
    counters) counters "$@" ;;
    monitor-start) monitor_start "${1:-cli}" ;;
    monitor-stop) monitor_stop "${1:-cli}" ;;
    xfer) xfer "$@" ;;
    prio) prio "$@" ;;
    xdp-attach) xdp_attach "$@" ;;
    xdp-detach) xdp_detach "$@" ;;
    csum-offload) csum_offload "$@" ;;
    shape) shape "$@" ;;
    *) sed -n '2,47p' "$0"; exit 1 ;;
esac
