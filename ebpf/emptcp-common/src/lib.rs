//! Types shared by the emptcp eBPF programs (kernel side) and the reconciler
//! (user side). Every type here is `#[repr(C)]`, has no implicit padding, and
//! is a key or value of a pinned map, so its layout is an ABI: changing it
//! changes the map definition (its sizes, or the field layout listed in
//! [`layouts`], whose fingerprint is recorded with the pinned map), which
//! the planner detects and migrates or replaces.
//!
//! With the `user` feature the types implement `aya::Pod`.
#![no_std]

pub mod layouts;

/// Version of the pinned map layout. Bump when a key/value layout changes.
pub const LAYOUT_VERSION: u32 = 8;

/// Chains an interface can list (evaluated in order, first match wins).
pub const MAX_CHAINS_PER_IFACE: usize = 8;
/// Actions in one chain. Each action is one tail call; the kernel allows 33
/// tail calls per packet, so this leaves a wide margin.
pub const MAX_STEPS: usize = 8;
/// Chain ids live in `0..MAX_CHAINS`.
pub const MAX_CHAINS: u32 = 256;
/// Interfaces that can carry a chain list.
pub const MAX_IFACES: u32 = 256;
/// Slots of the tail-call program array (`slot == Action as u32`).
pub const PROG_SLOTS: u32 = 16;
/// Longest chain name stored in the chain map (bytes, NUL padded).
pub const CHAIN_NAME_LEN: usize = 48;
/// Interface names are at most IFNAMSIZ-1 bytes.
pub const IFNAME_LEN: usize = 16;
/// Default flow table capacity (the policy can change it).
pub const DEFAULT_FLOW_CAPACITY: u32 = 1_000_000;

/// Magic value at the start of the XDP metadata written by the entry program,
/// so an action program never trusts metadata it did not get from us.
pub const META_MAGIC: u32 = 0x4d50_5443; // "MPTC"

/// The action programs. The discriminant is the tail-call slot in `PROGS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Count = 1,
    Drop = 2,
    RecordFlow = 3,
    StripAddAddr = 4,
    RecoverAddAddr = 5,
    SetBackup = 6,
    SetWindow = 7,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Count,
        Action::Drop,
        Action::RecordFlow,
        Action::StripAddAddr,
        Action::RecoverAddAddr,
        Action::SetBackup,
        Action::SetWindow,
    ];

    pub const fn from_u32(v: u32) -> Option<Action> {
        match v {
            1 => Some(Action::Count),
            2 => Some(Action::Drop),
            3 => Some(Action::RecordFlow),
            4 => Some(Action::StripAddAddr),
            5 => Some(Action::RecoverAddAddr),
            6 => Some(Action::SetBackup),
            7 => Some(Action::SetWindow),
            _ => None,
        }
    }

    /// Policy name of the action; also the name of its eBPF program.
    pub const fn name(self) -> &'static str {
        match self {
            Action::Count => "count",
            Action::Drop => "drop",
            Action::RecordFlow => "record_flow",
            Action::StripAddAddr => "strip_add_addr",
            Action::RecoverAddAddr => "recover_add_addr",
            Action::SetBackup => "set_backup",
            Action::SetWindow => "set_window",
        }
    }
}

/// One step of a chain: which action, and its argument (e.g. the backup flag
/// of `set_backup`, the window of `set_window`; 0 when unused).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainStep {
    pub action: u32,
    pub arg: u32,
}

/// Value of `CHAINS[chain_id]`: the ordered action list of one chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainDef {
    pub len: u32,
    pub _pad: u32,
    pub steps: [ChainStep; MAX_STEPS],
    /// The policy name, so observe can map ids back to names.
    pub name: [u8; CHAIN_NAME_LEN],
}

/// Value of `THRESHOLDS[chain_id]`, in bytes of MPTCP data acked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Thresholds {
    pub remove_below: u64,
    pub recover_at: u64,
}

/// `Selector::flags` bits: which parts of `match` the chain has. A part that
/// is absent matches everything; a present part must match (AND).
pub const SEL_REMOTE: u32 = 1 << 0;
pub const SEL_LOCAL: u32 = 1 << 1;
pub const SEL_REMOTE_PORTS: u32 = 1 << 2;
pub const SEL_LOCAL_PORTS: u32 = 1 << 3;
/// In `IfaceChains::chain_flags` only: the chain's remote / local ports are
/// all in `IfaceChains::ports` (at most `INLINE_PORTS`), so the entry
/// program compares them there instead of looking them up in `PORTS`.
pub const SEL_REMOTE_PORTS_INLINE: u32 = 1 << 4;
pub const SEL_LOCAL_PORTS_INLINE: u32 = 1 << 5;
/// Ports per direction a chain can keep inline.
pub const INLINE_PORTS: usize = 4;
/// In `IfaceChains::chain_flags` only: the chain's remote / local IPv4
/// prefixes are one or two, kept in `IfaceChains::v4` and `v4_alt`, so the
/// entry program compares an IPv4 address with them (mask and compare)
/// instead of looking it up in `SEL_V4` (an LPM walk: 18-29 ns of a
/// quickstart chain's ~200 per segment on veth, measured with
/// `kernel.bpf_stats_enabled`). Two covers the common two-path policy
/// (one prefix per server path). IPv6 addresses are still looked up in
/// `SEL_V6`.
pub const SEL_REMOTE_V4_INLINE: u32 = 1 << 6;
pub const SEL_LOCAL_V4_INLINE: u32 = 1 << 7;

/// Value of `SELECTORS[chain_id]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub flags: u32,
    pub _pad: u32,
}

/// Direction byte of prefix and port keys.
pub const DIR_REMOTE: u8 = 0;
pub const DIR_LOCAL: u8 = 1;

/// Bits of `LpmV4`/`LpmV6` before the address: dir (8) + chain id (32).
pub const LPM_FIXED_BITS: u32 = 40;

/// LPM trie key data for IPv4 prefixes. The direction and the chain id come
/// first and are always matched in full, so one trie serves every chain:
/// `prefix_len = LPM_FIXED_BITS + prefix length`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LpmV4 {
    pub dir: u8,
    pub chain: [u8; 4],
    pub addr: [u8; 4],
    pub _pad: [u8; 3],
}

/// LPM trie key data for IPv6 prefixes (see [`LpmV4`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LpmV6 {
    pub dir: u8,
    pub chain: [u8; 4],
    pub addr: [u8; 16],
    pub _pad: [u8; 3],
}

/// Key of `PORTS`: the chain accepts `port` (host order) in direction `dir`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortKey {
    pub chain: u32,
    pub port: u16,
    pub dir: u8,
    pub _pad: u8,
}

