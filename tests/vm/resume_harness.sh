#!/usr/bin/env bash
# Drives scripts/vm.sh's `cmd_test` with its boot replaced (no QEMU): the
# guest of the first boot dies while running target b, with the console
# text in $OOPS (default: the emulator's int3 oops); MODE=always makes every
# boot die there. Prints vm.sh's output, then "boots N", then the host's
# retry log. Used by tests/vm_resume.rs.
set -euo pipefail
vm=$1
# Every function of vm.sh, without its command dispatch.
eval "$(sed '/^case \${1:-} in/,$d' "$vm")"
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT" "$EMPTCP_RETRY_LOG"' EXIT
# No target/vm yet: a clean clone has none, and cmd_test must make it.
host_packages() { :; }
kernel_version() { echo 6.12.test; }
build_image() { :; }
build_tests() { for t in "$@"; do echo "$t /bin/true"; done; }
targets_of() { echo "$1"; }
# Counted in a file: cmd_test runs in a subshell below.
echo 0 >"$ROOT/boots"
boot_retrying() {
    BOOTS=$(($(cat "$ROOT/boots") + 1))
    echo "$BOOTS" >"$ROOT/boots"
    mkdir -p "$ROOT/target/vm"
    RUN_DIR=$(mktemp -d "$ROOT/target/vm/run.XXXXXX")
    mkdir -p "$RUN_DIR/logs" "$RUN_DIR/rc"
    echo "guest: kernel 6.12.test" >"$RUN_DIR/console.log"
    local t
    for t in $(grep -o 'guest: running [a-z_]*' <<<"$1" | awk '{print $3}'); do
        if [[ $t == b && ($BOOTS == 1 || ${MODE:-} == always) ]]; then
            printf '%s\nKernel panic - not syncing: Fatal exception in interrupt\n' \
                "${OOPS:-Oops: int3: 0000 [#1] PREEMPT SMP NOPTI}" >>"$RUN_DIR/console.log"
            BOOT_SECS=5
            return
        fi
        echo "test result: ok. (boot $BOOTS)" >"$RUN_DIR/logs/$t.log"
        echo 0 >"$RUN_DIR/rc/$t"
    done
    echo 0 >"$RUN_DIR/rc/leftovers"
    : >"$RUN_DIR/logs/leftovers.log"
    BOOT_SECS=7
}
EMPTCP_RETRY_LOG=$(mktemp)
export EMPTCP_RETRY_LOG
# As vm.sh runs it: under errexit (a `||` here would switch errexit off
# inside cmd_test and hide a failing step).
set +e
(set -e; cmd_test a b c)
rc=$?
set -e
echo "boots $(cat "$ROOT/boots") rc $rc"
echo "host retry log:"
cat "$EMPTCP_RETRY_LOG"
