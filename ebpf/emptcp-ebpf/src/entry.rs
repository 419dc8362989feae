//! The entry program attached to each interface: parse, select a chain,
//! start it. The hot path for traffic that is not ours: non-TCP packets and
//! interfaces without chains leave after a handful of instructions.
use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_adjust_meta, macros::xdp,
    maps::lpm_trie::Key, programs::XdpContext,
};
use emptcp_common::{
    DIR_LOCAL, DIR_REMOTE, IfaceChains, LPM_FIXED_BITS, LpmV4, LpmV6, MAX_CHAINS_PER_IFACE,
    META_MAGIC, Outcome, PortKey, SEL_LOCAL, SEL_LOCAL_PORTS, SEL_REMOTE, SEL_REMOTE_PORTS,
    STATS_ROW_ENTRY, XdpMeta,
};

use crate::{
    chain,
    maps::{IFACES, PORTS, SEL_V4, SEL_V6, SELECTORS},
    parse::{Packet, parse_tcp},
    stats,
};

/// Identifies the build of this object. Read on every matched packet so it
/// stays in the program; tests patch it in the ELF to get a "rebuilt"
/// object and prove atomic program replacement.
#[unsafe(no_mangle)]
static EMPTCP_BUILD_ID: [u8; 16] = *b"emptcp-build-000";

#[xdp]
pub fn entry(ctx: XdpContext) -> u32 {
    // Hot path: a packet that is not TCP, or arrives on an interface with
    // no chains, leaves after the parser and at most one lookup, without
    // touching a counter.
    let Some(pkt) = parse_tcp(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(ifc) = (unsafe { IFACES.get(ifindex) }) else {
        return xdp_action::XDP_PASS;
    };
    // `seen` is not counted here (one lookup less per packet): status
    // reports it as applied + passed + error.
    if try_entry(&ctx, &pkt, ifc).is_none() {
        stats::bump(STATS_ROW_ENTRY, Outcome::Passed);
    }
    xdp_action::XDP_PASS
}

/// `Some` when a chain was started (and failed to tail call), `None` when the
/// packet is not for us. Either way the packet passes.
#[inline(always)]
fn try_entry(ctx: &XdpContext, pkt: &Packet, ifc: &IfaceChains) -> Option<()> {
    let mut found = None;
    for i in 0..MAX_CHAINS_PER_IFACE {
        if i as u32 >= ifc.n_chains {
            break;
        }
        let id = ifc.chains[i];
        if selects(id, pkt) {
            found = Some(id);
            break;
        }
    }
    let chain_id = found?;
    // Room for the chain position in front of the packet. Received frames
    // have no metadata; a frame that already has ours (BPF_PROG_TEST_RUN
    // with repeat runs the same buffer again) keeps its 32 bytes.
    let have = (ctx.data() - ctx.metadata()) as i32;
    let delta = have - core::mem::size_of::<XdpMeta>() as i32;
    if delta != 0 && unsafe { bpf_xdp_adjust_meta(ctx.ctx, delta) } != 0 {
        stats::bump(STATS_ROW_ENTRY, Outcome::Error);
        return Some(());
    }
    let m = ctx.metadata();
    if m + core::mem::size_of::<XdpMeta>() > ctx.data() {
        stats::bump(STATS_ROW_ENTRY, Outcome::Error);
        return Some(());
    }
    let m = m as *mut XdpMeta;
    let build = unsafe { core::ptr::read_volatile(&EMPTCP_BUILD_ID[15]) };
    unsafe {
        m.write(XdpMeta {
            magic: META_MAGIC,
            chain: chain_id,
            pos: 0,
            l3_off: pkt.l3_off as u16,
            l4_off: pkt.l4_off as u16,
            family: pkt.family,
            _pad: [build, 0, 0],
            _reserved: [0; 3],
        })
    };
    stats::bump(STATS_ROW_ENTRY, Outcome::Applied);
    chain::jump(ctx, m, 0, STATS_ROW_ENTRY);
    Some(())
}

/// Does chain `id`'s selector accept the packet? Absent parts match all.
#[inline(always)]
fn selects(id: u32, pkt: &Packet) -> bool {
    let Some(sel) = (unsafe { SELECTORS.get(id) }) else {
        return false;
    };
    let flags = sel.flags;
    // Ports first: a hash lookup is cheaper than an LPM walk. On the receive
    // path the remote end is the packet's source.
    if flags & SEL_REMOTE_PORTS != 0 && !port_match(DIR_REMOTE, id, pkt.sport) {
        return false;
    }
    if flags & SEL_LOCAL_PORTS != 0 && !port_match(DIR_LOCAL, id, pkt.dport) {
        return false;
    }
    if flags & SEL_REMOTE != 0 && !prefix_match(DIR_REMOTE, id, pkt.family, &pkt.src) {
        return false;
    }
    if flags & SEL_LOCAL != 0 && !prefix_match(DIR_LOCAL, id, pkt.family, &pkt.dst) {
        return false;
    }
    true
}

#[inline(always)]
fn prefix_match(dir: u8, id: u32, family: u8, addr: &[u8; 16]) -> bool {
    let chain = id.to_be_bytes();
    if family == 4 {
        let data = LpmV4 {
            dir,
            chain,
            addr: [addr[0], addr[1], addr[2], addr[3]],
            _pad: [0; 3],
        };
        SEL_V4.get(Key::new(LPM_FIXED_BITS + 32, data)).is_some()
    } else {
        let data = LpmV6 {
            dir,
            chain,
            addr: *addr,
            _pad: [0; 3],
        };
        SEL_V6.get(Key::new(LPM_FIXED_BITS + 128, data)).is_some()
    }
}

#[inline(always)]
fn port_match(dir: u8, id: u32, port: u16) -> bool {
    let key = PortKey {
        chain: id,
        port,
        dir,
        _pad: 0,
    };
    unsafe { PORTS.get(key) }.is_some()
}