/// Value of `IFACES[ifindex]` (and of its cache `IFACE_SLOTS[ifindex %
/// IFACE_SLOTS]`): the chains of an interface in policy order, with what
/// the entry program needs to reject a packet no chain can match without
/// another lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceChains {
    pub n_chains: u32,
    /// The interface (the slot cache is direct-mapped: a slot holding
    /// another interface is a miss).
    pub ifindex: u32,
    /// `SEL_*` parts that every chain of the interface has: a packet that
    /// fails one of them (by the port filters below) matches no chain.
    /// 0 with `IFACE_CAPTURE` (the entry tests the flag after this
    /// prefilter, which must then let every packet through).
    pub require: u32,
    /// `IFACE_*` bits.
    pub flags: u32,
    pub chains: [u32; MAX_CHAINS_PER_IFACE],
    /// `SEL_*` flags of each chain.
    pub chain_flags: [u32; MAX_CHAINS_PER_IFACE],
    /// Inline port sets of each chain (with `SEL_*_PORTS_INLINE`): remote
    /// ports then local ports, each padded by repeating its first port.
    pub ports: [[u16; 2 * INLINE_PORTS]; MAX_CHAINS_PER_IFACE],
    /// Inline IPv4 prefixes of each chain (with `SEL_*_V4_INLINE`, for a
    /// direction with one or two): the first one's remote network, remote
    /// mask, local network, local mask, each the address bytes in network
    /// order read as a native-endian `u32` (so `addr & mask == network`
    /// compares the bytes as they are in the packet); zeros where not
    /// inline.
    pub v4: [[u32; 4]; MAX_CHAINS_PER_IFACE],
    /// The second inline prefix of each direction, laid out as `v4`; a
    /// copy of the first where the direction has one (the entry tests
    /// both, no flag to branch on).
    pub v4_alt: [[u32; 4]; MAX_CHAINS_PER_IFACE],
    /// Bloom-style filters of the chains' remote / local ports: bit
    /// `port_bucket(port)` is set for every listed port.
    pub remote_ports: [u64; 4],
    pub local_ports: [u64; 4],
    pub name: [u8; IFNAME_LEN],
}

impl IfaceChains {
    /// An unused slot of `IFACE_SLOTS`.
    pub const EMPTY: IfaceChains = IfaceChains {
        n_chains: 0,
        ifindex: 0,
        require: 0,
        flags: 0,
        chains: [0; MAX_CHAINS_PER_IFACE],
        chain_flags: [0; MAX_CHAINS_PER_IFACE],
        ports: [[0; 2 * INLINE_PORTS]; MAX_CHAINS_PER_IFACE],
        v4: [[0; 4]; MAX_CHAINS_PER_IFACE],
        v4_alt: [[0; 4]; MAX_CHAINS_PER_IFACE],
        remote_ports: [0; 4],
        local_ports: [0; 4],
        name: [0; IFNAME_LEN],
    };

    /// The entry program has work on this interface: chains to select
    /// from, or subflows to capture. A slot of `IFACE_SLOTS` that is not in
    /// use is free for any interface.
    #[inline(always)]
    pub const fn in_use(&self) -> bool {
        self.n_chains != 0 || self.flags & IFACE_CAPTURE != 0
    }
}

/// `IfaceChains::flags`: capture what the peer sends on the subflows the
/// egress capture knows (`SUBFLOWS`), on interfaces named by a
/// `packet_copy` rule: the XDP entry hands every TCP packet of such an
/// interface to `ingress_capture`, which looks its subflow up before any
/// chain selection, captures, then starts the chain. The entry tests the
/// flag after its port prefilter (`require` is 0 with the flag), so on
/// other interfaces a packet of no chain never reaches the test.
pub const IFACE_CAPTURE: u32 = 1 << 0;

/// `IfaceChains::flags`: a raw-IP link (tun, WireGuard, wwan raw-ip,
/// ipip/gre/sit tunnels: no Ethernet header). The entry programs (XDP and
/// TC egress) parse IPv4/IPv6 from byte 0 of such a packet, by its
/// version nibble; without the flag the packet starts with Ethernet
/// (+ up to two VLAN tags).
pub const IFACE_RAW_IP: u32 = 1 << 1;

/// `IfaceChains::flags`: the XDP program runs in generic (skb) mode here.
/// An option insert into IPv4 would leave a `CHECKSUM_COMPLETE` skb's
/// `csum` off by the inserted length (the pseudo-header grows, the IPv4
/// header checksum compensates its own change), which the stack reports
/// as "hw csum failure": inserts into IPv4 are skipped on such an
/// interface (IPv6's payload length is in the covered header and cancels
/// the change, docs/datapath.md).
pub const IFACE_SKB: u32 = 1 << 2;

/// `IfaceChains::flags` of an `EGRESS_IFACES` entry: the interface carries
/// subflows of connections an ingress `record_flow` tracks, so the TC
/// egress entry runs here even without an egress chain: it maps every
/// MP_JOIN SYN the local end sends to its connection by the token
/// (`JOINS`), and, while delivered addresses await confirmation, reads
/// the stack's ADD_ADDR echoes (`egress/track.rs`).
pub const IFACE_TRACK: u32 = 1 << 3;

/// Slots of the `IFACE_SLOTS` direct-mapped cache of `IFACES`.
pub const IFACE_SLOTS: u32 = 1024;

/// Bucket of a port in `IfaceChains::remote_ports`/`local_ports`: both bytes
/// mixed, so well-known ports and their +N variants (443, 8443) differ.
#[inline(always)]
pub const fn port_bucket(port: u16) -> u32 {
    ((port ^ (port >> 8) ^ (port >> 3)) & 0xff) as u32
}

/// Per-chain traffic counters (`CHAIN_STATS[chain_id]`, per CPU), written by
/// the `count` action. Owned by the datapath: apply never writes them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// Value of `META[0]`: what apply last converged to. Written as the last step
/// of an apply, so a crash before it makes the next plan redo the upgrade.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub layout_version: u32,
    /// Inode number of the network namespace whose interfaces the root's
    /// datapath serves (`/proc/thread-self/ns/net` of the apply that wrote
    /// it); 0 when not recorded. Its maps are keyed by ifindex and
    /// 4-tuple, which another namespace reuses: one root, one namespace.
    pub netns: u32,
    /// sha256 of the eBPF object that is loaded.
    pub object_sha256: [u8; 32],
}

/// `XdpMeta::opt_state`: the options are well formed and end at the data
/// offset.
pub const OPTS_OK: u8 = 0;
/// An EOL ends the option list early (anything appended after it would be
/// ignored by the receiver, so nothing is appended).
pub const OPTS_EOL: u8 = 1;
/// An option has an impossible length or runs past the header, or the IP
/// length disagrees with the frame: every action passes the packet untouched.
pub const OPTS_BAD: u8 = 2;

/// Where one option sits in the TCP options (`off` from the first option
/// byte); `len == 0` means absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptRef {
    pub off: u8,
    pub len: u8,
}

/// `XdpMeta::flow`: no `record_flow` ran before this step.
pub const META_FLOW_UNKNOWN: u8 = 0;
/// `record_flow` found no tracked flow for the packet.
pub const META_FLOW_UNTRACKED: u8 = 1;
/// `record_flow` found (or created) the flow: `flow_bytes`/`flow_due` hold.
pub const META_FLOW_TRACKED: u8 = 2;

