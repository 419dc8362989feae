//! The entry program attached to each interface: parse, select a chain,
//! describe the packet in the XDP metadata once, start the chain. On an
//! interface with `IFACE_CAPTURE`, a packet of a subflow in `SUBFLOWS` is
//! described whether a chain takes it or not and goes through
//! `ingress_capture` (capture/ingress.rs) first.
//!
//! The hot path is traffic that is not ours. A non-TCP packet leaves after
//! the parser; a TCP packet on an interface whose every chain lists ports
//! leaves after one inlined array lookup when its ports are in no chain's
//! filter. Only candidates pay for hash and LPM lookups.
use aya_ebpf::{
    macros::{classifier, xdp},
    maps::lpm_trie::Key,
    programs::{TcContext, XdpContext},
};
use emptcp_common::{
    ChainDef, DIR_LOCAL, DIR_REMOTE, FlowKey, FlowStat, IFACE_CAPTURE, IFACE_RAW_IP,
    INGRESS_CAPTURE_SLOT, INLINE_PORTS, IfaceChains, LPM_FIXED_BITS, LpmV4, LpmV6,
    MAX_CHAINS_PER_IFACE, MAX_STEPS, META_FLOW_UNKNOWN, META_MAGIC, Outcome, PortKey, SEL_LOCAL,
    SEL_LOCAL_PORTS, SEL_LOCAL_PORTS_INLINE, SEL_LOCAL_V4_INLINE, SEL_REMOTE, SEL_REMOTE_PORTS,
    SEL_REMOTE_PORTS_INLINE, SEL_REMOTE_V4_INLINE, STATS_ROW_ENTRY, XdpMeta, port_bucket,
};

use crate::{
    chain,
    hook::{Hook, Out},
    maps::{self, CHAINS, PORTS, SEL_V4, SEL_V6, SUBFLOWS},
    parse::{Packet, addresses, parse_tcp, tcp_numbers},
    scan, stats,
};

/// The entry program of an interface with `IFACE_CAPTURE` (`entry`
/// tail-calls it first thing): parse, look the subflow up, select the
/// chain (a captured packet is described even when no chain takes it,
/// with zero steps), describe, capture (`capture::ingress`), start the
/// chain. Here, not in capture/, so the capture stays below the entry.
#[xdp]
pub fn ingress_capture(ctx: XdpContext) -> u32 {
    run::<XdpContext, true>(&ctx)
}

/// Identifies the build of this object. Read on every matched packet so it
/// stays in the program; tests patch it in the ELF to get a "rebuilt"
/// object and prove atomic program replacement.
#[unsafe(no_mangle)]
static EMPTCP_BUILD_ID: [u8; 16] = *b"emptcp-build-000";

#[xdp]
pub fn entry(ctx: XdpContext) -> u32 {
    run::<XdpContext, false>(&ctx)
}

/// The entry of the TC ingress hook (a TCX ingress link), for interfaces
/// whose chains run after GRO: the same path as `entry`, once per skb.
#[classifier]
pub fn tc_entry(ctx: TcContext) -> i32 {
    run::<TcContext, false>(&ctx)
}

/// `ingress_capture` on the TC ingress hook: `tc_entry` of an interface
/// with `IFACE_CAPTURE` hands it every TCP skb (slot 0 of `TC_PROGS`).
/// The capture's records (data received, the peer's keys, its FIN or RST)
/// are the same per skb as per segment: GRO merges only in-order data of
/// one subflow, and flushes on FIN, RST and option changes.
#[classifier]
pub fn tc_ingress_capture(ctx: TcContext) -> i32 {
    run::<TcContext, true>(&ctx)
}

