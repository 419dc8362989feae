//! The one builder of control frames: a duplicate ACK of an existing
//! subflow carrying an MPTCP signal (MP_PRIO, ADD_ADDR, or an option the
//! datapath stored as received) and the connection's data ACK, built from
//! what the datapath recorded about the subflow (addresses, seq/ack,
//! window, timestamps, data ack). Packet copy sends it from the local end
//! to the peer; the recovery agent builds it from the peer to the local
//! stack (a stored ADD_ADDR delivered as if the server had sent it).
//!
//! The receiver accepts it as a duplicate ACK (no payload, seq = its
//! rcv_nxt, ack within its window), which MPTCP does not count as
//! congestion, and processes the options. Layout of the option block, in
//! the order Linux writes a pure ACK's options: NOP NOP TS (12, when the
//! subflow uses timestamps), DSS data ACK (8/12), the signal; NOP-padded
//! to 4. What does not fit the 40 option bytes is left out ([`fit`]).
use std::net::IpAddr;

use super::{
    add_addr::{AddAddr, add_addr},
    frame::{ACK, AckSpec, ForgeError, build_ack},
    mptcp::{DataAck, dss_data_ack, mp_prio},
};

/// The subflow, as on the wire in the direction the packet travels (the
/// forged packet's sender is `src`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// 802.1Q tag control, when the subflow's frames carry one.
    pub vlan_tci: Option<u16>,
    /// The interface carries raw IP: no link-layer header (`AckSpec::raw_ip`).
    pub raw_ip: bool,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
}

/// TCP timestamps (RFC 7323). Echo the subflow's newest values: the peer
/// PAWS-drops a tsval older than its ts_recent, and a tsval ahead of the
/// sender's clock makes it drop the sender's real segments afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamps {
    pub tsval: u32,
    pub tsecr: u32,
}

/// The MPTCP signal the packet exists for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// MP_PRIO: mark the subflow (or the address id's subflows) backup or not.
    MpPrio { backup: bool, addr_id: Option<u8> },
    /// ADD_ADDR: announce an address (HMAC from the connection's keys) or
    /// echo one.
    AddAddr(AddAddr),
    /// An option as the datapath stored it from a received segment (a
    /// server's ADD_ADDR, kind 30 first), carried byte for byte.
    Stored(StoredOption),
}

/// Raw TCP option bytes, at most the 40-byte option space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredOption {
    bytes: [u8; 40],
    len: u8,
}

impl StoredOption {
    /// `None` when `bytes` exceed the 40-byte option space.
    pub fn new(bytes: &[u8]) -> Option<StoredOption> {
        let mut s = StoredOption {
            bytes: [0; 40],
            len: u8::try_from(bytes.len()).ok().filter(|&n| n <= 40)?,
        };
        s.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(s)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The TCP/MPTCP content of the duplicate ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlAck {
    /// The peer's rcv_nxt: the subflow's newest seq + payload length sent.
    /// An older seq is dropped silently by Linux.
    pub seq: u32,
    /// The subflow's current ack (the peer's snd_una..snd_nxt).
    pub ack: u32,
    pub window: u16,
    pub timestamps: Option<Timestamps>,
    /// The connection's current data ACK, carried in a DSS option.
    pub data_ack: Option<DataAck>,
    pub signal: Option<Signal>,
}

/// The option block of `c`, unpadded (build_ack pads it).
pub fn control_options(c: &ControlAck) -> Vec<u8> {
    let mut o = Vec::with_capacity(40);
    if let Some(ts) = c.timestamps {
        o.extend_from_slice(&[1, 1, 8, 10]); // NOP NOP kind=8 len=10
        o.extend_from_slice(&ts.tsval.to_be_bytes());
        o.extend_from_slice(&ts.tsecr.to_be_bytes());
    }
    if let Some(a) = c.data_ack {
        o.extend_from_slice(&dss_data_ack(a));
    }
    match c.signal {
        Some(Signal::MpPrio { backup, addr_id }) => o.extend_from_slice(&mp_prio(backup, addr_id)),
        Some(Signal::AddAddr(a)) => o.extend_from_slice(&add_addr(&a)),
        Some(Signal::Stored(s)) => o.extend_from_slice(s.as_bytes()),
        None => {}
    }
    o
}

/// Whether the option block of `c`, NOP-padded, fits the 40 bytes.
fn fits(c: &ControlAck) -> bool {
    control_options(c).len().next_multiple_of(4) <= 40
}

/// `c` with what does not fit the 40 option bytes left out: first the DSS
/// (Linux leaves it off a pure ACK that carries ADD_ADDR), then the
/// timestamps. The signal always stays: alone it is at most 40 bytes (an
/// IPv6 ADD_ADDR with port and HMAC is 30, a stored option at most 40).
pub fn fit(c: &ControlAck) -> ControlAck {
    let mut c = *c;
    if !fits(&c) {
        c.data_ack = None;
    }
    if !fits(&c) {
        c.timestamps = None;
    }
    c
}

/// Builds the complete frame (Ethernet [+ 802.1Q] / IPv4 or IPv6 / TCP with
/// checksums; no Ethernet on a raw-IP flow) of `fit(c)`. Fails only when the address families differ.
pub fn build_control(flow: &Flow, c: &ControlAck) -> Result<Vec<u8>, ForgeError> {
    let c = fit(c);
    build_ack(&AckSpec {
        src_mac: flow.src_mac,
        dst_mac: flow.dst_mac,
        src: flow.src,
        dst: flow.dst,
        sport: flow.sport,
        dport: flow.dport,
        seq: c.seq,
        ack: c.ack,
        window: c.window,
        options: control_options(&c),
        ttl: flow.ttl,
        vlan_tci: flow.vlan_tci,
        raw_ip: flow.raw_ip,
        flags: ACK,
        payload: Vec::new(),
    })
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