/// The packet's description, written by the entry program into its CPU's
/// slot of `XDP_DESC` (on egress `EGRESS_META`) and read through the tail
/// calls. It is the packet's
/// parse, done once: the chain's steps, the flow key, the header fields and
/// where each option the actions care about sits, so an action reads only
/// the bytes it needs and looks nothing up but its flow. An action that
/// changes the packet or learns about the flow updates it. 152 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpMeta {
    pub magic: u32,
    pub chain: u32,
    /// Size of the flow after `record_flow` (with `flow == TRACKED`).
    pub flow_bytes: u64,
    /// The flow key of the packet (local = destination on ingress).
    pub key: FlowKey,
    /// The chain's step arguments (`ChainStep::arg`), copied at entry.
    pub args: [u32; MAX_STEPS],
    /// The chain's step actions (`Action as u8`), copied at entry.
    pub steps: [u8; MAX_STEPS],
    /// TCP sequence and acknowledgment numbers (host order).
    pub seq: u32,
    pub ack: u32,
    /// TCP timestamps (valid when `ts.len != 0`).
    pub tsval: u32,
    pub tsecr: u32,
    /// Offset of the L3 header from the start of the packet.
    pub l3_off: u16,
    /// Offset of the TCP header from the start of the packet.
    pub l4_off: u16,
    /// TCP header + payload, from the IP length fields.
    pub seg_len: u16,
    /// Raw TCP window field.
    pub window: u16,
    /// Index of the step being executed, and the number of steps.
    pub pos: u8,
    pub n_steps: u8,
    /// 4 or 6.
    pub family: u8,
    /// Byte 15 of the object's build id (see the entry program).
    pub build: u8,
    pub tcp_flags: u8,
    /// Bytes of TCP options (data offset * 4 - 20), at most 40.
    pub opt_len: u8,
    /// `OPTS_*`.
    pub opt_state: u8,
    /// MPTCP options in the list.
    pub n_mptcp: u8,
    /// First DSS.
    pub dss: OptRef,
    /// Timestamps (kind 8, length 10).
    pub ts: OptRef,
    /// First non-echo ADD_ADDR with a valid length.
    pub add_addr: OptRef,
    /// MP_PRIO (length 3 or 4).
    pub prio: OptRef,
    /// MP_CAPABLE.
    pub capable: OptRef,
    /// Window scale (kind 3, length 3).
    pub wscale: OptRef,
    /// `META_FLOW_*`: what `record_flow` found.
    pub flow: u8,
    /// The flow has a stored ADD_ADDR not re-inserted yet.
    pub flow_due: u8,
    /// MP_JOIN (any length): the segment belongs to an additional subflow.
    pub join: OptRef,
    /// First REMOVE_ADDR (the peer withdraws address ids).
    pub remove_addr: OptRef,
    /// MP_FASTCLOSE (the peer resets the whole connection).
    pub fastclose: OptRef,
    /// First ADD_ADDR echo (E bit: the sender acknowledges an address).
    pub echo: OptRef,
    pub _pad_end: [u8; 2],
}

/// Outcomes counted per program in `STATS` (per CPU).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The program (or its chain step) got a packet. Never counted by the
    /// programs: every packet ends in exactly one of the other outcomes,
    /// and user space reports their sum (`emptcp status`).
    Seen = 0,
    /// It changed or acted on the packet (counted, dropped, rewritten).
    Applied = 1,
    /// It let the packet through untouched (not for it, malformed, ...).
    Passed = 2,
    /// Something failed (missing map entry, failed tail call).
    Error = 3,
}
pub const OUTCOMES: u32 = 4;
pub const OUTCOME_NAMES: [&str; OUTCOMES as usize] = ["seen", "applied", "passed", "error"];

/// Row of `STATS` for the entry program (action rows use `Action as u32`).
pub const STATS_ROW_ENTRY: u32 = 0;
/// Row of `STATS` for the TC egress entry program; the egress variant of
/// action `a` counts in row `STATS_ROW_EGRESS + a as u32` (8..16: the
/// actions number 1..=7, so ingress and egress rows never overlap).
pub const STATS_ROW_EGRESS: u32 = 8;
/// Entry-specific counters live in row `STATS_ROW_ENTRY` of the outcome
/// table plus these extra rows, one column each.
pub const STATS_ROWS: u32 = PROG_SLOTS;
pub const STATS_LEN: u32 = STATS_ROWS * OUTCOMES;

#[inline(always)]
pub const fn stats_index(row: u32, outcome: Outcome) -> u32 {
    row * OUTCOMES + outcome as u32
}

/// Address-id slots of stored ADD_ADDR options per flow (`FlowState::stored`).
pub const ADDR_SLOTS: u32 = 16;
/// Longest ADD_ADDR option: IPv6 + port + HMAC.
pub const ADD_ADDR_MAX_LEN: usize = 30;
/// Capacity of `FLOW_ADDRS` (stored ADD_ADDR options of all flows). Most flows
/// store none or one; a quarter of the flow table is a generous default.
pub const DEFAULT_FLOW_ADDR_CAPACITY: u32 = DEFAULT_FLOW_CAPACITY / 4;

/// Key of `FLOWS`: one TCP subflow (for `FLOWS`, the MPTCP connection's
/// initial one) from the LOCAL host's point of view. On XDP ingress, local =
/// the packet's destination, remote = its source. IPv4 addresses use the
/// first 4 bytes and leave the rest zero, so one key type serves both
/// families.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 3],
    /// Host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    pub local: [u8; 16],
    pub remote: [u8; 16],
}

/// `FlowState::flags` bits.
/// A DSS data ACK was seen: `FlowState::data_ack` is the baseline.
pub const FLOW_DATA_ACK_SEEN: u32 = 1 << 0;
/// A DSS mapping was seen: `FlowState::data_end` is the baseline.
pub const FLOW_DATA_SEQ_SEEN: u32 = 1 << 1;
/// `rcv_nxt`/`ack`/`window` hold a segment of the remote.
pub const FLOW_SEQ_SEEN: u32 = 1 << 2;
/// `tsval`/`tsecr` hold the newest segment's timestamps.
pub const FLOW_TS_SEEN: u32 = 1 << 3;
/// A stored ADD_ADDR is due but no received packet had room for it: the
/// in-kernel recovery (`ingress_recover`) or user space delivers it in a
/// duplicate ACK (see docs/datapath.md).
pub const FLOW_RECOVER_PENDING: u32 = 1 << 4;
/// The connection carried data (a DSS after the handshake): a later
/// SYN-ACK with MP_CAPABLE for its 4-tuple is unsolicited and ignored.
pub const FLOW_ESTABLISHED: u32 = 1 << 5;
/// The initial subflow closed while joined subflows live on: the
/// connection ends with its last subflow.
pub const FLOW_INITIAL_CLOSED: u32 = 1 << 6;
/// The peer sent a DATA_FIN: the next subflow FIN or RST ends the
/// connection.
pub const FLOW_DATA_FIN: u32 = 1 << 7;
/// The peer's SYN-ACK carried the window scale option (RFC 7323: the
/// local end's own shift applies only when both SYNs carried one).
pub const FLOW_PEER_WSCALE: u32 = 1 << 9;
/// Tracked from the passive opener's side (the connection was learnt from
/// the MP_CAPABLE third ACK the peer sent, not from a SYN-ACK).
pub const FLOW_SERVER: u32 = 1 << 8;
/// Of a `FLOW_SERVER` connection: its handshake was seen whole (the peer's
/// SYN at ingress, the local SYN-ACK at egress, kept in `SYN_SHIFTS`), so
/// `FLOW_PEER_WSCALE` says whether window scaling is in effect (both SYNs
/// carried it) and `wscale` is the peer's shift.
pub const FLOW_SHIFT_SETTLED: u32 = 1 << 10;
/// `FlowState::first_addr` is taken (or being filled) by one slot: claimed
/// with an atomic or, so two CPUs storing different ids at once never both
/// write it (the second one's option goes to `FLOW_ADDRS`).
pub const FLOW_FIRST_ADDR: u32 = 1 << 11;