/// The entry program (`CAPTURE` false) or, on an interface with
/// `IFACE_CAPTURE`, `ingress_capture` (`CAPTURE` true), to which the entry
/// hands every TCP packet of such an interface before selecting a chain:
/// the capture variant of the whole path is a program of its own, so the
/// entry program's verification and hot path stay what they are without
/// capture (a second path into the option walk, or a live flag across
/// it, multiplied the entry's verified instructions by three).
#[inline(always)]
pub(crate) fn run<H: Hook, const CAPTURE: bool>(ctx: &H) -> H::Code {
    // The interface first: it says where L3 starts (IFACE_RAW_IP).
    let Some(ifc) = maps::iface(ctx.ifindex()) else {
        return H::code(Out::Pass);
    };
    let Some(mut pkt) = parse_tcp(ctx, ifc.flags & IFACE_RAW_IP != 0) else {
        return H::code(Out::Pass);
    };
    // `seen` is not counted here (one lookup less per packet): status
    // reports it as applied + passed + error.
    if try_entry::<H, CAPTURE>(ctx, &mut pkt, ifc).is_none() {
        stats::bump(STATS_ROW_ENTRY, Outcome::Passed);
        // Not ours: no description was written, nothing to invalidate.
        return H::code(Out::Pass);
    }
    // A chain was started and its tail call failed, or the description
    // slot was missing: invalidate the description.
    chain::leave(ctx, Out::Pass)
}

/// Does the port filter `f` possibly hold `port`?
#[inline(always)]
pub(crate) fn may_hold(f: &[u64; 4], port: u16) -> bool {
    let b = port_bucket(port);
    f[(b >> 6) as usize & 3] & (1u64 << (b & 63)) != 0
}

/// `Some` when a chain or the capture was started (and failed to tail
/// call), `None` when the packet is not for us. Either way the packet
/// passes.
#[inline(always)]
fn try_entry<H: Hook, const CAPTURE: bool>(
    ctx: &H,
    pkt: &mut Packet,
    ifc: &IfaceChains,
) -> Option<()> {
    // A subflow the capture knows is captured whatever the chains select.
    // The capture variant has no port prefilter (the selectors give the
    // same answer): a path that skips it for captured packets only would
    // be a second path into the option walk for the verifier.
    let captured = CAPTURE && known_subflow(ctx, pkt)?;
    if !CAPTURE {
        // Ports every chain requires and no chain lists: not ours, no lookup.
        if ifc.require & SEL_REMOTE_PORTS != 0 && !may_hold(&ifc.remote_ports, pkt.sport) {
            return None;
        }
        if ifc.require & SEL_LOCAL_PORTS != 0 && !may_hold(&ifc.local_ports, pkt.dport) {
            return None;
        }
        // After the prefilter, which never rejects on a capture interface
        // (apply writes `require` 0 there): the hot path of the others,
        // a packet of no chain, does not even test the flag.
        if ifc.flags & IFACE_CAPTURE != 0 {
            ctx.call_slot(INGRESS_CAPTURE_SLOT);
            // No capture program: the chains still run.
            stats::bump(STATS_ROW_ENTRY, Outcome::Error);
        }
        addresses(ctx, pkt)?;
    }
    let m = chain::slot(ctx);
    if let Some(m) = m {
        forget_offsets(m, pkt);
    }
    let pkt: &Packet = pkt;
    let found = first_chain(ifc, pkt);
    // The chain, or none (zero steps) for a captured packet no chain takes.
    let (chain_id, def) = match found {
        Some(id) => match CHAINS.get(id).filter(|d| d.len != 0) {
            Some(def) => (id, Some(def)),
            None => {
                stats::bump(STATS_ROW_ENTRY, Outcome::Error);
                if !captured {
                    return Some(());
                }
                (NO_CHAIN, None)
            }
        },
        None if captured => (NO_CHAIN, None),
        None => return None,
    };
    let Some(nums) = tcp_numbers(ctx, pkt.l4_off) else {
        return None;
    };
    let Some(m) = m else {
        stats::bump(STATS_ROW_ENTRY, Outcome::Error);
        return Some(());
    };
    // `applied`: a chain was started; a packet only captured is `passed`.
    stats::bump(
        STATS_ROW_ENTRY,
        if def.is_some() {
            Outcome::Applied
        } else {
            Outcome::Passed
        },
    );
    describe(ctx, m, pkt, nums, chain_id, def, || {
        stats::event(FlowStat::Malformed)
    });
    if CAPTURE {
        // Its own lookup: a flag or pointer kept across the option walk
        // would make the verifier walk it once per value.
        crate::capture::ingress::capture(ctx, m);
    }
    chain::jump(ctx, m, 0);
    Some(())
}

