#!/usr/bin/env bash
# Idempotent machine set-up for building and testing emptcp (Debian 12, root).
# Installs only what is missing:
#   - Debian packages: iproute2, bpftool, ethtool, python3 (testbed traffic), jq,
#     tcpdump (simulate's live comparison and tests/captures/make.sh)
#   - rust-src for the nightly toolchain (the eBPF crate needs -Z build-std=core)
#   - bpf-linker built against the nightly's own libLLVM (same LLVM major)
#   - cargo-fuzz (scripts/fuzz.sh) and cargo-deny (scripts/test.sh, deny.toml)
# Safe to run on every invocation: a warm run takes well under a second.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
NIGHTLY=${EMPTCP_NIGHTLY:-nightly}

# --- Debian packages -------------------------------------------------------
need_pkgs=()
command -v ip       >/dev/null || need_pkgs+=(iproute2)
command -v bpftool  >/dev/null || need_pkgs+=(bpftool)
command -v ethtool  >/dev/null || need_pkgs+=(ethtool)
command -v python3  >/dev/null || need_pkgs+=(python3)
command -v nstat    >/dev/null || need_pkgs+=(iproute2)
command -v jq       >/dev/null || need_pkgs+=(jq)
command -v tcpdump  >/dev/null || need_pkgs+=(tcpdump)
if ((${#need_pkgs[@]})); then
    if [[ $(id -u) != 0 ]]; then
        log "missing Debian packages (${need_pkgs[*]}); run this script as root to install them"
    else
        log "installing Debian packages: ${need_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    fi
fi

# --- bpffs -------------------------------------------------------------------
# Mode 0700, as systemd mounts it: the kernel's default is 1777, where any
# user may create directories (or a fake emptcp root) next to emptcp's.
if [[ $(id -u) == 0 ]] && ! mountpoint -q /sys/fs/bpf; then
    log "mounting bpffs on /sys/fs/bpf (mode 0700)"
    mount -t bpf -o mode=0700 bpf /sys/fs/bpf
fi
# An existing mount is not changed (other tools may rely on its mode); a
# world-writable one is reported. emptcp itself refuses a root it does not
# own or that others can write to (docs/operations.md).
if mountpoint -q /sys/fs/bpf; then
    mode=$(stat -c %a /sys/fs/bpf)
    if (( 8#$mode & 8#022 )); then
        log "note: /sys/fs/bpf is mode $mode (writable by other users); systemd mounts it 0700."
        log "      To tighten it: mount -o remount,mode=0700 /sys/fs/bpf (emptcp refuses foreign or open roots either way)"
    fi
fi

# --- nightly + rust-src -------------------------------------------------------
if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1; then
    log "installing rust toolchain $NIGHTLY"
    rustup toolchain install "$NIGHTLY" --profile minimal
fi
if ! rustup component list --toolchain "$NIGHTLY" --installed | grep -q '^rust-src'; then
    log "adding rust-src to $NIGHTLY"
    rustup component add rust-src --toolchain "$NIGHTLY"
fi

# --- bpf-linker for the nightly's LLVM major -----------------------------------
SYSROOT=$(rustc +"$NIGHTLY" --print sysroot)
MAJOR=$(rustc +"$NIGHTLY" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
stamp="$HOME/.cargo/bin/.bpf-linker-llvm"
if ! bpf-linker --version >/dev/null 2>&1 || [[ "$(cat "$stamp" 2>/dev/null)" != "$SYSROOT:$MAJOR" ]]; then
    log "building bpf-linker for LLVM $MAJOR (about a minute)"
    SHIM="$HOME/.cache/emptcp/llvm-shim-$MAJOR"
    mkdir -p "$SHIM"
    ln -sf "$(ls "$SYSROOT"/lib/libLLVM.so."$MAJOR".* | head -1)" "$SHIM/libLLVM.so"
    RUSTFLAGS="-L $SHIM -C link-arg=-Wl,-rpath,$SYSROOT/lib" \
        cargo +"$NIGHTLY" install --locked --force bpf-linker --no-default-features --features "llvm-$MAJOR" >&2
    echo "$SYSROOT:$MAJOR" >"$stamp"
fi
bpf-linker --version >/dev/null

# --- cargo-fuzz (scripts/fuzz.sh; its targets build with the nightly) --------
# Installed once into ~/.cargo/bin; a warm run only checks that it runs.
CARGO_FUZZ_VERSION=0.13.2
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION (about two minutes)"
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" >&2
fi

# --- cargo-deny (scripts/test.sh: licences, bans, sources, advisories) -------
# Installed once into ~/.cargo/bin; a warm run only checks that it runs.
# (A cold build took about 20 min on the loaded 2-vCPU development machine.)
CARGO_DENY_VERSION=0.20.2
if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
    log "installing cargo-deny $CARGO_DENY_VERSION (several minutes)"
    cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION" >&2
fi