/// Value of `SYN_SHIFTS` (key: the subflow's [`FlowKey`], ingress
/// orientation): what a handshake's SYNs announced, kept until the
/// connection is created. For a connection the peer opens: the peer's
/// window scale, from its MP_CAPABLE SYN until its third ACK creates the
/// connection (which carries no option of its own), so ingress
/// `set_window` knows the shift of the local end's own initial subflow,
/// and the local SYN-ACK's window bound. For one the local end opens: its
/// SYN's window bound, until the peer's SYN-ACK creates the connection
/// (the RST check's bound on rcv_nxt, `FlowState::rcv_wnd_log2`). 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynShift {
    /// The shift the peer's SYN announced (valid with `SYN_SHIFT_PEER`).
    pub peer: u8,
    /// `SYN_SHIFT_*` bits.
    pub flags: u8,
    /// The local end's window bound (`FlowState::rcv_wnd_log2`) from its
    /// SYN-ACK (a connection the peer opens) or its SYN (one it opens: the
    /// entry then waits for the peer's SYN-ACK); 0 not seen.
    pub local_wnd_log2: u8,
    pub _pad: u8,
}

/// `SynShift::flags`: the peer's SYN carried the window scale option.
pub const SYN_SHIFT_PEER: u8 = 1 << 0;
/// The local SYN-ACK was seen leaving (the egress hook).
pub const SYN_SHIFT_ANSWERED: u8 = 1 << 1;
/// That SYN-ACK carried the window scale option.
pub const SYN_SHIFT_LOCAL: u8 = 1 << 2;
/// Capacity of `SYN_SHIFTS`: handshakes in flight, not connections. An
/// LRU of its own, so a SYN flood evicts only other handshakes' shifts
/// (their connections' ingress `set_window` then passes untouched,
/// counted), never a tracked connection or join.
pub const SYN_SHIFT_CAPACITY: u32 = 16384;

/// `FlowState::recovered_via` bits: how the stored options were delivered.
/// Inserted into a received packet that had room (XDP `recover_add_addr`).
pub const VIA_INSERT: u8 = 1 << 0;
/// In a duplicate ACK built in the kernel from a clone of a received data
/// segment (`ingress_recover`, TC ingress).
pub const VIA_KERNEL: u8 = 1 << 1;
/// In a duplicate ACK forged by user space (`emptcp agent` / `watch`).
pub const VIA_AGENT: u8 = 1 << 2;

/// `skb->mark` of a clone `ingress_recover` made of a received segment to
/// turn into a duplicate ACK: this value, with the slot of the stored
/// address in the low four bits (`RECOVER_MARK_SLOT`). The clone comes
/// back through TC ingress; a packet with any other mark is never
/// rewritten, and the original's own mark is restored on the clone.
pub const RECOVER_MARK: u32 = 0x6d70_7460;
/// Bits of `RECOVER_MARK` that name the slot.
pub const RECOVER_MARK_SLOT: u32 = 0xf;
/// Name of the TC ingress program of the in-kernel recovery.
pub const INGRESS_RECOVER: &str = "ingress_recover";

/// Value of `FLOWS`: what the datapath knows about one tracked MPTCP
/// CONNECTION, keyed by its initial subflow (152 bytes; docs/datapath.md
/// has the memory per connection). The connection-level fields (size,
/// stored addresses, their delivery) count every subflow: a joined subflow
/// maps to its connection through `JOINS`. The per-subflow fields (seq,
/// ack, window, timestamps, MACs) are the initial subflow's.
///
/// Several CPUs may update one connection at once (its subflows arrive on
/// different receive queues; the egress hook confirms on the transmit
/// CPU). The bit sets shared between them (`flags`, `stored`+`recovered`,
/// `confirmed`) sit in 8-aligned 64-bit words changed only with atomic
/// or/and; the size is derived from the newest data ACK and data sequence
/// (maxima, from their first values), so a racing update may lag by one
/// packet but never counts bytes twice.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Connection size compared with the chain's thresholds: upload bytes
    /// acked (DSS data ACK progress) + download bytes (DSS data sequence
    /// progress), from whichever subflow carries them:
    /// `(data_ack - ack_base) + (data_end - end_base)`.
    pub bytes: u64,
    /// Newest DSS data ACK, extended from the first one by the 32-bit
    /// deltas both DSS forms share.
    pub data_ack: u64,
    /// Newest end of a DSS mapping (data sequence + data-level length),
    /// extended the same way.
    pub data_end: u64,
    /// The first `data_ack` / `data_end` seen (the size counts from them).
    pub ack_base: u64,
    pub end_base: u64,
    /// `bpf_ktime_get_ns` before which no new delivery of an unconfirmed
    /// stored address is tried (0: any time).
    pub retry_at_ns: u64,
    /// `FLOW_*` bits (the low half of an atomically updated word).
    pub flags: u32,
    pub _flags_hi: u32,
    /// Slots of `FLOW_ADDRS` holding an option (bit i = slot i); with
    /// `recovered`, one atomically updated word.
    pub stored: u32,
    /// Slots delivered at least once (inserted or in a duplicate ACK).
    pub recovered: u32,
    /// Slots the local stack acknowledged: its ADD_ADDR echo or an MP_JOIN
    /// to the address was seen leaving (the egress hook, `IFACE_TRACK`);
    /// with `token`, one atomically updated word.
    pub confirmed: u32,
    /// The connection's token: the most significant 32 bits of SHA-256 of
    /// the passive opener's (server's) MP_CAPABLE key (RFC 8684 2.2), the
    /// token every MP_JOIN SYN of the connection carries. `TOKENS` maps it
    /// back to this entry.
    pub token: u32,
    /// Chain that created the flow.
    pub chain: u32,
    /// Interface the flow's packets arrive on.
    pub ifindex: u32,
    /// Of the newest segment of the remote (wrap-aware): sequence + payload
    /// length, i.e. the local host's rcv_nxt. A forged duplicate ACK uses it.
    pub rcv_nxt: u32,
    /// Acknowledgment number of that segment.
    pub ack: u32,
    /// Its TCP timestamps (valid with `FLOW_TS_SEEN`).
    pub tsval: u32,
    pub tsecr: u32,
    /// The skb mark of the data segment a recovery clone was made from,
    /// restored on the clone.
    pub mark: u32,
    /// Its raw (scaled) window field.
    pub window: u16,
    /// First 802.1Q/802.1ad tag (TCI) of the SYN-ACK, 0 without one.
    pub vlan_tci: u16,
    /// Ethernet destination then source of the SYN-ACK, as received.
    pub mac: [u8; 12],
    /// Address id of the option in each slot (slot = id % 16).
    pub addr_ids: [u8; ADDR_SLOTS as usize],
    /// The local end's receive window stays below `1 << rcv_wnd_log2`: 16
    /// plus the window scale shift its SYN or SYN-ACK announced (16
    /// without the option), from the egress hook; 0 when it was not seen
    /// (then RFC 7323's largest, 2^30). A segment ending further than that
    /// past `rcv_nxt` cannot be the peer's (`seq_beyond_window`).
    pub rcv_wnd_log2: u8,
    /// Window scale shift the remote announced in its SYN-ACK (0 without).
    pub wscale: u8,
    /// Joined subflows past their handshake's SYN (`JOIN_UNCOUNTED` clear)
    /// and not closed.
    pub joins: u8,
    /// Deliveries of the oldest unconfirmed slot so far (bounded).
    pub attempts: u8,
    /// ADD_ADDR options overwritten with NOPs, dropped with their pure ACK,
    /// and delivered, for this connection (saturating).
    pub add_addr_nopped: u16,
    pub add_addr_dropped: u16,
    pub add_addr_recovered: u16,
    /// Packets without room seen while recovery is pending; every 16th (up
    /// to 128) is reported on `EVENTS` so user space can deliver the option
    /// where the kernel cannot. Reset when recovery is no longer pending.
    pub pending_packets: u16,
    /// Deliveries repeated because the previous one was not confirmed.
    pub add_addr_retried: u16,
    /// The MP_PRIO ingress `set_backup` inserted on the initial subflow: 0
    /// none, 1 backup=0, 2 backup=1 (one signal per change, like Linux).
    pub prio_sent: u8,
    /// `VIA_*` bits: how stored options reached the local stack.
    pub recovered_via: u8,
    /// When recovery became pending (the first packet without room since
    /// it last was not), in units of 2^20 ns (about 1 ms) of
    /// `bpf_ktime_get_ns`, wrapping: a handoff to the agent ends as a
    /// delivery attempt only once the state outlived the in-kernel path's
    /// chance to serve it (`recover_add_addr::HANDOFF_AFTER`).
    pub pending_since: u32,
    /// The first option stored (`FLOW_FIRST_ADDR`), kept in the entry: most
    /// connections store one or none, and a write into the entry the chain
    /// already holds costs a fraction of an insert into `FLOW_ADDRS` (a
    /// cold bucket, an LRU node and its lock). Its slot is its address id
    /// % 16; the other slots' options live in `FLOW_ADDRS`. Read it with
    /// [`FlowState::held_addr`].
    pub first_addr: StoredAddAddr,
}

