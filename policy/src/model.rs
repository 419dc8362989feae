//! The policy file format (version 1), which is also the validated model
//! that `load_*` return.
//!
//! Every type rejects unknown fields. The doc comments here are the
//! descriptions of the published JSON Schema (`emptcp schema`), which
//! operators see in their editor: write them for operators.
//!
//! Externally tagged enums (`decider`, `actions`, `when`, `send`) are read
//! and written as YAML single-key maps (`set_backup: {backup: true}`) or
//! plain strings for unit variants (`record_flow`) through yaml_serde's
//! `singleton_map` adapters: yaml_serde's own default for enums is YAML tags
//! (`!set_backup`), which no operator would guess.

use super::strict;
use super::units::{ByteSize, Duration, Percent, PortRange};
use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Version of the policy format this build understands.
pub const POLICY_VERSION: u32 = 1;
/// Fewest flow-table entries `settings.flow_capacity` accepts.
pub const MIN_FLOW_CAPACITY: u32 = 1024;
/// Most flow-table entries `settings.flow_capacity` accepts (2^24).
pub const MAX_FLOW_CAPACITY: u32 = 1 << 24;

/// Schema pattern of chain and packet_copy names (checked by validation
/// too, with a better message: `validate::names`).
const CHAIN_NAME_PATTERN: &str = r"^[a-z0-9][a-z0-9_-]{0,46}$";
/// Schema pattern of interface names (length and "."/".." are checked
/// separately).
const IFNAME_PATTERN: &str = r"^[^/:\s]+$";

/// An emptcp policy: which interfaces carry eBPF chains that steer
/// Multipath TCP, what each chain matches and does, and when user space
/// forges a packet for a flow. See docs/policy.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "emptcp policy (version 1)")]
pub struct Policy {
    /// Version of the policy format; must be 1. Required in every file,
    /// including every file of a drop-in directory.
    #[schemars(extend("const" = 1))]
    pub version: u32,
    /// Node-wide settings. Optional; in a drop-in directory at most one file
    /// may set them.
    #[serde(default)]
    pub settings: Settings,
    /// Interfaces to attach to, each with the chains evaluated for its
    /// packets. Names are unique across all files.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Chains: a packet match and the actions run on matching packets.
    /// Names are unique across all files; at most 256 chains.
    #[serde(default)]
    pub chains: Vec<Chain>,
    /// Packet-copy rules: user space forges a pure ACK carrying an MPTCP
    /// option (MP_PRIO or ADD_ADDR) for flows of a chain when a trigger
    /// fires, and sends it on the interface through AF_XDP.
    #[serde(default)]
    pub packet_copy: Vec<PacketCopy>,
}

/// Node-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Capacity of the flow table (an LRU map of tracked MPTCP flows), from
    /// 1024 to 16777216; default 1000000. Changing it changes the pinned
    /// map's definition: the plan shows a migration of the tracked flows.
    #[serde(default = "default_flow_capacity")]
    #[schemars(range(min = 1024, max = 16777216))]
    pub flow_capacity: u32,
}

fn default_flow_capacity() -> u32 {
    emptcp_common::DEFAULT_FLOW_CAPACITY
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            flow_capacity: default_flow_capacity(),
        }
    }
}

/// An interface emptcp attaches its XDP entry program to (and, for egress
/// chains, its TC egress program).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Linux interface name: 1 to 15 bytes, no '/', ':' or whitespace, not
    /// "." or "..". It need not exist when the policy is validated: a
    /// missing interface is reported by `plan`.
    #[serde(deserialize_with = "strict::name")]
    #[schemars(length(min = 1, max = 15), regex(pattern = IFNAME_PATTERN))]
    pub name: String,
    /// How the XDP program is attached: auto (default), native or skb.
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// Where the interface's ingress chains run: xdp (default; before the
    /// stack, once per received frame) or tc (TC ingress, after GRO: once
    /// per merged burst of a bulk transfer).
    #[serde(default)]
    pub ingress_hook: IngressHook,
    /// Names of the chains evaluated for this interface's packets, in order:
    /// the first chain whose `match` matches a packet runs its actions. 1 to
    /// 8 chains, each listed once.
    #[serde(deserialize_with = "strict::names")]
    #[schemars(length(min = 1, max = 8), inner(regex(pattern = CHAIN_NAME_PATTERN)))]
    pub chains: Vec<String>,
}

/// The hook an interface's ingress chains run at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IngressHook {
    /// XDP: before the kernel builds a socket buffer, once per received
    /// frame (so before GRO merges the segments of a transfer).
    #[default]
    Xdp,
    /// TC ingress (a TCX link, Linux 6.6+): after GRO, once per socket
    /// buffer, so once per merged burst of a bulk transfer. Packet copy's
    /// ingress capture runs there too.
    Tc,
}

impl IngressHook {
    /// The policy spelling (`xdp`, `tc`).
    pub const fn as_str(self) -> &'static str {
        match self {
            IngressHook::Xdp => "xdp",
            IngressHook::Tc => "tc",
        }
    }
}

