//! Capture of MPTCP subflows for packet copy (`SUBFLOWS`, see
//! `emptcp_common::SubflowState`), shared by the two hooks that write it:
//!
//! * `egress/capture.rs` (TC egress): what the LOCAL end sends. It creates
//!   the entries and owns every field a forged packet needs.
//! * `ingress.rs` (XDP, `ingress_capture`): what the PEER sends, on
//!   entries that exist: when data was last received, the MP_CAPABLE keys
//!   (server role), the peer's FIN or RST.
//!
//! Both read the keys and report and close a subflow here. Both write
//! an entry's `flags` at once (the transmit and the receive CPU), so its
//! bits change only through [`set_flags`]/[`clear_flags`]: atomic, and
//! only while a bit differs (no store on the per-packet path once set).
//! The other fields are plain stores, each owned by one side.
use emptcp_common::{
    EgressStat, FlowKey, SF_CLOSED, SF_LOCAL_KEY, SF_REMOTE_KEY, SUBFLOW_EV_CLOSED, SubflowEvent,
    SubflowState,
};

use crate::{
    atomic, maps::SUBFLOW_EVENTS, options::Seg, parse::Frame, stats::egress_event as event,
};

pub mod ingress;

/// Who sent the segment being captured.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The local end (egress).
    Local,
    /// The peer (ingress).
    Peer,
}

/// Puts a `SUBFLOW_EVENTS` record for `key` (a full ring is counted).
#[inline(always)]
pub fn emit(key: &FlowKey, f: &SubflowState, kind: u32, now: u64) {
    let ev = SubflowEvent {
        key: *key,
        kind,
        chain: f.chain,
        ifindex: f.ifindex,
        flags: f.flags,
        snd_nxt: f.snd_nxt,
        rcv_nxt: f.rcv_nxt,
        ts_ns: now,
    };
    if SUBFLOW_EVENTS.output::<SubflowEvent>(&ev, 0).is_err() {
        event(EgressStat::EventsLost);
    }
}

/// The subflow ended: notes how (`how`: `SF_FIN`/`SF_RST` sent,
/// `SF_PEER_FIN`/`SF_PEER_RST` received) and reports it (`CLOSED`). The
/// entry stays, flagged (`SF_CLOSED`), as a tombstone: removing it would
/// let the segments the connection still sends after its FIN (the final
/// ACK, which carries a DSS, or a retransmission) create it again as a
/// new subflow, which packet copy would then see idle and forge for.
/// Nothing is forged for a closed entry; the LRU evicts it, or a SYN on
/// the same 4-tuple starts it over.
#[inline(always)]
pub fn close(key: &FlowKey, f: &mut SubflowState, how: u32, now: u64) {
    set_flags(f, how);
    emit(key, f, SUBFLOW_EV_CLOSED, now);
    event(EgressStat::SubflowsClosed);
}

/// Sets `SF_*` bits atomically, if one is missing.
#[inline(always)]
pub fn set_flags(f: &mut SubflowState, bits: u32) {
    atomic::set_bits(flags_word(f), f.flags, bits, 0);
}

/// Clears `SF_*` bits atomically, if one is set.
#[inline(always)]
pub fn clear_flags(f: &mut SubflowState, bits: u32) {
    atomic::clear_bits(flags_word(f), f.flags, bits, 0);
}

/// The 8-aligned word of `flags` (the high half, `window` and `vlan_tci`,
/// is left as it is by both operations).
#[inline(always)]
fn flags_word(f: &mut SubflowState) -> *mut u64 {
    (&raw mut f.flags).cast()
}

/// Whether the entry is a closed subflow's tombstone.
#[inline(always)]
pub fn closed(f: &SubflowState) -> bool {
    f.flags & SF_CLOSED != 0
}

/// MP_CAPABLE (RFC 8684 3.1): 12 bytes carry the sender's key (v1
/// SYN-ACK, v0 SYN), 20 or more (the third ACK, possibly with data) the
/// sender's then the receiver's. The sender is the local end on egress,
/// the peer on ingress.
#[inline(always)]
pub fn keys<C: Frame>(ctx: &C, s: &Seg, f: &mut SubflowState, sender: Sender) {
    // MP_CAPABLE is at most 24 bytes; `read` needs a power of two.
    let mut o = [0u8; 32];
    if !s.read(ctx, s.capable, &mut o) {
        return;
    }
    let len = s.capable.len;
    let be64 = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&o[i..i + 8]);
        u64::from_be_bytes(b)
    };
    // On ingress the local end is the receiver.
    let (first, second) = match sender {
        Sender::Local => (SF_LOCAL_KEY, SF_REMOTE_KEY),
        Sender::Peer => (SF_REMOTE_KEY, SF_LOCAL_KEY),
    };
    if len == 12 || len >= 20 {
        set_key(f, first, be64(4));
    }
    if len >= 20 {
        set_key(f, second, be64(12));
    }
}

#[inline(always)]
fn set_key(f: &mut SubflowState, which: u32, v: u64) {
    if which == SF_LOCAL_KEY {
        f.local_key = v;
    } else {
        f.remote_key = v;
    }
    set_flags(f, which);
}
