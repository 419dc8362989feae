#!/usr/bin/env bash
# Runs emptcp's kernel tests on a second kernel: Debian's 6.12 LTS kernel in a
# QEMU guest (software emulation), with the host-built test binaries.
#
#   scripts/vm.sh test [SET...]   build the test binaries, boot the guest, run SET
#                                 inside, print a summary; exit 0 only if all passed
#   scripts/vm.sh run CMD...      boot the guest and run one shell command in the
#                                 worktree (e.g. `scripts/vm.sh run uname -r`)
#   scripts/vm.sh untested [SET...]
#                                 the link checks (tests/mptcp/NAME_check.sh) and
#                                 their kinds SET does not run, as targets
#                                 (tunnel_check:gre,ipip); nothing is built or booted
#   scripts/vm.sh image           fetch/build the cached kernel and guest root only
#   scripts/vm.sh clean           remove the cache
#
# SET: datapath (tests/datapath_*.rs), lifecycle (lifecycle, crash, watch_*),
#      e2e (mptcp_*, xsk_send), links (the guest link checks the test command
#      runs: tests/mptcp/vlan_check.sh, and tunnel_check.sh over WireGuard),
#      all (datapath, lifecycle, e2e), a test target name (datapath_egress),
#      or a link check's name (tunnel_check); NAME:FILTER passes FILTER to that
#      binary (datapath_egress:ipv6), NAME:A,B passes A B to a link check
#      (tunnel_check:gre,ip6gre).  Default: datapath.
#
# How: the kernel package (linux-image-6.12.*-amd64-unsigned) is fetched with
# `apt-get download`; the guest root is a debootstrap'ed Debian 12 (glibc 2.36
# like the build machine, so host-built binaries run unchanged) with the
# kernel's modules, shared read-only over virtio-9p under a tmpfs overlay. The
# worktree is shared at its own path (the test binaries carry absolute paths),
# and a per-run directory carries the guest's logs and exit codes back. Both
# are rebuilt only when their inputs (kernel version, package list, recipe)
# change. KVM does not work on the development machines: the guest runs under
# TCG, several times slower than the host. TCG with two vCPUs now and then
# kills the guest with an "Oops: int3" while its kernel patches a jump in
# place; `test` then boots again for the binaries that had not finished (at
# most twice) and lists each re-run as RETRIED. Any other crash fails.
#
# Env: EMPTCP_VM_CACHE (${XDG_CACHE_HOME:-~/.cache}/emptcp/vm)
#      EMPTCP_VM_KERNEL (newest linux-image-6.12.*+deb12-amd64-unsigned known to apt)
#      EMPTCP_VM_MEM (2048, MiB)  EMPTCP_VM_CPUS (2)  EMPTCP_VM_TIMEOUT (3600 s, whole run)
#      EMPTCP_VM_TEST_THREADS (2, --test-threads inside the guest)
#      EMPTCP_VM_KEEP=1 keeps the run directory (logs) under target/vm/
#      EMPTCP_VM_TIME_SCALE (8): EMPTCP_TIME_SCALE inside the guest, the factor
#        on the time limits that are product promises ("converged within 1 s";
#        tests/common time_scale): a change the host converges in 0.1-0.3 s
#        took 0.6-3.8 s in the emulated guest
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EMPTCP_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emptcp/vm}
SUITE=bookworm
MIRROR=${EMPTCP_VM_MIRROR:-http://deb.debian.org/debian}
# What the guest root needs: the shell tools the tests call (ip, tc, ss, nstat,
# bpftool, ethtool, nsenter, timeout, sysctl), python3 for the MPTCP testbed,
# kmod to load the kernel modules, wireguard-tools (`wg`: keys and peers of the
# testbed's WireGuard path), tcpdump to look at a path's packets.
ROOT_PKGS=iproute2,python3,kmod,procps,ethtool,bpftool,util-linux,wireguard-tools,tcpdump
# Modules the guest loads before the tests (the tests' devices, qdiscs and
# tunnels; the rest load on demand through modprobe).
GUEST_MODS="veth tun sch_netem sch_tbf sch_htb sch_ingress cls_bpf act_bpf wireguard 8021q ipip dummy"
# Bump when the way the image is made changes (forces a rebuild).
RECIPE=2

log() { printf 'vm: %s\n' "$*" >&2; }
die() {
    printf 'vm: error: %s\n' "$*" >&2
    exit 2
}

# --- host packages ---------------------------------------------------------------
host_packages() {
    local need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    command -v busybox >/dev/null || need+=(busybox-static)
    command -v cpio >/dev/null || need+=(cpio)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v depmod >/dev/null || need+=(kmod)
    command -v xz >/dev/null || need+=(xz-utils)
    command -v jq >/dev/null || need+=(jq)
    ((${#need[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "missing host packages (${need[*]}); run as root to install them"
    log "installing host packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# --- kernel ------------------------------------------------------------------------
# The newest 6.12 LTS package apt knows of (Debian's security archive replaces
# older builds, so a hard-coded version would stop downloading).
kernel_version() {
    if [[ -n ${EMPTCP_VM_KERNEL:-} ]]; then
        echo "$EMPTCP_VM_KERNEL"
        return
    fi
    local v
    v=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' |
        awk '{print $1}' | sed 's/^linux-image-//; s/-unsigned$//' | sort -V | tail -1)
    if [[ -z $v ]]; then
        apt-get update -qq >/dev/null
        v=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' |
            awk '{print $1}' | sed 's/^linux-image-//; s/-unsigned$//' | sort -V | tail -1)
    fi
    [[ -n $v ]] || die "apt knows no linux-image-6.12.*+deb12-amd64-unsigned package; is bookworm-security (or backports) in the apt sources?"
    echo "$v"
}

# --- guest root -----------------------------------------------------------------
# $CACHE/root: Debian 12 minbase + ROOT_PKGS + the kernel's modules tree;
# $CACHE/vmlinuz, $CACHE/initrd (busybox + the 9p/overlay modules + /init).
build_image() {
    local kver=$1 stamp want
    want="recipe=$RECIPE kernel=$kver suite=$SUITE pkgs=$ROOT_PKGS"
    stamp=$CACHE/image.stamp
    if [[ -f $stamp && "$(cat "$stamp")" == "$want" && -f $CACHE/initrd && -d $CACHE/root/usr ]]; then
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "building the guest image needs root (debootstrap, device nodes)"
    mkdir -p "$CACHE"
    rm -f "$stamp"
    local t0=$SECONDS
    local tmp=$CACHE/build.tmp
    rm -rf "$tmp" && mkdir -p "$tmp"

    log "fetching linux-image-$kver-unsigned"
    (cd "$tmp" && apt-get download -q "linux-image-$kver-unsigned" >/dev/null 2>&1) ||
        die "apt-get download linux-image-$kver-unsigned failed"

    log "debootstrap $SUITE (minbase + $ROOT_PKGS), a few minutes the first time"
    rm -rf "$CACHE/root"
    debootstrap --variant=minbase --include="$ROOT_PKGS" "$SUITE" "$tmp/root" "$MIRROR" \
        >"$tmp/debootstrap.log" 2>&1 || {
        tail -20 "$tmp/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    }
    rm -rf "$tmp/root/var/cache/apt/archives/"*.deb

    log "unpacking the kernel and its modules"
    dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/kernel"
    cp "$tmp/kernel/boot/vmlinuz-$kver" "$CACHE/vmlinuz"
    cp "$tmp/kernel/boot/config-$kver" "$CACHE/config"
    mkdir -p "$tmp/root/lib/modules"
    cp -a "$tmp/kernel/lib/modules/$kver" "$tmp/root/lib/modules/"
    depmod -b "$tmp/root" "$kver"

    build_initrd "$kver" "$tmp"
    mv "$tmp/root" "$CACHE/root"
    rm -rf "$tmp"
    echo "$want" >"$stamp"
    log "guest image ready in $((SECONDS - t0)) s ($CACHE)"
}

# The initramfs only mounts the real root: 9p (read-only, shared from the
# host) under a tmpfs overlay, so the guest can write anywhere and the cached
# root never changes.
build_initrd() {
    local kver=$1 tmp=$2 ir=$2/initrd m dep
    mkdir -p "$ir"/{bin,dev,proc,sys,newroot,lower,upper,mods}
    cp "$(command -v busybox)" "$ir/bin/busybox"
    # Modules in load order: each one's dependencies (from modules.dep) first.
    local order=()
    for m in netfs 9pnet 9pnet_virtio 9p overlay; do
        dep=$(grep -E "/$m\.ko(\.xz)?:" "$tmp/root/lib/modules/$kver/modules.dep") ||
            die "module $m not in the kernel package"
        local f
        for f in $(echo "${dep#*:}" | tr ' ' '\n' | tac) "${dep%%:*}"; do
            [[ " ${order[*]} " == *" $f "* ]] || order+=("$f")
        done
    done
    : >"$ir/mods/order"
    for f in "${order[@]}"; do
        local base
        base=$(basename "$f" .xz)
        xz -dc "$tmp/root/lib/modules/$kver/$f" >"$ir/mods/$base"
        echo "$base" >>"$ir/mods/order"
    done
    cat >"$ir/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m || echo "init: insmod $m failed"; done
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
o=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $o,ro,cache=loose groot /lower || { echo "init: no root share"; poweroff -f; }
mount -t tmpfs -o size=75% tmpfs /upper
mkdir -p /upper/up /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/up,workdir=/upper/work overlay /newroot ||
    { echo "init: overlay failed"; poweroff -f; }
wt=$(arg emptcp.wt)
mkdir -p /newroot/vm-io "/newroot$wt"
mount -t 9p -o $o,cache=none io /newroot/vm-io
mount -t 9p -o $o,ro,cache=loose wt "/newroot$wt"
exec switch_root /newroot /bin/bash /vm-io/guest.sh
EOF
    chmod +x "$ir/init"
    (cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$CACHE/initrd"
}

# --- test selection ---------------------------------------------------------------
targets_of() {
    case $1 in
    datapath) (cd "$ROOT/tests" && ls datapath_*.rs) | sed 's/\.rs$//' ;;
    lifecycle) (
        cd "$ROOT/tests"
        echo lifecycle crash
        ls watch_*.rs | sed 's/\.rs$//'
    ) | tr ' ' '\n' ;;
    e2e) (cd "$ROOT/tests" && ls mptcp_*.rs xsk_send.rs) | sed 's/\.rs$//' ;;
    all) targets_of datapath && targets_of lifecycle && targets_of e2e ;;
    # WireGuard (both families) and VLAN: the link kinds of the field this
    # host cannot create; the IP tunnels' cells run by hand (tunnel_check).
    links) printf '%s\n' vlan_check tunnel_check:wg ;;
    *)
        [[ -f $ROOT/tests/${1%%:*}.rs ]] || is_link_check "$1" ||
            die "unknown test set or target '$1' (datapath, lifecycle, e2e, links, all, a tests/NAME.rs or a tests/mptcp/NAME.sh link check)"
        echo "$1"
        ;;
    esac
}

