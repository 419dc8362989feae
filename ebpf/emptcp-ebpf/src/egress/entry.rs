//! `egress_entry`: the TC classifier attached (TCX, egress) to each
//! interface with an egress chain or a connection-tracking ingress chain
//! (`IFACE_TRACK`). Parse; on a tracked interface let `track.rs` see the
//! packet; select the interface's first matching egress chain, describe
//! the packet in `EGRESS_META`, then `egress_capture` records the subflow
//! and starts the chain.
use aya_ebpf::{macros::classifier, programs::TcContext};
use emptcp_common::{
    EGRESS_CAPTURE_SLOT, EgressStat, IFACE_RAW_IP, IFACE_TRACK, IfaceChains, Outcome,
    SEL_LOCAL_PORTS, SEL_REMOTE_PORTS, STATS_ROW_EGRESS,
};

use super::{PASS, capture, track};
use crate::{
    entry::{describe, first_chain, forget_offsets, may_hold},
    maps::{CHAINS, EGRESS_IFACES, EGRESS_META, EGRESS_PROGS},
    parse::{Packet, addresses, parse_tcp, tcp_numbers},
    stats,
};

const ROW: u32 = STATS_ROW_EGRESS;

#[classifier]
pub fn egress_entry(ctx: TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // The interface first: it says where L3 starts (an skb sent on a
    // raw-IP device has no link-layer header, `IFACE_RAW_IP`).
    let Some(ifc) = (unsafe { EGRESS_IFACES.get(&ifindex) }) else {
        return PASS;
    };
    let Some(mut pkt) = parse_tcp(&ctx, ifc.flags & IFACE_RAW_IP != 0) else {
        return PASS;
    };
    // The connection table looks at MP_JOIN SYNs and, while deliveries
    // await confirmation, at every sent packet (`track.rs`).
    let track = wants_track(ifc, pkt.flags);
    if !track && ifc.n_chains == 0 {
        return PASS;
    }
    if try_entry(&ctx, &mut pkt, ifc, track).is_none() {
        stats::bump(ROW, Outcome::Passed);
    }
    PASS
}

/// Does the connection table (`track.rs`) want a look at this packet?
#[inline(always)]
fn wants_track(ifc: &IfaceChains, tcp_flags: u8) -> bool {
    let flags = unsafe { core::ptr::read_volatile(&ifc.flags) };
    flags & IFACE_TRACK != 0 && track::wanted(tcp_flags)
}

/// `Some` when a chain was started (and failed to tail call), `None` when
/// the packet is not for a chain. Either way the packet passes. The packet
/// is described once (one option scan), for the chain and for `track`.
#[inline(always)]
fn try_entry(ctx: &TcContext, sent: &mut Packet, ifc: &IfaceChains, track: bool) -> Option<()> {
    // The parser leaves the addresses out (most ingress packets never need
    // them); every egress packet of a listed interface does.
    addresses(ctx, sent)?;
    let mut pkt = flipped(sent);
    let w = EGRESS_META.get_ptr_mut(0);
    if let Some(w) = w {
        forget_offsets(unsafe { &raw mut (*w).meta }, &mut pkt);
    }
    let found = select(ifc, &pkt);
    if found.is_none() && !track {
        return None;
    }
    let def = match found {
        Some(id) => {
            let d = CHAINS.get(id).filter(|d| d.len != 0);
            if d.is_none() {
                stats::bump(ROW, Outcome::Error);
            }
            d
        }
        None => None,
    };
    let nums = tcp_numbers(ctx, pkt.l4_off)?;
    let Some(w) = w else {
        stats::bump(ROW, Outcome::Error);
        return Some(());
    };
    let m = unsafe { &raw mut (*w).meta };
    describe(ctx, m, &pkt, nums, found.unwrap_or(0), def, || {
        super::event(EgressStat::Malformed)
    });
    // Neither `track` nor `def` is kept across the option scan inside
    // `describe`: the verifier would walk the scan once per combination
    // of the two (~100 k verified instructions). Both are read again, the
    // chain from the description, `track` from the interface (the
    // awaiting gauge may have moved in between: then this packet is
    // looked at, or not, as the next one would be).
    if wants_track(ifc, pkt.flags) {
        track::track(ctx, m);
    }
    if unsafe { core::ptr::read_volatile(&raw const (*m).n_steps) } == 0 {
        return None;
    }
    // A new serial for this packet, in the slot and in the skb.
    unsafe {
        let serial = (*w).serial.wrapping_add(1);
        (*w).serial = serial;
        (*ctx.skb.skb).cb[0] = serial;
    }
    stats::bump(ROW, Outcome::Applied);
    // Capture first (its own program: the stack and the verifier's budget
    // are per program), which then starts the chain. Without it, the
    // chain still runs.
    unsafe { EGRESS_PROGS.tail_call(ctx, EGRESS_CAPTURE_SLOT) };
    stats::bump(ROW, Outcome::Error);
    super::jump(ctx, m, 0);
    Some(())
}

/// The interface's first egress chain that selects `pkt` (seen from the
/// peer), after the port prefilter.
#[inline(always)]
fn select(ifc: &IfaceChains, pkt: &Packet) -> Option<u32> {
    if ifc.require & SEL_REMOTE_PORTS != 0 && !may_hold(&ifc.remote_ports, pkt.sport) {
        return None;
    }
    if ifc.require & SEL_LOCAL_PORTS != 0 && !may_hold(&ifc.local_ports, pkt.dport) {
        return None;
    }
    first_chain(ifc, pkt)
}

/// The packet as the local host's peer would be described on ingress:
/// the selectors, the flow key and the description then need no egress
/// variant (local = this packet's source).
#[inline(always)]
fn flipped(sent: &Packet) -> Packet {
    Packet {
        l3_off: sent.l3_off,
        l4_off: sent.l4_off,
        family: sent.family,
        src: sent.dst,
        dst: sent.src,
        sport: sent.dport,
        dport: sent.sport,
        flags: sent.flags,
        doff: sent.doff,
        seg_len: sent.seg_len,
    }
}

/// `egress_capture`: records the subflow (`capture.rs`), then tail-calls
/// the chain's first step.
#[classifier]
pub fn egress_capture(ctx: TcContext) -> i32 {
    let Some(m) = super::meta(&ctx) else {
        crate::identity::reference();
        stats::bump(ROW, Outcome::Error);
        return PASS;
    };
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    capture::capture(&ctx, m, ifindex);
    super::jump(&ctx, m, 0)
}
