#!/usr/bin/env bash
# The short-flow policy over a VLAN path (needs 8021q: run it in the guest,
#   scripts/vm.sh run tests/mptcp/vlan_check.sh "$PWD/target/release/emptcp").
#
# Path A (the first subflow, where the server's ADD_ADDR arrives) is made of
# 802.1Q sub-interfaces (testbed.sh LINK_A=vlan). Control, same run: without
# emptcp a 100 KB download joins path B. Then, with emptcp's XDP program on
# the carrier veth (native, tagged frames) and on the VLAN sub-interface
# itself (generic: a VLAN device has no native XDP): a 100 KB download opens
# no subflow and does not fall back; a 20 MB download (recovery agent
# running) joins B; no TCP checksum error. Exit 0 only if every check holds.
set -euo pipefail
E=${1:?usage: vlan_check.sh EMPTCP_BINARY}
export LAB_ID=-vlanchk LINK_A=vlan
# shellcheck source=check_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/check_lib.sh"

policy() {
    cat <<EOP
version: 1
settings: {flow_capacity: 16384}
interfaces:
  - {name: $1, xdp_mode: $2, chains: [mptcp]}
  - {name: cli1, xdp_mode: native, chains: [mptcp]}
chains:
  - name: mptcp
    match: {remote: [192.0.2.0/24, 198.51.100.0/24], remote_ports: [5201]}
    thresholds: {remove_below: 1MiB, recover_at: 4MiB}
    actions: [record_flow, strip_add_addr, recover_add_addr, count]
EOP
}

"$TB" up >/dev/null
"$TB" csum-offload off
echo "path A: $(ip -n "$CLI" -d link show cli0 | grep -o 'vlan protocol [^ ]* id [0-9]*')"

read -r j _ _ _ < <(short_download)
check "control, no emptcp: 100 KB download joins B" "$j" 1

for attach in "cli0v native" "cli0 skb"; do
    read -r dev mode <<<"$attach"
    policy "$dev" "$mode" >"$DIR/p.yaml"
    em apply -f "$DIR/p.yaml" >/dev/null
    read -r j f c _ < <(short_download)
    check "XDP on $dev ($mode): 100 KB download, joins / fallbacks / csum errors" "$j $f $c" "0 0 0"
    em agent 2>"$DIR/agent.log" &
    AGENT=$!
    sleep 0.3
    read -r j f c _ < <(download 20M --wait-subflows 1 --wait-timeout 3)
    kill "$AGENT" && wait "$AGENT" 2>/dev/null || true
    AGENT=
    check "XDP on $dev ($mode): 20 MB download, joins / fallbacks / csum errors" "$j $f $c" "1 0 0"
    em destroy >/dev/null
done
finish
