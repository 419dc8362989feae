//! Every map of the datapath. The reconciler pins each one under
//! `<root>/maps/<NAME>` and reuses it on the next load, so the layout of the
//! key and value types (emptcp-common) is an ABI.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use emptcp_common::{
    AddrKey, ChainCounters, ChainDef, DEFAULT_FLOW_ADDR_CAPACITY, DEFAULT_FLOW_CAPACITY,
    DEFAULT_JOIN_CAPACITY, EVENTS_BYTES, FLOW_STATS_LEN, FlowKey, FlowState, IfaceChains,
    JoinState, LpmV4, LpmV6, MAX_CHAINS, MAX_IFACES, ObjectMeta, PROG_SLOTS, PortKey, STATS_LEN,
    SYN_SHIFT_CAPACITY, Selector, StoredAddAddr, SynShift, Thresholds,
};
use emptcp_common::{
    DEFAULT_SUBFLOW_CAPACITY, EGRESS_STATS_LEN, SUBFLOW_EVENTS_BYTES, SubflowState,
};

/// Tail-call targets: slot `Action as u32` holds that action's program.
#[map]
pub static PROGS: ProgramArray = ProgramArray::with_max_entries(PROG_SLOTS, 0);

/// Chain id -> ordered action list (written by apply). An array: its lookup
/// is inlined by the verifier (a hash lookup costs ~35 ns here); a slot
/// whose `len` is 0 holds no chain.
#[map]
pub static CHAINS: Array<ChainDef> = Array::with_max_entries(MAX_CHAINS, 0);

/// Chain id -> per-flow thresholds (written by apply and by deciders).
#[map]
pub static THRESHOLDS: HashMap<u32, Thresholds> = HashMap::with_max_entries(MAX_CHAINS, 0);

/// Chain id -> which parts of `match` are present.
#[map]
pub static SELECTORS: HashMap<u32, Selector> = HashMap::with_max_entries(MAX_CHAINS, 0);

/// (dir, chain, IPv4 prefix) -> 1. Longest-prefix match over all chains.
#[map]
pub static SEL_V4: LpmTrie<LpmV4, u8> = LpmTrie::with_max_entries(16384, 0);

/// (dir, chain, IPv6 prefix) -> 1.
#[map]
pub static SEL_V6: LpmTrie<LpmV6, u8> = LpmTrie::with_max_entries(16384, 0);

/// (chain, dir, port) -> 1.
#[map]
pub static PORTS: HashMap<PortKey, u8> = HashMap::with_max_entries(65536, 0);

/// ifindex -> the interface's chains in order.
#[map]
pub static IFACES: HashMap<u32, IfaceChains> = HashMap::with_max_entries(MAX_IFACES, 0);

/// Direct-mapped cache of `IFACES` (slot `ifindex % IFACE_SLOTS`, the value
/// names its ifindex): an array lookup is inlined by the verifier, a hash
/// lookup is a call, and this one runs for every TCP packet.
#[map]
pub static IFACE_SLOTS: Array<IfaceChains> = Array::with_max_entries(emptcp_common::IFACE_SLOTS, 0);

/// Per-program, per-outcome packet counters.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

/// Per-chain counters written by the `count` action.
#[map]
pub static CHAIN_STATS: PerCpuArray<ChainCounters> = PerCpuArray::with_max_entries(MAX_CHAINS, 0);

/// What apply last converged to (single entry, written by user space only).
#[map]
pub static META: Array<ObjectMeta> = Array::with_max_entries(1, 0);

/// Tracked MPTCP flows (record_flow). LRU: when full, the least recently
/// used flow is evicted and a later packet of it is treated as untracked.
/// The reconciler sets max_entries from `settings.flow_capacity`.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowState> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_CAPACITY, 0);

/// Per-CPU scratch value in which record_flow_setup builds a new
/// connection's entry (a `FlowState` on the stack would not fit beside the
/// token's SHA-256).
#[map]
pub static NEW_FLOW: PerCpuArray<FlowState> = PerCpuArray::with_max_entries(1, 0);

/// Connection token -> the connection's key in `FLOWS` (its initial
/// subflow): how an MP_JOIN SYN, which names its connection only by the
/// token, finds it. Sized like `FLOWS` (one token per connection).
#[map]
pub static TOKENS: LruHashMap<u32, FlowKey> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_CAPACITY, 0);

/// Joined subflow (ingress-oriented key) -> its connection
/// (`emptcp_common::JoinState`). A quarter of `FLOWS` by default.
#[map]
pub static JOINS: LruHashMap<FlowKey, JoinState> =
    LruHashMap::with_max_entries(DEFAULT_JOIN_CAPACITY, 0);

/// Handshakes in flight (ingress-oriented key) -> what their SYNs announced
/// (`emptcp_common::SynShift`): from the peer's MP_CAPABLE SYN to the
/// third ACK that creates the connection, or from the local end's SYN to
/// the peer's SYN-ACK.
#[map]
pub static SYN_SHIFTS: LruHashMap<FlowKey, SynShift> =
    LruHashMap::with_max_entries(SYN_SHIFT_CAPACITY, 0);

/// Connections with a delivered address the local stack has not
/// confirmed yet (a gauge, `[0]`): while it is 0 the egress hook does not
/// look for ADD_ADDR echoes. An entry evicted while waiting leaves it
/// high, which only costs that look.
#[map]
pub static AWAITING: Array<u64> = Array::with_max_entries(1, 0);

/// Connections whose recovery is pending (`FLOW_RECOVER_PENDING`, a gauge,
/// `[0]`): while it is 0 the TC ingress recovery returns at once.
#[map]
pub static PENDING: Array<u64> = Array::with_max_entries(1, 0);