impl FlowState {
    /// The slot whose option the entry itself holds (`first_addr`, filled),
    /// if any: its address id (the option's 4th byte) % 16.
    #[inline(always)]
    pub fn held_slot(&self) -> Option<u32> {
        let a = &self.first_addr;
        (a.len != 0).then_some(a.bytes[3] as u32 & (ADDR_SLOTS - 1))
    }

    /// The option of `slot` when the entry itself holds it; `None`: look
    /// in `FLOW_ADDRS`.
    #[inline(always)]
    pub fn held_addr(&self, slot: u32) -> Option<&StoredAddAddr> {
        (self.held_slot() == Some(slot)).then_some(&self.first_addr)
    }
}

/// `JoinState::flags`: `rcv_nxt` holds a segment of the remote.
pub const JOIN_SEQ_SEEN: u32 = 1 << 0;
/// `wscale` holds the shift of the peer's MP_JOIN SYN-ACK (or SYN).
pub const JOIN_WSCALE_SEEN: u32 = 1 << 1;
/// The join's SYN-ACK was seen: the peer's (a subflow the local end
/// joined, record_flow) or the local end's (one the peer joined, the egress
/// hook). `JOIN_WSCALE_SEEN` then says whether window scaling is in effect
/// on the subflow, i.e. both SYNs carried it (RFC 7323 2.2; both
/// `set_window`s scale only then).
pub const JOIN_SYN_ACK_SEEN: u32 = 1 << 2;
/// The peer opened the subflow (its MP_JOIN SYN was received): no SYN-ACK
/// from the peer belongs to it.
pub const JOIN_PEER_OPENED: u32 = 1 << 3;
/// The subflow does not count in its connection's `FlowState::joins` yet:
/// set at the mapping, cleared (and counted) once its handshake went on
/// past the SYN (the peer's SYN-ACK of a join the local end opened, or any
/// later segment of the peer). A SYN alone, refused or never answered,
/// must not keep the connection alive after its last real subflow closed.
/// A clear bit means counted, so a mapping an older object made (counted
/// at its SYN, without this bit) stays counted across an upgrade.
pub const JOIN_UNCOUNTED: u32 = 1 << 4;

/// Value of `JOINS` (key: the joined subflow's [`FlowKey`], ingress
/// orientation): which connection an MP_JOIN subflow belongs to. Created
/// from the token of the MP_JOIN SYN: sent by the local end (TC egress,
/// `IFACE_TRACK`) or received (XDP ingress, the local end is the server).
/// 56 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JoinState {
    /// The connection's key in `FLOWS` (its initial subflow).
    pub conn: FlowKey,
    pub token: u32,
    /// `JOIN_*` bits.
    pub flags: u32,
    /// rcv_nxt of this subflow (as `FlowState::rcv_nxt`): a RST counts
    /// only at it.
    pub rcv_nxt: u32,
    /// The peer's window scale shift on this subflow.
    pub wscale: u8,
    /// As `FlowState::prio_sent`, for this subflow.
    pub prio_sent: u8,
    /// As `FlowState::rcv_wnd_log2`, for this subflow.
    pub rcv_wnd_log2: u8,
    pub _pad: u8,
}

/// Default capacity of `JOINS`: a quarter of the flow table (most
/// connections never join; the policy's flow_capacity scales it).
pub const DEFAULT_JOIN_CAPACITY: u32 = DEFAULT_FLOW_CAPACITY / 4;

/// `EVENTS` record: flow `key` has the stored option in `slot` due and no
/// received packet has room for it (see reconciler/src/agent.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoverEvent {
    pub key: FlowKey,
    pub slot: u32,
    pub ifindex: u32,
}

/// Size of the `EVENTS` ring buffer.
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// Key of `FLOW_ADDRS`: one stored ADD_ADDR of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrKey {
    pub flow: FlowKey,
    /// `0..ADDR_SLOTS`.
    pub slot: u32,
}

/// Value of `FLOW_ADDRS`: the option bytes as received (kind 30 first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoredAddAddr {
    /// Option length (16, 18, 28 or 30).
    pub len: u8,
    pub _pad: u8,
    /// `len` bytes of option, zero after.
    pub bytes: [u8; ADD_ADDR_MAX_LEN],
}

