//! Kernel-side types and sizes the programs and the map definitions share.
//! Depends on nothing of this crate (only on `emptcp_common`), so the map
//! definitions (`maps.rs`) never reach up into the programs that use them.
use emptcp_common::XdpMeta;

/// Largest header block an insert moves (the size of a `SCRATCH` slot): 22
/// (Ethernet + 2 tags) + 60 (IPv4 with options) + 20 + 36 (TCP options that
/// leave room for 4 bytes) = 138.
pub const HDR_MAX: u32 = 144;

/// Value of `EGRESS_META`: the description and the serial of the packet
/// it describes (also in the skb's `cb[0]`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EgressMeta {
    pub serial: u32,
    pub _pad: u32,
    pub meta: XdpMeta,
}