/// XDP attach mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Native (driver) mode when the driver supports it, generic (skb) mode
    /// otherwise.
    #[default]
    Auto,
    /// Native (driver) mode only: attaching fails when the driver has no
    /// XDP support. Fastest.
    Native,
    /// Generic mode, after the kernel has built the socket buffer: works on
    /// every interface, slower.
    Skb,
}

impl XdpMode {
    /// The policy spelling (`auto`, `native`, `skb`).
    pub const fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        }
    }
}

/// A chain: which packets it applies to and what it does with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// Chain name, referred to by `interfaces[].chains` and
    /// `packet_copy[].chain`: 1 to 47 characters of a-z, 0-9, '_' and '-',
    /// starting with a letter or digit.
    #[serde(deserialize_with = "strict::name")]
    #[schemars(regex(pattern = CHAIN_NAME_PATTERN))]
    pub name: String,
    /// Where the chain runs: ingress (default; XDP, packets received on the
    /// interface) or egress (TC, packets sent from it).
    #[serde(default)]
    pub hook: Hook,
    /// Which packets the chain applies to. Omitted: every TCP packet.
    #[serde(default)]
    pub r#match: Match,
    /// Per-flow thresholds, in bytes of MPTCP data acknowledged (DSS data
    /// ack). Required by strip_add_addr and recover_add_addr, and only
    /// allowed with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    /// Actions run in order on each matching packet: 1 to 8, each at most
    /// once. Each action is a plain name (`record_flow`) or a single-key map
    /// with its arguments (`set_backup: {backup: true}`).
    #[serde(with = "yaml_serde::with::singleton_map_recursive")]
    #[schemars(with = "Vec<Action>", length(min = 1, max = 8))]
    pub actions: Vec<Action>,
}

/// Where a chain runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// XDP, on packets received on the interface (the client's receive
    /// path). All actions are allowed.
    #[default]
    Ingress,
    /// TC egress, on packets sent from the interface. Only set_backup,
    /// set_window and count are allowed.
    Egress,
}

impl Hook {
    /// The policy spelling (`ingress`, `egress`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

/// Packet selector. Every field that is given must match (AND); within a
/// list, any entry may match (OR). An omitted or empty list matches
/// everything. "Remote" is the peer: the source of a received packet, the
/// destination of a sent one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Prefixes of the peer's address, IPv4 or IPv6, without host bits set
    /// ("203.0.113.0/24", "2001:db8::/32"). Quote IPv6 prefixes.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "strict::prefixes"
    )]
    #[schemars(with = "Vec<strict::IpPrefixSchema>")]
    pub remote: Vec<IpNet>,
    /// Prefixes of this node's address.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "strict::prefixes"
    )]
    #[schemars(with = "Vec<strict::IpPrefixSchema>")]
    pub local: Vec<IpNet>,
    /// The peer's TCP ports: ports (443) or ranges ("8000-8100").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ports: Vec<PortRange>,
    /// This node's TCP ports. remote_ports and local_ports together hold at
    /// most 1024 ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_ports: Vec<PortRange>,
}

impl Match {
    /// True when the selector matches every TCP packet.
    pub fn is_empty(&self) -> bool {
        self.remote.is_empty()
            && self.local.is_empty()
            && self.remote_ports.is_empty()
            && self.local_ports.is_empty()
    }
}

/// Per-flow thresholds of strip_add_addr / recover_add_addr, in bytes of
/// MPTCP data acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// strip_add_addr removes ADD_ADDR options from a flow (and stores them)
    /// while the flow has acknowledged fewer bytes than this, keeping short
    /// flows on one path.
    pub remove_below: ByteSize,
    /// recover_add_addr re-inserts the stored ADD_ADDR options once the flow
    /// has acknowledged this many bytes. At least remove_below.
    pub recover_at: ByteSize,
    /// What decides the threshold in force: `constant` (default) or
    /// `cpu_usage: {...}`.
    #[serde(default, with = "yaml_serde::with::singleton_map")]
    #[schemars(with = "Decider")]
    pub decider: Decider,
}

/// Which recovery threshold is in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Decider {
    /// Always recover at `recover_at`.
    #[default]
    Constant,
    /// Recover at `recover_at` while the node's CPU is not busy; while it is
    /// busy, recover at `busy_recover_at` instead, keeping flows on one path
    /// longer (fewer subflows, less CPU per byte).
    CpuUsage {
        /// How often CPU usage is sampled: 100ms to 1h.
        interval: Duration,
        /// The CPU counts as busy when its usage over the last interval is
        /// above this percentage.
        busy_above: Percent,
        /// Recovery threshold while busy; at least `recover_at`.
        busy_recover_at: ByteSize,
    },
}