/// Per-CPU datapath event counters (`FLOW_STATS[FlowStat as u32]`), finer
/// than the per-action outcomes of `STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowStat {
    FlowsCreated = 0,
    FlowsRemoved = 1,
    AddAddrStored = 2,
    AddAddrDuplicate = 3,
    AddAddrDroppedPureAck = 4,
    AddAddrNopped = 5,
    AddAddrRecovered = 6,
    RecoverPendingNoRoom = 7,
    AddAddrLost = 8,
    MpPrioInserted = 9,
    MpPrioRewritten = 10,
    MpPrioNoRoom = 11,
    WindowRewritten = 12,
    WindowScaleUnknown = 13,
    Malformed = 14,
    FlowInsertFailed = 15,
    /// An MP_JOIN subflow was mapped to its connection by its token.
    JoinsMapped = 16,
    /// An MP_JOIN SYN carried a token no tracked connection has.
    JoinTokenUnknown = 17,
    /// A handshake packet no live state asked for, ignored: a SYN-ACK with
    /// MP_CAPABLE for a 4-tuple whose connection carries data, an
    /// MP_CAPABLE SYN-ACK or third ACK on a joined subflow's 4-tuple, an
    /// MP_JOIN SYN-ACK on a subflow the peer opened or whose SYN-ACK was
    /// already seen.
    SynAckIgnored = 18,
    /// A FIN or RST outside the subflow's sequence (a spoof or a stale
    /// segment): the connection stays.
    CloseIgnored = 19,
    /// A REMOVE_ADDR from the peer removed a stored address.
    RemoveAddrCleared = 20,
    /// An MP_FASTCLOSE ended the connection.
    FastClose = 21,
    /// A stored ADD_ADDR delivered in a duplicate ACK built in the kernel.
    AddAddrRecoveredKernel = 22,
    /// The local stack acknowledged a delivered address (echo or MP_JOIN).
    AddAddrConfirmed = 23,
    /// A delivered address was not confirmed in time and is sent again.
    AddAddrRetried = 24,
    /// Delivery given up after the last retry.
    AddAddrGivenUp = 25,
    /// A packet already carrying an ADD_ADDR got no second one.
    InsertSkippedHasAddAddr = 26,
    /// TOKENS or JOINS was full and the insert failed, or a new
    /// connection's token is a live connection's (that one keeps it).
    TokenInsertFailed = 27,
    /// The in-kernel recovery could not clone a segment or complete its
    /// clone (the address was withdrawn meanwhile, the connection ended,
    /// a helper failed): the clone is dropped, the retry timer stays.
    KernelRecoveryFailed = 28,
    /// A recovery event for user space was lost (the `EVENTS` ring full).
    RecoverEventLost = 29,
    /// A segment ending further past the subflow's rcv_nxt than the local
    /// end's largest receive window: not the peer's (a blind spoof, or
    /// state that missed segments); rcv_nxt does not follow it.
    SeqBeyondWindow = 30,
}
pub const FLOW_STATS_LEN: u32 = 31;
/// Names of the `FlowStat` counters, indexed by `FlowStat as u32`.
pub const FLOW_STAT_NAMES: [&str; FLOW_STATS_LEN as usize] = [
    "flows_created",
    "flows_removed",
    "add_addr_stored",
    "add_addr_duplicate",
    "add_addr_dropped_pure_ack",
    "add_addr_nopped",
    "add_addr_recovered",
    "recover_pending_no_room",
    "add_addr_lost",
    "mp_prio_inserted",
    "mp_prio_rewritten",
    "mp_prio_no_room",
    "window_rewritten",
    "window_scale_unknown",
    "malformed",
    "flow_insert_failed",
    "joins_mapped",
    "join_token_unknown",
    "syn_ack_ignored",
    "close_ignored",
    "remove_addr_cleared",
    "fast_close",
    "add_addr_recovered_kernel",
    "add_addr_confirmed",
    "add_addr_retried",
    "add_addr_given_up",
    "insert_skipped_has_add_addr",
    "token_insert_failed",
    "kernel_recovery_failed",
    "recover_event_lost",
    "seq_beyond_window",
];

/// Name prefix of the TC egress programs: `egress_entry` and one
/// `egress_<action>` per action allowed on egress.
pub const EGRESS_PREFIX: &str = "egress_";
/// Prefix of the TC ingress variants of the actions ([`tc_program`]).
pub const TC_PREFIX: &str = "tc_";

/// The actions that have an egress (TC) program.
pub const EGRESS_ACTIONS: [Action; 3] = [Action::Count, Action::SetBackup, Action::SetWindow];

/// `emptcp_common::egress_program(a)`: the TC program of action `a`.
pub const fn egress_program(a: Action) -> &'static str {
    match a {
        Action::Count => "egress_count",
        Action::SetBackup => "egress_set_backup",
        Action::SetWindow => "egress_set_window",
        // Ingress only: no egress program.
        Action::Drop => "",
        Action::RecordFlow => "",
        Action::StripAddAddr => "",
        Action::RecoverAddAddr => "",
    }
}

/// The entry program of the TC ingress hook (an interface whose ingress
/// chains run after GRO, `ingress_hook: tc`), attached with a TCX ingress
/// link; it runs the chain through `TC_PROGS`, whose slots are those of
/// `PROGS`.
pub const TC_ENTRY: &str = "tc_entry";

/// `record_flow_setup` on the TC ingress hook (slot [`RECORD_SETUP_SLOT`]
/// of `TC_PROGS`).
pub const TC_RECORD_SETUP: &str = "tc_record_flow_setup";

/// The TC ingress program of action `a` (every ingress action has one).
pub const fn tc_program(a: Action) -> &'static str {
    match a {
        Action::Count => "tc_count",
        Action::Drop => "tc_drop",
        Action::RecordFlow => "tc_record_flow",
        Action::StripAddAddr => "tc_strip_add_addr",
        Action::RecoverAddAddr => "tc_recover_add_addr",
        Action::SetBackup => "tc_set_backup",
        Action::SetWindow => "tc_set_window",
    }
}

/// The capture program (`egress_capture`), tail-called by `egress_entry`
/// before the chain's first step, sits in this slot of `EGRESS_PROGS` (the
/// actions use `Action as u32`, which starts at 1).
pub const EGRESS_CAPTURE_SLOT: u32 = 0;
pub const EGRESS_CAPTURE: &str = "egress_capture";

/// The ingress capture program (`ingress_capture`: the entry path of an
/// interface with [`IFACE_CAPTURE`], tail-called by the XDP `entry`) sits
/// in this slot of `PROGS` (free: the actions use `Action as u32`, which
/// starts at 1).
pub const INGRESS_CAPTURE_SLOT: u32 = 0;
pub const INGRESS_CAPTURE: &str = "ingress_capture";
/// The same capture on the TC ingress hook (`tc_entry` of an interface
/// with [`IFACE_CAPTURE`] and `ingress_hook: tc` tail-calls it), in slot
/// [`INGRESS_CAPTURE_SLOT`] of `TC_PROGS`.
pub const TC_INGRESS_CAPTURE: &str = "tc_ingress_capture";

/// `record_flow_setup` (the connection-setup half of `record_flow`, which
/// tail-calls it for SYNs and the peer's MP_CAPABLE third ACK) sits in this
/// slot of `PROGS` (past the actions, which use 1..=7).
pub const RECORD_SETUP_SLOT: u32 = 8;
pub const RECORD_SETUP: &str = "record_flow_setup";

/// The programs of `PROGS` that are not actions, with their slots.
pub const PROGS_EXTRA: [(&str, u32); 2] = [
    (INGRESS_CAPTURE, INGRESS_CAPTURE_SLOT),
    (RECORD_SETUP, RECORD_SETUP_SLOT),
];

/// Every slot of `EGRESS_PROGS` and its program.
pub const EGRESS_SLOTS: [(&str, u32); 4] = [
    (EGRESS_CAPTURE, EGRESS_CAPTURE_SLOT),
    ("egress_count", Action::Count as u32),
    ("egress_set_backup", Action::SetBackup as u32),
    ("egress_set_window", Action::SetWindow as u32),
];

/// Default capacity of `SUBFLOWS` (captured subflows, LRU).
pub const DEFAULT_SUBFLOW_CAPACITY: u32 = 262_144;
/// Size of the `SUBFLOW_EVENTS` ring buffer.
pub const SUBFLOW_EVENTS_BYTES: u32 = 256 * 1024;