# Is target $1 a guest link check (tests/mptcp/*_check.sh: a shell script
# over the testbed, run with the emptcp binary) rather than a test binary?
is_link_check() {
    local name=${1%%:*}
    [[ $name == *_check && -f $ROOT/tests/mptcp/$name.sh ]]
}

# Builds the selected test binaries (release, like the host suite) and prints
# "name path" lines; a link check's line names its script, after the emptcp
# binary it runs is built.
build_tests() {
    local args=() checks=() t
    for t in "$@"; do
        if is_link_check "$t"; then
            checks+=("${t%%:*}")
        else
            args+=(--test "${t%%:*}")
        fi
    done
    if ((${#args[@]})); then
        (cd "$ROOT" && cargo test --release --locked --no-run --message-format=json "${args[@]}") |
            jq -r 'select(.reason=="compiler-artifact" and .target.kind==["test"] and .executable!=null)
                   | "\(.target.name) \(.executable)"'
    fi
    if ((${#checks[@]})); then
        (cd "$ROOT" && cargo build --release --locked --quiet -p emptcp --bin emptcp) >&2
        for t in "${checks[@]}"; do echo "$t $ROOT/tests/mptcp/$t.sh"; done
    fi
}

# --- boot ------------------------------------------------------------------------
QEMU_PID=
RUN_DIR=
cleanup() {
    local rc=$?
    if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    if [[ -n $RUN_DIR && -d $RUN_DIR && ${EMPTCP_VM_KEEP:-0} != 1 ]]; then
        rm -rf "$RUN_DIR"
    fi
    exit "$rc"
}

# boot GUEST_SCRIPT_BODY: writes guest.sh into a fresh run directory, boots,
# waits (with the overall timeout) and leaves the results in $RUN_DIR.
boot() {
    local body=$1
    trap cleanup EXIT
    trap 'log "interrupted"; exit 130' INT TERM
    mkdir -p "$ROOT/target/vm"
    RUN_DIR=$(mktemp -d "$ROOT/target/vm/run.XXXXXX")
    mkdir -p "$RUN_DIR/logs" "$RUN_DIR/rc"
    {
        cat <<EOF
#!/bin/bash
# Runs inside the guest as PID 1 (written by scripts/vm.sh).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
WT=$ROOT
export EMPTCP_TIME_SCALE=${EMPTCP_VM_TIME_SCALE:-8}
# Steps a test retried after a kernel fault it recognised
# (tests/common/gate.rs); summarize lists them.
export EMPTCP_RETRY_LOG=/vm-io/logs/retries.log
EOF
        cat <<'EOF'
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sys /sys 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
# what udev/systemd would provide: bash process substitution needs /dev/fd
ln -sfn /proc/self/fd /dev/fd
mount -t tmpfs tmpfs /run
# A fresh /tmp, unless the worktree lives there (a clone under /tmp): a
# tmpfs would hide it; the overlay root is a tmpfs anyway.
case $WT/ in /tmp/*) ;; *) mount -t tmpfs tmpfs /tmp ;; esac
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
hostname emptcp-guest
ip link set lo up
ulimit -l unlimited
EOF
        echo "for m in $GUEST_MODS; do modprobe -q \$m || echo \"guest: modprobe \$m failed\"; done"
        cat <<'EOF'
echo "guest: kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/{print $2/1024" MiB"}' /proc/meminfo)"
cd "$WT"
EOF
        printf '%s\n' "$body"
        cat <<'EOF'
sync
echo "guest: done"
echo o >/proc/sysrq-trigger
sleep 10
EOF
    } >"$RUN_DIR/guest.sh"

    local mem=${EMPTCP_VM_MEM:-2048} cpus=${EMPTCP_VM_CPUS:-2} limit=${EMPTCP_VM_TIMEOUT:-3600}
    local fs='-fsdev local,security_model=none,multidevs=remap'
    # shellcheck disable=SC2086
    qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "$mem" -smp "$cpus" \
        -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd" \
        -append "console=ttyS0 panic=-1 quiet loglevel=4 emptcp.wt=$ROOT" \
        -display none -no-reboot -nodefaults -serial stdio \
        $fs,id=groot,path="$CACHE/root",readonly=on -device virtio-9p-pci,fsdev=groot,mount_tag=groot \
        $fs,id=io,path="$RUN_DIR" -device virtio-9p-pci,fsdev=io,mount_tag=io \
        $fs,id=wt,path="$ROOT",readonly=on -device virtio-9p-pci,fsdev=wt,mount_tag=wt \
        </dev/null > >(tee "$RUN_DIR/console.log") 2>&1 &
    QEMU_PID=$!
    local t0=$SECONDS
    while kill -0 "$QEMU_PID" 2>/dev/null; do
        if ((SECONDS - t0 > limit)); then
            log "guest still running after ${limit} s (EMPTCP_VM_TIMEOUT); stopping it"
            kill "$QEMU_PID"
            break
        fi
        sleep 1
    done
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=
    BOOT_SECS=$((SECONDS - t0))
}

cmd_test() {
    (($#)) || set -- datapath
    local sets=("$@") targets=() t
    for t in "${sets[@]}"; do
        mapfile -t -O "${#targets[@]}" targets < <(targets_of "$t")
    done
    host_packages
    local kver
    kver=$(kernel_version)
    build_image "$kver"
    log "building ${#targets[@]} test binaries (release)"
    declare -A exe=()
    local name path
    while read -r name path; do exe[$name]=$path; done < <(build_tests "${targets[@]}")
    for t in "${targets[@]}"; do
        [[ -n ${exe[${t%%:*}]:-} ]] || die "cargo built no test binary for ${t%%:*}"
    done
    local results remaining=("${targets[@]}") attempt wall=0 unfinished
    mkdir -p "$ROOT/target/vm"
    results=$(mktemp -d "$ROOT/target/vm/results.XXXXXX")
    mkdir -p "$results/logs" "$results/rc"
    for attempt in 1 2 3; do
        log "booting Linux $kver under QEMU (TCG) for: ${remaining[*]}"
        boot_retrying "$(guest_test_body "${remaining[@]}")"
        wall=$((wall + BOOT_SECS))
        keep_results "$results"
        mapfile -t unfinished < <(not_finished "${remaining[@]}")
        ((${#unfinished[@]})) || break
        # Only the emulator's fault is resumed; any other death of the
        # guest fails the targets it did not finish.
        emulated_code_patching_oops || break
        ((attempt < 3)) || break
        log "the guest kernel oopsed on an int3 while patching its own code (QEMU TCG, not a test failure; docs/development.md); booting again for: ${unfinished[*]}"
        printf 'vm.sh::%s\tguest %s oopsed on an int3 during live code patching (TCG): %s run again in a fresh boot\n' \
            "${unfinished[0]}" "$kver" "${unfinished[0]}" >>"$results/logs/retries.log"
        remaining=("${unfinished[@]}")
        rm -rf "$RUN_DIR"
    done
    rm -rf "$RUN_DIR"
    RUN_DIR=$results
    BOOT_SECS=$wall
    summarize "$kver" "${targets[@]}"
}

# The guest script's part for the given targets (each target's log and
# exit status into /vm-io), the leftover check last.
guest_test_body() {
    local t name filter cmd threads=${EMPTCP_VM_TEST_THREADS:-2}
    for t in "$@"; do
        name=${t%%:*}
        filter=""
        [[ $t == *:* ]] && filter=${t#*:}
        if is_link_check "$t"; then
            cmd="${exe[$name]} $ROOT/target/release/emptcp ${filter//,/ }"
        else
            cmd="${exe[$name]} --test-threads $threads $filter"
        fi
        echo "s=\$SECONDS; echo \"guest: running $t\"
$cmd >/vm-io/logs/$name.log 2>&1; rc=\$?
echo \$rc >/vm-io/rc/$name; echo \"guest: $t rc=\$rc in \$((SECONDS-s)) s\""
    done
    echo 'echo "== leftovers" >/vm-io/logs/leftovers.log
"$WT/scripts/check-clean.sh" >>/vm-io/logs/leftovers.log 2>&1; echo $? >/vm-io/rc/leftovers'
}

# Adds this boot's logs, exit statuses, retries and console to $1.
keep_results() {
    local dir=$1 f
    for f in "$RUN_DIR"/logs/*.log; do
        [[ -e $f ]] || continue
        if [[ ${f##*/} == retries.log ]]; then
            cat "$f" >>"$dir/logs/retries.log"
        else
            cp "$f" "$dir/logs/"
        fi
    done
    cp "$RUN_DIR"/rc/* "$dir/rc/" 2>/dev/null || true
    cat "$RUN_DIR/console.log" >>"$dir/console.log" 2>/dev/null || true
}

# The targets of this boot that wrote no exit status.
not_finished() {
    local t
    for t in "$@"; do
        [[ -f $RUN_DIR/rc/${t%%:*} ]] || echo "$t"
    done
}

# Did this boot die of the emulator's known fault: an "Oops: int3" (a CPU
# ran a breakpoint the kernel had already taken out while patching a jump:
# a static key, the XDP dispatcher), then the panic it ends in? Seen under
# TCG with two vCPUs when XDP programs are attached and detached while the
# other vCPU receives packets; never on the host.
emulated_code_patching_oops() {
    grep -q 'Oops: int3' "$RUN_DIR/console.log" 2>/dev/null &&
        grep -q 'Kernel panic' "$RUN_DIR/console.log"
}

# Software emulation now and then oopses while the kernel patches its own
# code at boot (an int3 in sched_clock_cpu on 6.12, seen about once in ten
# boots with two vCPUs): a guest that died before it started its work is
# booted again, at most twice, and said so.
boot_retrying() {
    local attempt
    for attempt in 1 2 3; do
        boot "$1"
        grep -q '^guest: kernel ' "$RUN_DIR/console.log" && break
        grep -q 'Kernel panic' "$RUN_DIR/console.log" || break
        log "the guest kernel panicked while booting (attempt $attempt of 3); booting it again"
        cp "$RUN_DIR/console.log" "$ROOT/target/vm/panic-$attempt.log" 2>/dev/null || true
        rm -rf "$RUN_DIR"
    done
}

# Prints each binary's verdict line and failures; exit 0 only if every
# selected binary ran and passed, and nothing was left behind.
summarize() {
    local kver=$1
    shift
    local fail=0 t name rc
    echo "== guest kernel $kver: results (${BOOT_SECS} s wall, boot included)"
    for t in "$@" leftovers; do
        name=${t%%:*}
        rc=$(cat "$RUN_DIR/rc/$name" 2>/dev/null || echo missing)
        # A link check that exits 0 without one check that held tested nothing.
        if [[ $rc == 0 ]] && is_link_check "$t" && [[ $(checks_held "$RUN_DIR/logs/$name.log") == 0 ]]; then
            rc="0 but no check held"
        fi
        if [[ $rc == 0 ]]; then
            printf '  ok    %-22s %s\n' "$t" "$(verdict_line "$t" "$RUN_DIR/logs/$name.log")"
        else
            fail=1
            printf '  FAIL  %-22s rc=%s\n' "$t" "$rc"
            if [[ -f $RUN_DIR/logs/$name.log ]]; then
                sed 's/^/        /' "$RUN_DIR/logs/$name.log" | grep -v '^        test .* ok$' | tail -60
            fi
        fi
        grep -h '^SKIPPED' "$RUN_DIR/logs/$name.log" 2>/dev/null | sed 's/^/        /' || true
    done
    report_guest_retries "$kver"
    local keep=$ROOT/target/vm/last
    rm -rf "$keep" && cp -r "$RUN_DIR" "$keep"
    echo "logs: $keep/logs (console: $keep/console.log)"
    return "$fail"
}

# The line that says what a passing target ran: a test binary's "test
# result:", a link check's count of checks (each "ok" line of its log).
verdict_line() {
    if is_link_check "$1"; then
        echo "$(checks_held "$2") checks passed"
    else
        grep -h '^test result:' "$2" 2>/dev/null | tail -1
    fi
}

# The number of "ok" lines in link check log $1.
checks_held() {
    local n
    n=$(grep -c '^ok ' "$1" 2>/dev/null) || true
    echo "${n:-0}"
}

# The guest's retried steps, listed here and added to the host's retry log
# (EMPTCP_RETRY_LOG of scripts/test.sh) so the test command lists them too.
report_guest_retries() {
    local log=$RUN_DIR/logs/retries.log
    [[ -s $log ]] || return 0
    echo "== $(wc -l <"$log") test steps RETRIED once in the guest after a kernel fault they recognised"
    sed 's/^/   RETRIED /; s/\t/: /' "$log"
    if [[ -n ${EMPTCP_RETRY_LOG:-} ]]; then
        sed "s/^/guest $1 /" "$log" >>"$EMPTCP_RETRY_LOG"
    fi
}

cmd_run() {
    (($#)) || die "usage: scripts/vm.sh run CMD..."
    host_packages
    local kver
    kver=$(kernel_version)
    build_image "$kver"
    local q
    printf -v q '%q ' "$@"
    boot_retrying "$q >/vm-io/logs/run.log 2>&1; echo \$? >/vm-io/rc/run"
    cat "$RUN_DIR/logs/run.log" 2>/dev/null || true
    local rc
    rc=$(cat "$RUN_DIR/rc/run" 2>/dev/null || echo 125)
    log "exit $rc (${BOOT_SECS} s wall, boot included)"
    return "$rc"
}

# `untested SET...`: each link check SET leaves out, as a target: NAME when
# it runs no part of a check without kinds, NAME:K1,K2 for the kinds it
# leaves out of one with kinds (`NAME_check.sh --kinds` lists them).
cmd_untested() {
    local targets=() f name t kinds covered whole left k
    for t in "$@"; do mapfile -t -O "${#targets[@]}" targets < <(targets_of "$t"); done
    for f in "$ROOT"/tests/mptcp/*_check.sh; do
        name=$(basename "$f" .sh) covered=" " whole=0
        for t in "${targets[@]}"; do
            [[ ${t%%:*} == "$name" ]] || continue
            [[ $t == *:* ]] && covered+="${t#*:} " || whole=1
        done
        ((whole)) && continue
        if ! grep -q -- '--kinds' "$f"; then
            [[ $covered == " " ]] && echo "$name"
            continue
        fi
        kinds=$("$f" --kinds) left=
        for k in $kinds; do
            [[ ${covered//,/ } == *" $k "* ]] || left+=${left:+,}$k
        done
        [[ -z $left ]] || echo "$name:$left"
    done
}

case ${1:-} in
test) shift && cmd_test "$@" ;;
untested) shift && cmd_untested "$@" ;;
run) shift && cmd_run "$@" ;;
image)
    host_packages
    build_image "$(kernel_version)"
    ;;
clean) rm -rf "$CACHE" "$ROOT/target/vm" ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
    ;;
esac
