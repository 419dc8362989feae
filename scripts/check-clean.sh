#!/usr/bin/env bash
# Fails when tests left something behind: namespaces or bpffs roots made by
# the test fixtures (names ea-*/eb-*/emptcp-*, /sys/fs/bpf/emptcp-test-*),
# or a TUN forwarder of the testbed (tests/mptcp/tunfwd.py) still running.
set -u
bad=0
ns=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(ea-|eb-|emptcp-)' || true)
if [[ -n $ns ]]; then echo "left-over namespaces: $ns"; bad=1; fi
pins=$(ls -d /sys/fs/bpf/emptcp-test-* 2>/dev/null || true)
if [[ -n $pins ]]; then echo "left-over bpffs roots: $pins"; bad=1; fi
fwd=$(pgrep -f 'tests/mptcp/tunfwd\.py' || true)
if [[ -n $fwd ]]; then echo "left-over TUN forwarders (pids): $fwd"; bad=1; fi
[[ $bad == 0 ]] && echo "nothing left behind"
exit $bad