/// `SubflowState::flags` bits.
/// `snd_nxt`/`rcv_nxt`/`window`/`tsval`/`tsecr` hold a sent segment.
pub const SF_SEQ_SEEN: u32 = 1 << 0;
/// A sent segment had the ACK flag: `rcv_nxt` is meaningful.
pub const SF_ACK_SEEN: u32 = 1 << 1;
/// `tsval`/`tsecr` hold the newest sent segment's timestamps.
pub const SF_TS_SEEN: u32 = 1 << 2;
/// A DSS data ACK was sent: `data_ack` holds the newest one.
pub const SF_DATA_ACK_SEEN: u32 = 1 << 3;
/// `local_key` holds the key the local end sent (MP_CAPABLE SYN-ACK or
/// third ACK).
pub const SF_LOCAL_KEY: u32 = 1 << 4;
/// `remote_key` holds the peer's key (echoed in the MP_CAPABLE third ACK).
pub const SF_REMOTE_KEY: u32 = 1 << 5;
/// The subflow is an MP_JOIN subflow (not the initial one).
pub const SF_JOIN: u32 = 1 << 6;
/// `wscale` holds the window scale the local end announced in its SYN or
/// SYN-ACK (egress `set_window` needs it).
pub const SF_WSCALE_SEEN: u32 = 1 << 7;
/// The subflow's SYN or SYN-ACK was seen (it was not picked up mid-way).
pub const SF_SYN_SEEN: u32 = 1 << 8;
/// The newest sent segment carried a FIN (set on the closing event).
pub const SF_FIN: u32 = 1 << 9;
/// The newest sent segment carried a RST (set on the closing event).
pub const SF_RST: u32 = 1 << 10;
/// The peer sent a FIN (seen by the ingress capture; set on the closing
/// event).
pub const SF_PEER_FIN: u32 = 1 << 11;
/// The peer sent a RST, e.g. with an MPTCP fastclose (seen by the ingress
/// capture; set on the closing event).
pub const SF_PEER_RST: u32 = 1 << 12;
/// `wscale` is the shift in effect on the subflow (RFC 7323 2.2: the
/// local end's shift applies only when both SYNs carried window scale).
/// Set by the capture when `wscale` came from the local end's SYN-ACK,
/// which carries the option only when the peer's SYN did (and without it
/// `wscale` is 0); for a local SYN, by egress `set_window` once it learnt
/// the peer's SYN-ACK from record_flow (`FLOW_PEER_WSCALE` /
/// `JOIN_WSCALE_SEEN`), writing 0 into `wscale` if the peer does not
/// scale.
pub const SF_WSCALE_AGREED: u32 = 1 << 13;
/// Any of the four ways a subflow ends. A closed entry stays in `SUBFLOWS`
/// as a tombstone (until the LRU evicts it or a new SYN reuses its
/// 4-tuple), so the segments a dead connection still sends (the last ACK
/// after the FINs, a retransmission) neither update nor re-create it, and
/// nothing is forged for it.
pub const SF_CLOSED: u32 = SF_FIN | SF_RST | SF_PEER_FIN | SF_PEER_RST;
/// `peer_token` holds the token of the local end's MP_JOIN SYN: the
/// peer's token, which names the connection the subflow joins (its
/// initial subflow's peer key hashes to it).
pub const SF_PEER_TOKEN: u32 = 1 << 14;

/// Value of `SUBFLOWS` (key: [`FlowKey`] with local = the LOCAL end: the
/// packet's source on egress, its destination on ingress): one TCP subflow
/// of an MPTCP connection, for packet copy. Two hooks write it:
///
/// * the TC egress capture (`egress_capture`, on interfaces with an egress
///   chain) creates the entry on the first sent segment with an MPTCP
///   option and owns everything a forged duplicate ACK towards the peer
///   needs, from the newest segments the local end SENT: seq = `snd_nxt`,
///   ack = `rcv_nxt`, window, timestamps, the DSS data ACK, MACs, VLAN,
///   chain and interface, plus `last_data_tx_ns`, `last_ack_advance_ns`,
///   `last_seen_ns`;
/// * the XDP ingress capture (`ingress_capture`, on interfaces named by a
///   `packet_copy` rule) only updates entries that exist, from what the
///   peer SENT: `last_rx_data_ns`, the MP_CAPABLE keys when they arrive on
///   ingress (the server role), and the peer's FIN or RST, which removes
///   the entry. It never writes the egress-owned fields: a forged packet
///   must carry what the local stack actually sent and acknowledged.
///
/// Either hook removes the entry on a FIN or RST (its own or the peer's)
/// with a `SUBFLOW_EV_CLOSED` event. 112 bytes, no implicit padding; new
/// fields are only appended (an older map's entries migrate zero-extended:
/// 0 reads as "not seen yet").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubflowState {
    /// Newest DSS data ACK sent (64-bit; a 4-byte form extends the last
    /// value by its wrap-aware delta, as in `FlowState::data_ack`).
    pub data_ack: u64,
    /// The local key (MP_CAPABLE, as a big-endian number) with `SF_LOCAL_KEY`.
    pub local_key: u64,
    /// The peer's key with `SF_REMOTE_KEY`.
    pub remote_key: u64,
    /// `bpf_ktime_get_ns` of the newest sent segment with payload (0: none).
    pub last_data_tx_ns: u64,
    /// When the ack number sent last advanced (data was received on this
    /// subflow); 0: never.
    pub last_ack_advance_ns: u64,
    /// When any segment of the subflow was last sent.
    pub last_seen_ns: u64,
    /// Newest end of sent sequence space (seq + payload + SYN/FIN,
    /// wrap-aware maximum): the local snd_nxt.
    pub snd_nxt: u32,
    /// Newest acknowledgment number sent (wrap-aware maximum): the local
    /// rcv_nxt.
    pub rcv_nxt: u32,
    /// TCP timestamps of the newest sent segment (with `SF_TS_SEEN`).
    pub tsval: u32,
    pub tsecr: u32,
    /// Chain that matched the subflow's newest segment.
    pub chain: u32,
    /// Interface the subflow's segments leave on.
    pub ifindex: u32,
    /// `SF_*` bits.
    pub flags: u32,
    /// Raw (scaled) window field of the newest sent segment.
    pub window: u16,
    /// 802.1Q/802.1ad TCI of the newest segment (in the frame, or the
    /// skb's offloaded tag), 0 without one.
    pub vlan_tci: u16,
    /// Ethernet destination then source, as sent.
    pub mac: [u8; 12],
    /// Window scale shift the local end announced (with `SF_WSCALE_SEEN`);
    /// with `SF_WSCALE_AGREED`, the shift in effect (0 if the peer does
    /// not scale).
    pub wscale: u8,
    /// The MP_PRIO egress `set_backup` inserted on this subflow: 0 none,
    /// 1 backup=0, 2 backup=1. A signal is inserted once (like Linux sends
    /// MP_PRIO once), so a packet-copy MP_PRIO that reverses it is not undone
    /// by the next pure ACK.
    pub prio_sent: u8,
    pub _pad: [u8; 2],
    /// `bpf_ktime_get_ns` of the newest segment with payload RECEIVED from
    /// the peer (ingress capture; 0: none seen).
    pub last_rx_data_ns: u64,
    /// With `SF_PEER_TOKEN`: the token the local end's MP_JOIN SYN carried
    /// (egress capture), so user space can tell which connection a joined
    /// subflow belongs to (`packet_copy`'s `other_subflows_idle`).
    pub peer_token: u32,
    pub _pad2: u32,
}

