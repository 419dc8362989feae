//! The vocabulary shared by desired, observe and plan: the entries emptcp
//! owns in its pinned maps, decoded into plain, comparable, serializable
//! values (the kernel encoding lives in `codec`).
use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Which end of the connection a selector part talks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Remote,
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEntry {
    pub action: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub arg: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEntry {
    pub name: String,
    pub steps: Vec<StepEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdEntry {
    pub remove_below: u64,
    pub recover_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PrefixEntry {
    pub chain: u32,
    pub dir: Dir,
    pub prefix: IpNet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortEntry {
    pub chain: u32,
    pub dir: Dir,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceEntry {
    pub name: String,
    pub chains: Vec<u32>,
    /// What lets the entry program decide without more lookups, derived
    /// from the chains (see `plan::iface_filter`).
    #[serde(default)]
    pub filter: IfaceFilter,
    /// `IFACE_CAPTURE`: the XDP entry captures what the peer sends on the
    /// subflows of `SUBFLOWS` (IFACES only: the interface is named by a
    /// `packet_copy` rule). Absent in older snapshots: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capture: bool,
    /// `IFACE_RAW_IP`: a raw-IP link (no Ethernet header), from the link
    /// type observed at plan time. Absent in older snapshots: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_ip: bool,
    /// `IFACE_SKB`: the policy asks for generic (skb) XDP here, where an
    /// IPv4 insert is skipped (CHECKSUM_COMPLETE). Absent: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skb: bool,
    /// `IFACE_TRACK` (EGRESS_IFACES only): an ingress chain of the
    /// interface tracks connections, so the egress hook maps the MP_JOIN
    /// SYNs and reads the ADD_ADDR echoes the local end sends. Absent:
    /// false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub track: bool,
}

/// Per-interface summary of its chains' selectors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceFilter {
    /// `SEL_*` flags of each chain, in the interface's chain order (with
    /// `SEL_*_PORTS_INLINE` when its ports are in `inline_ports`).
    pub chain_flags: Vec<u32>,
    /// Per chain: its remote then local ports when a direction has at most
    /// `INLINE_PORTS` (each half padded by repeating its first port).
    pub inline_ports: Vec<Vec<u16>>,
    /// Per chain: its remote then local IPv4 prefix as network and mask
    /// (`IfaceChains::v4`) when that direction has one or two
    /// (`SEL_*_V4_INLINE`), zeros otherwise; empty when no chain of the
    /// interface has one (so policies without prefixes read as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inline_v4: Vec<[u32; 4]>,
    /// The same for each direction's second prefix (`IfaceChains::v4_alt`;
    /// a copy of the first where there is one); empty exactly when
    /// `inline_v4` is (older snapshots have neither).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inline_v4_alt: Vec<[u32; 4]>,
    /// `SEL_*` parts every chain of the interface has.
    pub require: u32,
    /// Bits `emptcp_common::port_bucket(port)` of every remote / local
    /// port the chains list (a packet whose port bit is clear matches no
    /// chain that requires the port).
    pub remote_ports: [u64; 4],
    pub local_ports: [u64; 4],
}

/// Everything apply writes into the configuration maps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries {
    /// CHAINS: chain id -> actions.
    pub chains: BTreeMap<u32, ChainEntry>,
    /// THRESHOLDS: chain id -> thresholds.
    pub thresholds: BTreeMap<u32, ThresholdEntry>,
    /// SELECTORS: chain id -> SEL_* flags.
    pub selectors: BTreeMap<u32, u32>,
    /// SEL_V4 / SEL_V6.
    pub prefixes: BTreeSet<PrefixEntry>,
    /// PORTS.
    pub ports: BTreeSet<PortEntry>,
    /// IFACES: ifindex -> chain ids (ingress chains).
    pub ifaces: BTreeMap<u32, IfaceEntry>,
    /// EGRESS_IFACES: ifindex -> egress chain ids.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub egress_ifaces: BTreeMap<u32, IfaceEntry>,
}
