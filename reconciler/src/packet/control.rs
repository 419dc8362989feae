//! A control packet for packet copy: a duplicate ACK of an existing
//! subflow carrying an MPTCP signal (MP_PRIO or ADD_ADDR) and the
//! connection's data ACK, built from what the datapath recorded about the
//! subflow (addresses, seq/ack, window, timestamps, data ack).
//!
//! The peer accepts it as a duplicate ACK (no payload, seq = its rcv_nxt,
//! ack within its window), which MPTCP does not count as congestion, and
//! processes the options. Layout of the option block, in the order Linux
//! writes a pure ACK's options: NOP NOP TS (12, when the subflow uses
//! timestamps), DSS data ACK (8/12), the signal; NOP-padded to 4.
use std::net::IpAddr;

use super::{
    add_addr::{AddAddr, add_addr},
    forge::{ACK, AckSpec, ForgeError, build_ack},
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
        None => {}
    }
    o
}

/// Builds the complete frame (Ethernet [+ 802.1Q] / IPv4 or IPv6 / TCP with
/// checksums). Fails when the options exceed the 40-byte option space (an
/// IPv6 ADD_ADDR with an HMAC, a DSS and timestamps is 52 bytes: drop the
/// timestamps or the data ack, as Linux drops other suboptions then) or
/// when the address families differ.
pub fn build_control(flow: &Flow, c: &ControlAck) -> Result<Vec<u8>, ForgeError> {
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
        options: control_options(c),
        ttl: flow.ttl,
        vlan_tci: flow.vlan_tci,
        flags: ACK,
        payload: Vec::new(),
    })
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
