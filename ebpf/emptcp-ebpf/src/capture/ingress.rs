//! The ingress half of the capture: what the PEER sends on a captured
//! subflow. The program `ingress_capture` (entry.rs: the entry tail-calls
//! it on an interface with `IFACE_CAPTURE`) runs the entry's path, in
//! which a packet whose subflow is in `SUBFLOWS` (the egress capture
//! created it: the local end's first segment with an MPTCP option always
//! precedes the peer's third ACK or data) is described whatever the chains
//! select, then captured here, then its chain (if any) starts as usual.
//!
//! It records, and only updates existing entries:
//! * `last_rx_data_ns` on a segment with payload;
//! * the MP_CAPABLE keys (the server role: the third ACK with both keys
//!   arrives here);
//! * the peer's FIN or RST: `SF_PEER_FIN`/`SF_PEER_RST`, event `CLOSED`,
//!   entry closed (the local end often sends nothing after a fastclose
//!   RST, so the egress capture would never learn it).
//!
//! It never writes what the egress capture owns (seq/ack, window,
//! timestamps, DSS data ACK, MACs, chain, interface): a forged packet
//! carries what the local stack actually sent. Malformed packets
//! (`OPTS_BAD`) are not captured. The packet is never changed.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use emptcp_common::{OPTS_BAD, SF_PEER_FIN, SF_PEER_RST, XdpMeta};

use super::{Sender, close, closed, keys};
use crate::{
    hook::Hook,
    maps::SUBFLOWS,
    options::{FIN, RST, Seg, key},
};

/// Records what the described packet tells about its subflow, if the
/// capture has it.
#[inline(always)]
pub fn capture<H: Hook>(ctx: &H, m: *const XdpMeta) {
    let s = Seg::of(m);
    if s.opt_state == OPTS_BAD {
        return;
    }
    let key = key(m);
    let Some(f) = SUBFLOWS.get_ptr_mut(&key) else {
        return;
    };
    let f = unsafe { &mut *f };
    if closed(f) {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if s.payload() != 0 {
        f.last_rx_data_ns = now;
    }
    if s.capable.len != 0 {
        keys(ctx, &s, f, Sender::Peer);
    }
    if s.flags & (FIN | RST) != 0 {
        let how = if s.flags & RST != 0 {
            SF_PEER_RST
        } else {
            SF_PEER_FIN
        };
        close(&key, f, how, now);
    }
}