/// `SubflowEvent::kind`: the subflow was captured for the first time.
pub const SUBFLOW_EV_NEW: u32 = 1;
/// `SubflowEvent::kind`: a FIN or RST was sent or received; the entry is
/// gone (`flags` tell which: `SF_FIN`/`SF_RST` sent, `SF_PEER_FIN`/
/// `SF_PEER_RST` received).
pub const SUBFLOW_EV_CLOSED: u32 = 2;

/// Record of the `SUBFLOW_EVENTS` ring buffer (72 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubflowEvent {
    pub key: FlowKey,
    /// `SUBFLOW_EV_*`.
    pub kind: u32,
    pub chain: u32,
    pub ifindex: u32,
    /// The subflow's `SF_*` bits at the time.
    pub flags: u32,
    pub snd_nxt: u32,
    pub rcv_nxt: u32,
    /// `bpf_ktime_get_ns` of the event.
    pub ts_ns: u64,
}

/// Per-CPU counters of the egress hook (`EGRESS_STATS[EgressStat as u32]`).
/// The capture counters (`SubflowsClosed`, `EventsLost`) count for both
/// capture hooks: a subflow closed on the peer's FIN/RST seen on ingress
/// is a `SubflowsClosed` too.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressStat {
    SubflowsCreated = 0,
    /// Closed on a FIN or RST, sent (egress) or received (ingress): the
    /// entry is kept as a tombstone (`SF_CLOSED`).
    SubflowsClosed = 1,
    /// SUBFLOWS was full and the insert failed (LRU: rare).
    SubflowInsertFailed = 2,
    /// `SUBFLOW_EVENTS` was full: the event was lost.
    EventsLost = 3,
    MpPrioRewritten = 4,
    MpPrioInserted = 5,
    /// No room in the options (or an EOL ends them).
    MpPrioNoRoom = 6,
    /// A GSO (TSO) packet: no option is inserted into it.
    InsertSkippedGso = 7,
    /// A segment with payload: no option is inserted into it (see
    /// docs/datapath.md, "egress insert").
    InsertSkippedPayload = 8,
    WindowRewritten = 9,
    /// set_window on a subflow whose local window scale is unknown.
    WindowScaleUnknown = 10,
    Malformed = 11,
}
pub const EGRESS_STATS_LEN: u32 = 12;
/// Names of the `EgressStat` counters, indexed by `EgressStat as u32`.
pub const EGRESS_STAT_NAMES: [&str; EGRESS_STATS_LEN as usize] = [
    "subflows_created",
    "subflows_closed",
    "subflow_insert_failed",
    "events_lost",
    "mp_prio_rewritten",
    "mp_prio_inserted",
    "mp_prio_no_room",
    "insert_skipped_gso",
    "insert_skipped_payload",
    "window_rewritten",
    "window_scale_unknown",
    "malformed",
];

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are #[repr(C)], Copy, made of integers and byte
    // arrays with explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for ChainStep {}
    unsafe impl aya::Pod for ChainDef {}
    unsafe impl aya::Pod for Thresholds {}
    unsafe impl aya::Pod for Selector {}
    unsafe impl aya::Pod for LpmV4 {}
    unsafe impl aya::Pod for LpmV6 {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for IfaceChains {}
    unsafe impl aya::Pod for ChainCounters {}
    unsafe impl aya::Pod for ObjectMeta {}
    unsafe impl aya::Pod for RecoverEvent {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowState {}
    unsafe impl aya::Pod for JoinState {}
    unsafe impl aya::Pod for SynShift {}
    unsafe impl aya::Pod for AddrKey {}
    unsafe impl aya::Pod for StoredAddAddr {}
    unsafe impl aya::Pod for SubflowState {}
    unsafe impl aya::Pod for SubflowEvent {}
    unsafe impl aya::Pod for XdpMeta {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // The sizes are the map ABI; a change here must bump LAYOUT_VERSION.
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ChainStep>(), 8);
        assert_eq!(size_of::<ChainDef>(), 8 + 8 * MAX_STEPS + CHAIN_NAME_LEN);
        assert_eq!(size_of::<Thresholds>(), 16);
        assert_eq!(size_of::<LpmV4>(), 12);
        assert_eq!(size_of::<LpmV6>(), 24);
        assert_eq!(size_of::<PortKey>(), 8);
        assert_eq!(
            size_of::<IfaceChains>(),
            16 + 8 * MAX_CHAINS_PER_IFACE
                + 4 * INLINE_PORTS * MAX_CHAINS_PER_IFACE
                + 2 * 16 * MAX_CHAINS_PER_IFACE
                + 64
                + IFNAME_LEN
        );
        assert_eq!(size_of::<XdpMeta>(), 152);
        assert_eq!(size_of::<ObjectMeta>(), 40);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowState>(), 184);
        assert_eq!(size_of::<JoinState>(), 56);
        assert_eq!(size_of::<SynShift>(), 4);
        assert_eq!(size_of::<AddrKey>(), 44);
        assert_eq!(size_of::<StoredAddAddr>(), 32);
        assert_eq!(size_of::<SubflowState>(), 112);
        assert_eq!(size_of::<SubflowEvent>(), 72);
    }

    /// The datapath changes shared bit sets with 64-bit atomic or/and
    /// (ebpf/emptcp-ebpf/src/atomic.rs), which need an 8-aligned word (map
    /// values start 8-aligned).
    #[test]
    fn atomically_updated_words_are_8_aligned() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(FlowState, flags) % 8, 0);
        assert_eq!(offset_of!(FlowState, stored) % 8, 0);
        assert_eq!(
            offset_of!(FlowState, recovered),
            offset_of!(FlowState, stored) + 4
        );
        assert_eq!(offset_of!(FlowState, confirmed) % 8, 0);
        assert_eq!(offset_of!(JoinState, token) % 8, 0);
        assert_eq!(
            offset_of!(JoinState, flags),
            offset_of!(JoinState, token) + 4
        );
        assert_eq!(offset_of!(SubflowState, flags) % 8, 0);
    }

    #[test]
    fn egress_stat_names_cover_every_counter() {
        assert_eq!(EGRESS_STAT_NAMES.len() as u32, EGRESS_STATS_LEN);
        assert_eq!(EgressStat::Malformed as u32, EGRESS_STATS_LEN - 1);
        for (name, slot) in EGRESS_SLOTS {
            assert!(name.starts_with(EGRESS_PREFIX));
            if slot != EGRESS_CAPTURE_SLOT {
                assert_eq!(egress_program(Action::from_u32(slot).unwrap()), name);
            }
        }
        for a in EGRESS_ACTIONS {
            assert!(egress_program(a).starts_with(EGRESS_PREFIX));
            assert!(STATS_ROW_EGRESS + (a as u32) < STATS_ROWS);
        }
    }

    #[test]
    fn flow_stat_names_cover_every_counter() {
        assert_eq!(FLOW_STAT_NAMES.len() as u32, FLOW_STATS_LEN);
        assert_eq!(FlowStat::SeqBeyondWindow as u32, FLOW_STATS_LEN - 1);
    }

    #[test]
    fn actions_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_u32(a as u32), Some(a));
            assert!((a as u32) < PROG_SLOTS);
        }
    }
}
