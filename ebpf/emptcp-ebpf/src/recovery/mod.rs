//! `ingress_recover`: the in-kernel recovery of a stored ADD_ADDR, for
//! connections where no received packet has room for the option (a pure
//! download: every server segment carries timestamps and a full DSS).
//! Attached with a TCX link to the TC ingress hook of every interface
//! whose ingress chains use `recover_add_addr`, so `emptcp apply` alone
//! recovers such a connection; no user-space process is involved.
//!
//! 1. A segment of a connection that `recover_add_addr` (XDP, earlier on
//!    the same packet) marked pending, on its initial subflow, is cloned
//!    with `bpf_clone_redirect(BPF_F_INGRESS)` to the interface it
//!    arrived on; the clone carries `RECOVER_MARK | slot` in `skb->mark`.
//!    The delivery is counted then (`flow::delivered`, `VIA_KERNEL`), so
//!    the next segments clone nothing until the retry time.
//! 2. The clone comes back through TC ingress (from the backlog queue)
//!    and `carrier::complete` turns it into the duplicate ACK the server
//!    would have sent: headers only, timestamps + the stored option, and
//!    seq/ack/window/timestamps read from `FLOWS` at THAT moment. Reading
//!    them then, not when cloning, is what makes the client accept it:
//!    while the clone waited, NAPI delivered more data and the client's
//!    ACKs moved its `rcv_wup` past any sequence number fixed earlier, so
//!    TCP would drop the clone as old.
//!
//! The common packet pays one array read (`PENDING`, a gauge of pending
//! connections) and returns. Only the initial subflow is served: a joined
//! subflow's sequence state is not tracked in full (`JoinState`); its
//! connection is left to the next initial-subflow segment or, after 16
//! packets without one, to the agent (`recover_add_addr::pending`).
use aya_ebpf::{
    bindings::BPF_F_INGRESS, helpers::bpf_ktime_get_ns, helpers::generated::bpf_clone_redirect,
    macros::classifier, programs::TcContext,
};
use emptcp_common::{
    FLOW_RECOVER_PENDING, FLOW_SEQ_SEEN, FlowKey, FlowStat, IFACE_RAW_IP, RECOVER_MARK,
    RECOVER_MARK_SLOT, VIA_KERNEL,
};

use crate::{
    entry::flow_key,
    flow::{self, Due},
    maps::{IFACES, PENDING},
    options::{FIN, RST, SYN},
    parse::{Packet, addresses, parse_tcp},
    stats,
};

mod carrier;

/// `TCX_NEXT`: the packet goes on to the next program, or the stack.
pub const PASS: i32 = -1;
/// `TCX_DROP`.
pub const DROP: i32 = 2;

#[classifier]
pub fn ingress_recover(ctx: TcContext) -> i32 {
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & !RECOVER_MARK_SLOT == RECOVER_MARK {
        crate::identity::reference();
        return carrier::complete(&ctx, mark & RECOVER_MARK_SLOT);
    }
    if flow::gauge(&PENDING) == 0 {
        return PASS;
    }
    clone_if_due(&ctx);
    PASS
}

/// The received TCP segment and its connection key (local = destination),
/// on an interface of ours.
#[inline(always)]
fn segment(ctx: &TcContext) -> Option<(Packet, FlowKey)> {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let ifc = unsafe { IFACES.get(&ifindex) }?;
    let mut pkt = parse_tcp(ctx, ifc.flags & IFACE_RAW_IP != 0)?;
    addresses(ctx, &mut pkt)?;
    let key = flow_key(&pkt);
    Some((pkt, key))
}

/// Clones the segment when its connection has an address due (step 1).
#[inline(always)]
fn clone_if_due(ctx: &TcContext) -> Option<()> {
    let (pkt, key) = segment(ctx)?;
    if pkt.flags & (SYN | FIN | RST) != 0 {
        return None;
    }
    // The initial subflow: FLOWS holds its rcv_nxt, ack and timestamps.
    let f = flow::get(&key)?;
    if f.flags & FLOW_RECOVER_PENDING == 0 || f.flags & FLOW_SEQ_SEEN == 0 {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let Due::Slot { slot, retry } = flow::due(&key, f, now) else {
        flow::clear_pending(f);
        return None;
    };
    let skb = ctx.skb.skb;
    let (own, ifindex) = unsafe { ((*skb).mark, (*skb).ifindex) };
    // The clone is told apart by its mark; the original keeps its own,
    // and the clone gets it back once completed (`FlowState::mark`).
    f.mark = own;
    unsafe { (*skb).mark = RECOVER_MARK | (slot & RECOVER_MARK_SLOT) };
    let r = unsafe { bpf_clone_redirect(skb, ifindex, BPF_F_INGRESS as u64) };
    unsafe { (*skb).mark = own };
    if r != 0 {
        stats::event(FlowStat::KernelRecoveryFailed);
        return None;
    }
    flow::delivered(f, slot, retry, VIA_KERNEL, now);
    flow::clear_pending(f);
    Some(())
}
