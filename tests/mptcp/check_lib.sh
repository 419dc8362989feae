# Helpers of the guest link checks (vlan_check.sh, tunnel_check.sh): sourced, not run.
#
# The caller sets E (the emptcp binary), LAB_ID and the testbed's LINK_*/IPV6
# (exported, for testbed.sh), then sources this file, which sets CLI, ROOT (the
# check's own bpffs root), DIR (scratch), TB, `fail` and an EXIT trap that
# stops what the check started and takes the testbed down, pass or fail.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TB=$HERE/testbed.sh
CLI=emptcp-cli$LAB_ID
ROOT=/sys/fs/bpf/emptcp-check$LAB_ID
DIR=$(mktemp -d)
AGENT=
CAPTURE=
fail=0

lab_cleanup() {
    [[ -n $AGENT ]] && kill "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null
    [[ -n $CAPTURE ]] && kill "$CAPTURE" 2>/dev/null && wait "$CAPTURE" 2>/dev/null
    em destroy >/dev/null 2>&1 || true
    rm -rf "$ROOT" "$DIR"
    "$TB" down >/dev/null 2>&1 || true
}
trap lab_cleanup EXIT

# emptcp on the check's root, in the client namespace.
em() { "$E" --bpffs-root "$ROOT" --netns "$CLI" "$@"; }

# The client namespace's kernel counters that every download reads, in one
# read (each process start is slow in the emulated guest): "joins fallbacks
# csum_errors".
kernel_counters() {
    "$TB" counters cli '^(MPTcpExtMPJoinSynAckRx|MPTcpExtMPCapableDataFallback|TcpInCsumErrors) ' |
        awk '{ v[$1] = $2 } END { print v["MPTcpExtMPJoinSynAckRx"] + 0, v["MPTcpExtMPCapableDataFallback"] + 0, v["TcpInCsumErrors"] + 0 }'
}

# Each verdict line starts with "ok" or "FAIL" (scripts/vm.sh counts them)
# and ends with the seconds since the check began, which show where a slow
# run spent its time.
# check WHAT GOT WANT
check() {
    if [[ $2 == "$3" ]]; then
        echo "ok    $1: $2 [${SECONDS} s]"
    else
        echo "FAIL  $1: $2, expected $3 [${SECONDS} s]"
        fail=1
    fi
}

# check_more WHAT GOT THAN: GOT > THAN
check_more() {
    if (($2 > $3)); then
        echo "ok    $1: $2 (> $3) [${SECONDS} s]"
    else
        echo "FAIL  $1: $2, expected more than $3 [${SECONDS} s]"
        fail=1
    fi
}

# download SIZE [xfer args]: prints "joins fallbacks csum_errors subflows", the
# kernel's counter deltas over the transfer and the subflows the connection had
# when its last byte arrived (a join after that does not count).
download() {
    local j0 f0 c0 j1 f1 c1 rc subflows
    read -r j0 f0 c0 < <(kernel_counters)
    "$TB" xfer --download "$@" >"$DIR/xfer.json" 2>"$DIR/xfer.err" || true
    read -r j1 f1 c1 < <(kernel_counters)
    read -r rc subflows < <(python3 -c '
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    print(d["rc"], d["mptcp_info"].get("subflows", 0))
except Exception:
    print("unreadable ?")' "$DIR/xfer.json")
    if [[ $rc != 0 ]]; then
        echo "FAIL  transfer: $(cat "$DIR/xfer.json") $(tail -1 "$DIR/xfer.err")" >&2
        touch "$DIR/xfer.failed"
    fi
    echo "$((j1 - j0)) $((f1 - f0)) $((c1 - c0)) $subflows"
}

# short_download: `download` of 100 KB that gives the server's announcement
# time to be joined (one extra subflow at most): one NOP exchange, up to 2 s
# for the join, the 100 KB, then up to 1 s more. The connection is open the
# same ~3 s with emptcp or without, and a control that only waited after
# the transfer is racy under load: the server closes right after the 100 KB,
# and the kernel opens no subflow for a connection no longer established
# (the same form as tests/mptcp_common's short_download, which says more).
short_download() {
    download 100K --wait-subflows-before 1 --wait-before-timeout 2 --wait-subflows 1 --wait-timeout 1
}

# datapath_events NAME...: what the datapath counted (`emptcp status`), one
# value per name, in one line.
datapath_events() {
    em -o json status | python3 -c '
import json, sys
e = json.load(sys.stdin)["datapath_events"]
print(*(e.get(n, 0) for n in sys.argv[1:]))' "$@"
}

# iface_status IFACE: "link_type raw_ip mode recovery_attached" from `emptcp status`.
iface_status() {
    em -o json status | python3 -c '
import json, sys
i = [i for i in json.load(sys.stdin)["interfaces"] if i["name"] == sys.argv[1]][0]
print(i.get("link_type"), i.get("raw_ip"), i.get("mode"), (i.get("recovery") or {}).get("attached"))' "$1"
}

# "hw csum failure" lines in the kernel log (machine-wide).
hw_csum_failures() { dmesg | grep -c 'hw csum failure' || true; }

# capture_start DEV: tcpdump on DEV in the client namespace, after XDP (generic
# XDP runs before the packet taps), into $DIR/DEV.pcap; capture_stop ends it.
capture_start() {
    command -v tcpdump >/dev/null || {
        echo "FAIL  no tcpdump (the guest of scripts/vm.sh has it)"
        fail=1
        return 0
    }
    rm -f "$DIR/$1.pcap" "$DIR/capture.log"
    ip netns exec "$CLI" tcpdump -i "$1" -nn -U --immediate-mode -Z root -s 0 -w "$DIR/$1.pcap" 2>"$DIR/capture.log" &
    CAPTURE=$!
    for _ in $(seq 100); do grep -q listening "$DIR/capture.log" 2>/dev/null && return 0; sleep 0.05; done
    echo "FAIL  tcpdump did not start: $(cat "$DIR/capture.log")"
    fail=1
}
capture_stop() {
    [[ -n $CAPTURE ]] || return 0
    sleep 0.2 # the last packets reach the file (-U writes each one)
    kill -INT "$CAPTURE" 2>/dev/null || true
    wait "$CAPTURE" 2>/dev/null || true
    CAPTURE=
}

# capture_read DEV FILTER: the capture's packets matching FILTER, verbose
# (TCP checksums verified, MPTCP options decoded).
capture_read() {
    [[ -f $DIR/$1.pcap ]] || return 0
    tcpdump -nn -vv -r "$DIR/$1.pcap" "$2" 2>/dev/null
}

# finish: exits 1 if a check or a transfer failed (download runs in a
# subshell, so it leaves a mark in $DIR rather than setting `fail`).
finish() {
    [[ -e $DIR/xfer.failed ]] && fail=1
    exit "$fail"
}
