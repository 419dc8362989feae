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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceEntry {
    pub name: String,
    pub chains: Vec<u32>,
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
    /// IFACES: ifindex -> chain ids.
    pub ifaces: BTreeMap<u32, IfaceEntry>,
}