/// ADD_ADDR options stored by strip_add_addr, one entry per (flow, slot), so
/// the many flows that store none pay nothing for the 16-slot ring.
#[map]
pub static FLOW_ADDRS: LruHashMap<AddrKey, StoredAddAddr> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_ADDR_CAPACITY, 0);

/// Flows whose stored ADD_ADDR needs a forged duplicate ACK (RecoverEvent).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Datapath event counters, indexed by `emptcp_common::FlowStat`.
#[map]
pub static FLOW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FLOW_STATS_LEN, 0);

/// The packet's description on the XDP path (`XdpMeta`): written by the
/// entry, read and updated by the chain's actions, invalidated (its magic
/// cleared) by every way out of the chain (`chain::leave`). One slot per
/// CPU is safe: XDP runs with bottom halves off (NAPI poll, generic XDP
/// under `netif_receive_skb`, BPF_PROG_TEST_RUN), so the entry and the
/// tail calls it starts run to completion on one CPU, and no other packet
/// reaches an XDP program on that CPU before the chain ends (tail calls
/// never leave the CPU; under PREEMPT_RT the per-CPU bh lock serializes
/// the same way). A map value instead of XDP metadata spares two
/// `bpf_xdp_adjust_meta` calls and a bounds check per access, and leaves
/// any metadata in front of the packet as it came.
#[map]
pub static XDP_DESC: PerCpuArray<emptcp_common::XdpMeta> = PerCpuArray::with_max_entries(1, 0);

/// The description of the packet at hand on the TC ingress hook
/// (`tc_entry` and its chain): `XDP_DESC`'s twin, for the same reasons
/// (a TC ingress program also runs to completion in softirq on one CPU,
/// tail calls included). Its own slot: nothing of one hook's chain can be
/// read by the other's.
#[map]
pub static TC_DESC: PerCpuArray<emptcp_common::XdpMeta> = PerCpuArray::with_max_entries(1, 0);

/// Tail-call targets of the TC ingress hook: slot `Action as u32` holds the
/// `tc_*` variant of that action (a program array holds programs of one
/// type: the XDP ones are in `PROGS`).
#[map]
pub static TC_PROGS: ProgramArray = ProgramArray::with_max_entries(PROG_SLOTS, 0);

/// Per-CPU scratch space for the header block moved by an option insert:
/// too big for the 512-byte BPF stack next to the option copies. XDP runs
/// one program at a time per CPU, so one slot per CPU is enough.
#[map]
pub static SCRATCH: PerCpuArray<[u64; crate::shared::HDR_MAX as usize / 8]> =
    PerCpuArray::with_max_entries(1, 0);

/// Per-CPU buffer of the TCP checksum check (`csum::tcp_check`): 512
/// bytes, `bpf_csum_diff`'s limit, too big for the stack.
#[map]
pub static CSUM_SCRATCH: PerCpuArray<[u64; 64]> = PerCpuArray::with_max_entries(1, 0);

// --- TC egress -------------------------------------------------------------

/// Tail-call targets of the egress chain: slot `Action as u32` holds
/// `egress_<action>` (a PROG_ARRAY only takes programs of one type, so the
/// TC programs need their own).
#[map]
pub static EGRESS_PROGS: ProgramArray = ProgramArray::with_max_entries(PROG_SLOTS, 0);

/// ifindex -> the interface's egress chains in order (same value as
/// `IFACES`; no slot cache: only interfaces with egress chains carry the TC
/// program at all).
#[map]
pub static EGRESS_IFACES: HashMap<u32, IfaceChains> = HashMap::with_max_entries(MAX_IFACES, 0);

/// The egress packet's description (TC has no XDP metadata): written by
/// `egress_entry`, read and updated by the egress actions it tail-calls.
/// One slot per CPU is safe: a TC program and its tail calls run to
/// completion on one CPU with bottom halves off, so no other egress packet
/// can interleave. `serial` is also put in the skb's `cb[0]`, so an action
/// never trusts a slot written for another packet.
#[map]
pub static EGRESS_META: PerCpuArray<crate::shared::EgressMeta> =
    PerCpuArray::with_max_entries(1, 0);

/// Captured subflows, keyed with local = the packet's source (see
/// `emptcp_common::SubflowState`). LRU: when full the least recently sent
/// subflow is evicted. Capacity: `DEFAULT_SUBFLOW_CAPACITY`.
#[map]
pub static SUBFLOWS: LruHashMap<FlowKey, SubflowState> =
    LruHashMap::with_max_entries(DEFAULT_SUBFLOW_CAPACITY, 0);

/// Subflow seen for the first time / closed (`SubflowEvent`).
#[map]
pub static SUBFLOW_EVENTS: RingBuf = RingBuf::with_byte_size(SUBFLOW_EVENTS_BYTES, 0);

/// Egress hook counters, indexed by `emptcp_common::EgressStat`.
#[map]
pub static EGRESS_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EGRESS_STATS_LEN, 0);

/// The interface's chains: the direct-mapped slot (an inlined array
/// lookup), or the hash when another interface holds the slot. A slot
/// names its interface (an unused one holds ifindex 0, which no interface
/// has), and apply writes one only for an interface the entry has work on.
#[inline(always)]
pub fn iface(ifindex: u32) -> Option<&'static IfaceChains> {
    if let Some(c) = IFACE_SLOTS.get(ifindex & (emptcp_common::IFACE_SLOTS - 1))
        && c.ifindex == ifindex
    {
        return Some(c);
    }
    unsafe { IFACES.get(ifindex) }
}
