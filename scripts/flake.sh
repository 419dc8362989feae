#!/usr/bin/env bash
# Runs the whole test command (scripts/test.sh) N times with every core busy:
# one CPU hog (`yes >/dev/null`) per core, started before and killed on exit
# (also on Ctrl-C or failure). Reports pass/fail and wall time per run and
# exits non-zero unless every run passed. Logs: $EMPTCP_FLAKE_LOGS (default
# a temp dir), one file per run.
#   scripts/flake.sh [N]      (default 5)
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [N>=1]" >&2; exit 2; }
logs=${EMPTCP_FLAKE_LOGS:-$(mktemp -d -t emptcp-flake.XXXXXX)}
mkdir -p "$logs"

hogs=()
stop_hogs() {
    ((${#hogs[@]})) && kill "${hogs[@]}" 2>/dev/null
    wait "${hogs[@]}" 2>/dev/null
    hogs=()
}
trap stop_hogs EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$(nproc)"); do
    yes >/dev/null &
    hogs+=($!)
done
echo "flake: $runs run(s) of scripts/test.sh with ${#hogs[@]} CPU hog(s) ($(nproc) cores); logs in $logs"

pass=0
for i in $(seq "$runs"); do
    start=$(date +%s)
    if ./scripts/test.sh >"$logs/run-$i.log" 2>&1; then
        result=PASS; pass=$((pass + 1))
    else
        result=FAIL
    fi
    took=$(($(date +%s) - start))
    line="run $i/$runs: $result in ${took}s"
    if [[ $result == FAIL ]]; then
        # The failing tests, from the harness's summary.
        failed=$(sed -n 's/^    \([a-z_0-9:]*\)$/\1/p' "$logs/run-$i.log" | sort -u | tr '\n' ' ')
        line+=" (${failed:-see $logs/run-$i.log})"
    fi
    echo "flake: $line"
done
echo "flake: $pass/$runs passed with every core busy"
((pass == runs))