/// One step of a chain. Each action is its own eBPF program; the chain
/// tail-calls them in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Track the MPTCP connection: created on a SYN-ACK carrying
    /// MP_CAPABLE, joined subflows mapped to it by their token, ended with
    /// its last subflow; counts its bytes. Ingress only. Must come before
    /// strip_add_addr, recover_add_addr and (on ingress) set_window.
    RecordFlow,
    /// Remove ADD_ADDR options from the flow's packets while it is below
    /// `thresholds.remove_below`, storing them for recovery. Ingress only;
    /// needs `thresholds` and record_flow earlier in the chain.
    StripAddAddr,
    /// Re-insert the stored ADD_ADDR options once the flow reaches
    /// `thresholds.recover_at`. Ingress only; needs `thresholds`, and
    /// record_flow and strip_add_addr earlier in the chain.
    RecoverAddAddr,
    /// Insert or rewrite MP_PRIO to set or clear the backup flag of the
    /// subflow.
    SetBackup {
        /// The B flag: true makes the subflow a backup path.
        backup: bool,
    },
    /// Rewrite the TCP receive window. On ingress, needs record_flow
    /// earlier in the chain (the window scale of the handshake).
    SetWindow {
        /// Window in bytes: a size (64KiB) or a plain integer, 16384
        /// (16KiB) to 1073725440 (65535 << 14).
        #[serde(
            deserialize_with = "strict::window_bytes",
            serialize_with = "strict::serialize_window_bytes"
        )]
        #[schemars(schema_with = "strict::window_bytes_schema")]
        bytes: u32,
    },
    /// Count the chain's packets and bytes (per-chain counters).
    Count,
    /// Drop the packet. Ingress only; must be the last action.
    Drop,
}

impl Action {
    /// The kernel program that implements the action.
    pub const fn kind(&self) -> emptcp_common::Action {
        match self {
            Action::RecordFlow => emptcp_common::Action::RecordFlow,
            Action::StripAddAddr => emptcp_common::Action::StripAddAddr,
            Action::RecoverAddAddr => emptcp_common::Action::RecoverAddAddr,
            Action::SetBackup { .. } => emptcp_common::Action::SetBackup,
            Action::SetWindow { .. } => emptcp_common::Action::SetWindow,
            Action::Count => emptcp_common::Action::Count,
            Action::Drop => emptcp_common::Action::Drop,
        }
    }

    /// The policy spelling of the action (`record_flow`, `set_backup`, ...).
    pub const fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Whether the action only exists on the ingress (XDP) hook.
    pub const fn ingress_only(&self) -> bool {
        matches!(
            self,
            Action::RecordFlow | Action::StripAddAddr | Action::RecoverAddAddr | Action::Drop
        )
    }
}

/// A packet-copy rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PacketCopy {
    /// Rule name, unique; same syntax as chain names.
    #[serde(deserialize_with = "strict::name")]
    #[schemars(regex(pattern = CHAIN_NAME_PATTERN))]
    pub name: String,
    /// Interface the forged packet is sent on; must be in `interfaces`.
    #[serde(deserialize_with = "strict::name")]
    #[schemars(length(min = 1, max = 15), regex(pattern = IFNAME_PATTERN))]
    pub interface: String,
    /// Chain whose flows the rule watches; must be listed on `interface`.
    #[serde(deserialize_with = "strict::name")]
    #[schemars(regex(pattern = CHAIN_NAME_PATTERN))]
    pub chain: String,
    /// When to send: `subflow_idle: <duration>`, `other_subflows_idle:
    /// <duration>` or `flow_bytes_at: <size>`.
    #[serde(with = "yaml_serde::with::singleton_map")]
    #[schemars(with = "Trigger")]
    pub when: Trigger,
    /// What to send: `mp_prio: {backup: ...}` or `add_addr: {...}`.
    #[serde(with = "yaml_serde::with::singleton_map")]
    #[schemars(with = "Send")]
    pub send: Send,
}

/// When a packet-copy rule fires for a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A subflow has sent nothing for this long (1ms to 1h), e.g. a backup
    /// subflow that carries no data.
    SubflowIdle(Duration),
    /// The flow has acknowledged this many bytes (at least 1 byte).
    FlowBytesAt(ByteSize),
    /// Every other subflow of the subflow's connection has carried no data
    /// for this long (1ms to 1h): the path that carries the connection went
    /// quiet or failed, e.g. to make a backup subflow regular then.
    OtherSubflowsIdle(Duration),
}

/// The MPTCP option the forged pure ACK carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Send {
    /// MP_PRIO, setting or clearing the backup flag of the subflow.
    MpPrio {
        /// The B flag: true makes the subflow a backup path.
        backup: bool,
    },
    /// ADD_ADDR, announcing an address to the peer.
    AddAddr {
        /// The announced IPv4 or IPv6 address.
        address: IpAddr,
        /// Address id, 1 to 255 (0 is the initial subflow's address).
        #[schemars(range(min = 1, max = 255))]
        id: u8,
        /// Port to announce with the address, 1 to 65535. Omitted: none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = 65535))]
        port: Option<u16>,
    },
}

impl Policy {
    /// The chain named `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The interface named `name`.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}
