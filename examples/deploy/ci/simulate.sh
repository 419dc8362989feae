#!/usr/bin/env bash
# CI job for a policy repository: replay a reference capture under the
# proposed policy and under the one it replaces, and show per connection
# what the change would do to traffic (`emptcp simulate --against`).
# Needs root (or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN) and Linux >= 6.6;
# everything runs in private namespaces of the job's process.
#
#   examples/deploy/ci/simulate.sh NEW OLD TRACE [SUMMARY_OUT]
#
#   NEW, OLD      policy files or drop-in directories (the pull request's
#                 and the base branch's)
#   TRACE         a reference capture (pcap/pcapng, may be .gz)
#   SUMMARY_OUT   optional: where to write the markdown summary
#
# Environment: EMPTCP (binary, default emptcp), EMPTCP_SIM_LOCAL (space-
# separated --local values, e.g. "192.0.2.0/24=eth0 198.51.100.0/24=eth1"),
# EMPTCP_CI_FAIL_ON_CHANGES=1 to exit 2 when behaviour differs.
# Exit codes: 0 no difference or reported difference, 1 error, 2 difference
# with EMPTCP_CI_FAIL_ON_CHANGES=1.
set -uo pipefail

EMPTCP=${EMPTCP:-emptcp}
if [ $# -lt 3 ]; then
    echo "usage: $0 NEW OLD TRACE [SUMMARY_OUT]" >&2
    exit 1
fi
NEW=$1 OLD=$2 TRACE=$3 OUT=${4:-}
if [ -d "$NEW" ]; then SRC=(-d "$NEW"); else SRC=(-f "$NEW"); fi
LOCAL=()
for l in ${EMPTCP_SIM_LOCAL:-}; do LOCAL+=(--local "$l"); done

out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "== emptcp simulate ${SRC[*]} --against $OLD --pcap $TRACE ${LOCAL[*]}"
NO_COLOR=1 "$EMPTCP" simulate "${SRC[@]}" --against "$OLD" --pcap "$TRACE" \
    "${LOCAL[@]}" --detailed-exitcode >"$out"
rc=$?
cat "$out"
case $rc in
0) summary="No behavioural difference on $(basename "$TRACE")." ;;
2) summary="This change alters what happens to traffic in $(basename "$TRACE"):" ;;
*)
    echo "::error::emptcp simulate failed (exit $rc)" >&2
    exit 1
    ;;
esac
echo "== $summary"
if [ -n "$OUT" ]; then
    {
        echo "### emptcp simulate"
        echo
        echo "$summary"
        echo
        echo '```'
        cat "$out"
        echo '```'
    } >"$OUT"
fi
if [ "$rc" = 2 ] && [ "${EMPTCP_CI_FAIL_ON_CHANGES:-0}" = 1 ]; then
    exit 2
fi
exit 0