/// Makes the header offsets of `pkt` opaque to the verifier: they go
/// through the per-CPU description slot `m` (memory it does not track)
/// and come back bounded by masks (Ethernet + two tags: L3 at 22 at most;
/// + 60 bytes of IPv4 header: L4 at 82). Each way through the parser
/// (raw IP, Ethernet with zero, one or two tags, IPv4 with or without
/// options) left its own constant offsets, and the verifier walked the
/// chain selection and the option scan once per combination: ~100 k of
/// the entry's verified instructions. Every later access checks its
/// bounds against the packet again. Two stores and two loads to a cache
/// line the description writes next anyway.
#[inline(always)]
pub(crate) fn forget_offsets(m: *mut XdpMeta, pkt: &mut Packet) {
    unsafe {
        core::ptr::write_volatile(&raw mut (*m).l3_off, pkt.l3_off as u16);
        core::ptr::write_volatile(&raw mut (*m).l4_off, pkt.l4_off as u16);
        pkt.l3_off = (core::ptr::read_volatile(&raw const (*m).l3_off) & 0x1f) as usize;
        pkt.l4_off = (core::ptr::read_volatile(&raw const (*m).l4_off) & 0x7f) as usize;
    }
}

/// `XdpMeta::chain` of a packet described without a chain (zero steps).
const NO_CHAIN: u32 = u32::MAX;

/// Is the packet's subflow in `SUBFLOWS` (key: local = the packet's
/// destination, as `describe` writes it)? Fills the addresses.
#[inline(always)]
fn known_subflow<H: Hook>(ctx: &H, pkt: &mut Packet) -> Option<bool> {
    addresses(ctx, pkt)?;
    let key = flow_key(pkt);
    Some(unsafe { SUBFLOWS.get(&key) }.is_some())
}

/// The packet's flow key from the local host's point of view: on ingress
/// (and for an egress packet described as its peer would be) local = the
/// packet's destination.
#[inline(always)]
pub(crate) fn flow_key(pkt: &Packet) -> FlowKey {
    FlowKey {
        family: pkt.family,
        _pad: [0; 3],
        local_port: pkt.dport,
        remote_port: pkt.sport,
        local: pkt.dst,
        remote: pkt.src,
    }
}

/// Writes the packet's description: chain steps (none without `def`),
/// flow key, header offsets and the option scan; `malformed` counts a
/// segment whose options or lengths do not hold, in the hook's counters.
#[inline(always)]
pub(crate) fn describe<C: crate::parse::Frame>(
    ctx: &C,
    m: *mut XdpMeta,
    pkt: &Packet,
    (seq, ack, window): (u32, u32, u16),
    chain_id: u32,
    def: Option<&ChainDef>,
    malformed: impl Fn(),
) {
    let build = unsafe { core::ptr::read_volatile(&EMPTCP_BUILD_ID[15]) };
    crate::identity::reference();
    let mut steps = [0u8; MAX_STEPS];
    let mut args = [0u32; MAX_STEPS];
    let mut n_steps = 0;
    if let Some(def) = def {
        for i in 0..MAX_STEPS {
            steps[i] = def.steps[i].action as u8;
            args[i] = def.steps[i].arg;
        }
        n_steps = def.len.min(MAX_STEPS as u32) as u8;
    }
    unsafe {
        (*m).magic = META_MAGIC;
        (*m).chain = chain_id;
        (*m).key = flow_key(pkt);
        (*m).steps = steps;
        (*m).args = args;
        (*m).l3_off = pkt.l3_off as u16;
        (*m).l4_off = pkt.l4_off as u16;
        (*m).pos = 0;
        (*m).n_steps = n_steps;
        (*m).family = pkt.family;
        (*m).build = build;
        (*m).tcp_flags = pkt.flags;
        (*m).seg_len = pkt.seg_len;
        (*m).seq = seq;
        (*m).ack = ack;
        (*m).window = window;
        (*m).tsval = 0;
        (*m).tsecr = 0;
        (*m).flow_bytes = 0;
        (*m).flow = META_FLOW_UNKNOWN;
        (*m).flow_due = 0;
    }
    scan::options(ctx, m, pkt, malformed);
}

