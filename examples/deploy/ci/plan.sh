#!/usr/bin/env bash
# CI job for a policy repository: validate the policy and show what it
# would change on a node, from a snapshot of that node's state (made on the
# node with `emptcp state export > snapshot.json`). Needs no root and no
# kernel access.
#
#   examples/deploy/ci/plan.sh POLICY SNAPSHOT [PLAN_OUT]
#
#   POLICY     a policy file or a drop-in directory
#   SNAPSHOT   `emptcp state export` of the target node
#   PLAN_OUT   optional: where to write the plan (markdown, for a merge
#              request comment); default: none
#
# Exit codes: 0 valid (changes or not), 1 invalid policy, unusable snapshot
# or any other error; 2 changes present when EMPTCP_CI_FAIL_ON_CHANGES=1
# (for a "the node is in sync" gate).
# Environment: EMPTCP (the emptcp binary, default: emptcp on PATH).
set -uo pipefail

EMPTCP=${EMPTCP:-emptcp}
if [ $# -lt 2 ]; then
    echo "usage: $0 POLICY SNAPSHOT [PLAN_OUT]" >&2
    exit 1
fi
POLICY=$1
SNAPSHOT=$2
PLAN_OUT=${3:-}

if [ -d "$POLICY" ]; then
    SRC=(-d "$POLICY")
else
    SRC=(-f "$POLICY")
fi

echo "== emptcp validate ${SRC[*]}"
if ! NO_COLOR=1 "$EMPTCP" validate "${SRC[@]}"; then
    echo "::error::the policy is invalid (see the errors above: file:line:column)" >&2
    exit 1
fi

echo "== emptcp plan ${SRC[*]} --state $SNAPSHOT --detailed-exitcode"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
NO_COLOR=1 "$EMPTCP" plan "${SRC[@]}" --state "$SNAPSHOT" --detailed-exitcode >"$out"
rc=$?
cat "$out"
case $rc in
0)
    summary="No changes: the node already runs this policy."
    ;;
2)
    summary="Changes: applying this policy changes the node as shown above."
    ;;
*)
    echo "::error::emptcp plan failed (exit $rc)" >&2
    exit 1
    ;;
esac
echo "== $summary"
if [ -n "$PLAN_OUT" ]; then
    {
        echo "### emptcp plan"
        echo
        echo "$summary"
        echo
        echo '```diff'
        cat "$out"
        echo '```'
    } >"$PLAN_OUT"
fi
if [ "$rc" = 2 ] && [ "${EMPTCP_CI_FAIL_ON_CHANGES:-0}" = 1 ]; then
    exit 2
fi
exit 0