/// The interface's first chain that selects the packet (both hooks).
#[inline(always)]
pub(crate) fn first_chain(ifc: &IfaceChains, pkt: &Packet) -> Option<u32> {
    for i in 0..MAX_CHAINS_PER_IFACE {
        if i as u32 >= ifc.n_chains {
            break;
        }
        let id = ifc.chains[i];
        let v4 = (&ifc.v4[i], &ifc.v4_alt[i]);
        if selects(id, ifc.chain_flags[i], &ifc.ports[i], v4, pkt) {
            return Some(id);
        }
    }
    None
}

/// Does chain `id` (selector parts `flags`) accept the packet? Absent parts
/// match all.
#[inline(always)]
fn selects(
    id: u32,
    flags: u32,
    inline: &[u16; 2 * INLINE_PORTS],
    (v4, alt): (&[u32; 4], &[u32; 4]),
    pkt: &Packet,
) -> bool {
    // Ports first: compared inline for small sets, else a hash lookup,
    // which is still cheaper than an LPM walk. On the receive path the
    // remote end is the packet's source.
    if flags & SEL_REMOTE_PORTS != 0 {
        let ok = if flags & SEL_REMOTE_PORTS_INLINE != 0 {
            inline[..INLINE_PORTS].contains(&pkt.sport)
        } else {
            port_match(DIR_REMOTE, id, pkt.sport)
        };
        if !ok {
            return false;
        }
    }
    if flags & SEL_LOCAL_PORTS != 0 {
        let ok = if flags & SEL_LOCAL_PORTS_INLINE != 0 {
            inline[INLINE_PORTS..].contains(&pkt.dport)
        } else {
            port_match(DIR_LOCAL, id, pkt.dport)
        };
        if !ok {
            return false;
        }
    }
    if flags & SEL_REMOTE != 0 {
        let inline =
            (flags & SEL_REMOTE_V4_INLINE != 0).then_some([(v4[0], v4[1]), (alt[0], alt[1])]);
        if !prefix(DIR_REMOTE, id, inline, pkt.family, &pkt.src) {
            return false;
        }
    }
    if flags & SEL_LOCAL != 0 {
        let inline =
            (flags & SEL_LOCAL_V4_INLINE != 0).then_some([(v4[2], v4[3]), (alt[2], alt[3])]);
        if !prefix(DIR_LOCAL, id, inline, pkt.family, &pkt.dst) {
            return false;
        }
    }
    true
}

/// Is `addr` in the chain's prefixes of direction `dir`? An IPv4 address
/// against the chain's inline prefixes (`inline`: two (network, mask),
/// the second a copy of the first where there is one) is two masks and
/// compares; anything else an LPM lookup.
#[inline(always)]
fn prefix(dir: u8, id: u32, inline: Option<[(u32, u32); 2]>, family: u8, addr: &[u8; 16]) -> bool {
    if let Some([(net, mask), (net2, mask2)]) = inline
        && family == 4
    {
        let a = u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]);
        return a & mask == net || a & mask2 == net2;
    }
    prefix_match(dir, id, family, addr)
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
