//! The connection table: keys from packets, the connection a subflow
//! belongs to (its own entry, or its `JOINS` mapping), removal with the
//! stored options, and the per-connection ring of ADD_ADDR options
//! (de-duplicated by address id).
use emptcp_common::{
    ADD_ADDR_MAX_LEN, ADDR_SLOTS, AddrKey, FLOW_FIRST_ADDR, FLOW_RECOVER_PENDING, FlowKey,
    FlowStat, FlowState, JoinState, StoredAddAddr,
};

use crate::{
    atomic,
    maps::{AWAITING, FLOW_ADDRS, FLOWS, JOINS, PENDING, TOKENS},
    stats,
};

/// The tracked connection whose initial subflow is `key`, if any.
#[inline(always)]
pub fn get(key: &FlowKey) -> Option<&'static mut FlowState> {
    // SAFETY: an LRU value stays valid for the program run. Fields are
    // plain stores: two CPUs updating one connection at once (RPS) can
    // lose a size increment, never corrupt the entry; the flag words are
    // updated with atomic or/and (`set_flags`/`clear_flags`).
    FLOWS.get_ptr_mut(key).map(|p| unsafe { &mut *p })
}

/// A packet's connection: `key` is the connection's `FLOWS` key, `join`
/// the subflow's `JOINS` entry when the packet is on a joined subflow.
pub struct Conn {
    pub key: FlowKey,
    pub f: &'static mut FlowState,
    pub join: Option<&'static mut JoinState>,
}

/// The connection the subflow `key` belongs to. `maybe_join`: the packet
/// could be on a joined subflow (it carries an MPTCP option, a FIN or a
/// RST); plain TCP packets of untracked flows then pay one lookup only.
#[inline(always)]
pub fn resolve(key: &FlowKey, maybe_join: bool) -> Option<Conn> {
    if let Some(f) = get(key) {
        return Some(Conn {
            key: *key,
            f,
            join: None,
        });
    }
    if !maybe_join {
        return None;
    }
    joined(key)
}

/// The live connection the joined subflow `sub` belongs to. A mapping
/// outlives its connection only until the token check: the connection's
/// key may have been reused by a new one.
#[inline(always)]
pub fn joined(sub: &FlowKey) -> Option<Conn> {
    let j = unsafe { &mut *JOINS.get_ptr_mut(sub)? };
    let conn = crate::words::copy_key(&raw const j.conn);
    let f = get(&conn).filter(|f| names(j, f))?;
    Some(Conn {
        key: conn,
        f,
        join: Some(j),
    })
}

/// Whether `sub` has a live mapping, by [`joined`]'s rule but without a
/// copy of the connection's key (for frames short of stack: the
/// connection setup's, under the SHA-256's).
#[inline(always)]
pub fn has_live_join(sub: &FlowKey) -> bool {
    unsafe { JOINS.get(sub) }.is_some_and(|j| get(&j.conn).is_some_and(|f| names(j, f)))
}

/// The mapping `j` still names `f` (not a new connection under its key).
#[inline(always)]
fn names(j: &JoinState, f: &FlowState) -> bool {
    f.token == j.token
}

/// The live connection `token` names, with its key: `TOKENS` keeps a token
/// its connection no longer has (evicted from `FLOWS`, or the key reused).
#[inline(always)]
fn owner_of(token: u32) -> Option<(&'static FlowKey, &'static mut FlowState)> {
    // SAFETY: an LRU value stays valid for the program run (see `get`).
    let conn = unsafe { TOKENS.get(&token) }?;
    let f = get(conn).filter(|f| f.token == token)?;
    Some((conn, f))
}

/// Maps the joined subflow `sub` to the connection of `token` (its MP_JOIN
/// SYN named it; `peer_opened`: the peer sent that SYN, else the local end,
/// whose window bound it carried: `rcv_wnd_log2`). A retransmitted SYN
/// keeps the existing mapping. True if mapped (now or before).
#[inline(always)]
pub fn map_join(
    sub: &FlowKey,
    token: u32,
    wscale: Option<u8>,
    peer_opened: bool,
    rcv_wnd_log2: u8,
) -> bool {
    let Some((conn, _)) = owner_of(token) else {
        stats::event(FlowStat::JoinTokenUnknown);
        return false;
    };
    if unsafe { JOINS.get(sub) }.is_some_and(|j| j.token == token) {
        return true;
    }
    let j = JoinState {
        conn: *conn,
        token,
        flags: if wscale.is_some() {
            emptcp_common::JOIN_WSCALE_SEEN
        } else {
            0
        } | if peer_opened {
            emptcp_common::JOIN_PEER_OPENED
        } else {
            0
        } | emptcp_common::JOIN_UNCOUNTED,
        rcv_nxt: 0,
        wscale: wscale.unwrap_or(0),
        prio_sent: 0,
        rcv_wnd_log2,
        _pad: 0,
    };
    if JOINS.insert(sub, &j, 0).is_err() {
        stats::event(FlowStat::TokenInsertFailed);
        return false;
    }
    stats::event(FlowStat::JoinsMapped);
    true
}

/// Counts the joined subflow `j` in its connection `f` once its handshake
/// went on past the SYN (`JOIN_UNCOUNTED` cleared): a join the local stack
/// refused or that was never answered leaves nothing to close.
#[inline(always)]
pub fn count_join(j: &mut JoinState, f: &mut FlowState) {
    let bit = (emptcp_common::JOIN_UNCOUNTED as u64) << 32;
    // Counted by the CPU whose update cleared the bit, once.
    if j.flags & emptcp_common::JOIN_UNCOUNTED != 0
        && atomic::fetch_and_u64(join_word(j), !bit) & bit != 0
        && f.joins != u8::MAX
    {
        atomic::add_u64(joins_word(f), 1 << JOINS_SHIFT);
    }
}

/// Byte offset of the 8-aligned word holding `FlowState::joins`, and the
/// shift of `joins` in it: the subflows of one connection open and close
/// on different CPUs (RPS, the egress hook), and a plain read and write
/// of the count lost updates when two met (a leaked join kept the
/// connection alive after its last subflow). The neighbours in the word
/// are plain byte stores that the add never carries into: `joins` stays
/// below 255 (checked before adding) and above 0 (checked before taking).
const JOINS_WORD: usize = core::mem::offset_of!(FlowState, joins) & !7;
const JOINS_SHIFT: u32 = ((core::mem::offset_of!(FlowState, joins) & 7) * 8) as u32;

#[inline(always)]
fn joins_word(f: &mut FlowState) -> *mut u64 {
    (f as *mut FlowState)
        .cast::<u8>()
        .wrapping_add(JOINS_WORD)
        .cast()
}

/// Registers the token of a new connection `key`, unless a live connection
/// under another 4-tuple has it: a token names one connection, and a key
/// chosen to collide must not take the joins of the one that has it.
#[inline(always)]
pub fn map_token(token: u32, key: &FlowKey) {
    if owner_of(token).is_some_and(|(other, _)| other != key) {
        stats::event(FlowStat::TokenInsertFailed);
        return;
    }
    if TOKENS.insert(&token, key, 0).is_err() {
        stats::event(FlowStat::TokenInsertFailed);
    }
}

/// Forgets a connection, its token and its stored options; true if it was
/// tracked. Its `JOINS` mappings are left to age out of the LRU: the token
/// check of [`resolve`] already ignores them.
#[inline(always)]
pub fn remove(key: &FlowKey) -> bool {
    let Some(f) = get(key) else {
        return false;
    };
    let (flags, was_awaiting, token) = (f.flags, awaiting(f), f.token);
    // The entry's own option goes with it.
    let stored = f.stored & !f.held_slot().map_or(0, |slot| 1u32 << slot);
    // Only the CPU whose delete took the entry updates the gauges: two
    // closes of one connection at once (two subflows) both reach here.
    if FLOWS.remove(key).is_err() {
        return false;
    }
    let mut ak = AddrKey {
        flow: *key,
        slot: 0,
    };
    for slot in 0..ADDR_SLOTS {
        if stored & (1 << slot) != 0 {
            ak.slot = slot;
            let _ = FLOW_ADDRS.remove(&ak);
        }
    }
    if flags & FLOW_RECOVER_PENDING != 0 {
        gauge_add(&PENDING, -1);
    }
    if was_awaiting {
        gauge_add(&AWAITING, -1);
    }
    if unsafe { TOKENS.get(&token) }.is_some_and(|k| k == key) {
        let _ = TOKENS.remove(&token);
    }
    true
}

/// Forgets the joined subflow `sub` of connection `c` (`counted` in its
/// `joins`); the connection ends with it when it was the last subflow.
/// True if the connection ended.
#[inline(always)]
pub fn remove_join(sub: &FlowKey, conn: &FlowKey, f: &mut FlowState, counted: bool) -> bool {
    if JOINS.remove(sub).is_ok() && counted && f.joins != 0 {
        atomic::add_u64(joins_word(f), (-(1i64 << JOINS_SHIFT)) as u64);
    }
    f.joins == 0 && f.flags & emptcp_common::FLOW_INITIAL_CLOSED != 0 && remove(conn)
}

/// Where a segment ending at `end` stands against a subflow's `rcv_nxt`.
pub enum Seq {
    /// At or before it (a retransmission, or in order without payload).
    NotAhead,
    /// Past it, inside the local end's largest receive window.
    Ahead,
    /// Further than any window the local end can advertise: not the
    /// peer's (counted `seq_beyond_window`).
    Beyond,
}

/// [`Seq`] of a segment ending at `end`, for a subflow whose local end's
/// window stays below `1 << rcv_wnd_log2` (0: unknown, RFC 7323's largest
/// 2^30). Following any forward segment let a blind sender that knows the
/// 4-tuple move rcv_nxt to a value it chose with one segment in two, and
/// then end the connection with a RST there; with the bound, one in 512 at
/// Linux's default shift of 7.
#[inline(always)]
pub fn seq_of(end: u32, rcv_nxt: u32, rcv_wnd_log2: u8) -> Seq {
    let d = end.wrapping_sub(rcv_nxt);
    if d == 0 || (d as i32) < 0 {
        return Seq::NotAhead;
    }
    let log2 = if rcv_wnd_log2 == 0 {
        30
    } else {
        rcv_wnd_log2.min(30)
    };
    if d > 1u32 << log2 {
        stats::event(FlowStat::SeqBeyondWindow);
        return Seq::Beyond;
    }
    Seq::Ahead
}

/// Delivered addresses of `f` still wait for the stack's confirmation.
#[inline(always)]
pub fn awaiting(f: &FlowState) -> bool {
    awaits(f.stored, f.recovered, f.confirmed)
}

/// [`awaiting`] of the given bit sets.
#[inline(always)]
fn awaits(stored: u32, recovered: u32, confirmed: u32) -> bool {
    recovered & !confirmed & stored != 0
}

/// Adds `d` to a gauge (`PENDING`, `AWAITING`). A decrement of a gauge
/// at 0 is skipped (a connection evicted while counted left it high, and
/// the next removal must not wrap it).
#[inline(always)]
pub fn gauge_add(g: &aya_ebpf::maps::Array<u64>, d: i64) {
    if let Some(p) = g.get_ptr_mut(0) {
        if d < 0 && unsafe { core::ptr::read_volatile(p) } == 0 {
            return;
        }
        atomic::add_u64(p, d as u64);
    }
}

/// A gauge's value.
#[inline(always)]
pub fn gauge(g: &aya_ebpf::maps::Array<u64>) -> u64 {
    g.get(0).copied().unwrap_or(0)
}

/// Sets `FLOW_*` bits atomically (ingress and egress hooks of two CPUs
/// may update one connection's flags at once), if one is missing.
#[inline(always)]
pub fn set_flags(f: &mut FlowState, bits: u32) {
    atomic::set_bits(flags_word(f), f.flags, bits, 0);
}

/// Sets `JOIN_*` bits of a joined subflow atomically, if one is missing:
/// record_flow (receive CPU) and the egress hook (transmit CPU) both
/// write them.
#[inline(always)]
pub fn set_join_flags(j: &mut JoinState, bits: u32) {
    atomic::set_bits(join_word(j), j.flags, bits, 32);
}

/// Clears `JOIN_*` bits atomically, if one is set.
#[inline(always)]
pub fn clear_join_flags(j: &mut JoinState, bits: u32) {
    atomic::clear_bits(join_word(j), j.flags, bits, 32);
}

/// The 8-aligned word of `token` (low half, never changed after the
/// mapping) + `flags` (high half).
#[inline(always)]
fn join_word(j: &mut JoinState) -> *mut u64 {
    (&raw mut j.token).cast()
}

/// The 8-aligned word of `flags` (+ `_flags_hi`).
#[inline(always)]
fn flags_word(f: &mut FlowState) -> *mut u64 {
    (&raw mut f.flags).cast()
}

/// The 8-aligned word of `stored` (low half) + `recovered` (high half).
#[inline(always)]
fn slots_word(f: &mut FlowState) -> *mut u64 {
    (&raw mut f.stored).cast()
}

/// The 8-aligned word of `confirmed` (low half) + `token`.
#[inline(always)]
fn confirmed_word(f: &mut FlowState) -> *mut u64 {
    (&raw mut f.confirmed).cast()
}

/// Slot bit `bit` now holds a new address: stored, not delivered, not
/// confirmed.
#[inline(always)]
fn mark_stored(f: &mut FlowState, bit: u32) {
    atomic::or_u64(slots_word(f), bit as u64);
    atomic::and_u64(slots_word(f), !((bit as u64) << 32));
    atomic::and_u64(confirmed_word(f), !(bit as u64));
}

/// Slot bit `bit` holds nothing any more.
#[inline(always)]
fn clear_slot(f: &mut FlowState, bit: u32) {
    atomic::and_u64(slots_word(f), !((bit as u64) | ((bit as u64) << 32)));
    atomic::and_u64(confirmed_word(f), !(bit as u64));
}

/// Slot bit `bit` was delivered; returns (stored, recovered) before.
#[inline(always)]
fn mark_recovered(f: &mut FlowState, bit: u32) -> (u32, u32) {
    let before = atomic::fetch_or_u64(slots_word(f), (bit as u64) << 32);
    (before as u32, (before >> 32) as u32)
}

/// Slot bit `bit` was confirmed by the local stack; returns `confirmed`
/// before.
#[inline(always)]
fn mark_confirmed(f: &mut FlowState, bit: u32) -> u32 {
    atomic::fetch_or_u64(confirmed_word(f), bit as u64) as u32
}

/// Marks recovery pending (once: the `PENDING` gauge counts connections).
/// Of two CPUs that find the flag clear at once, only the one whose atomic
/// update set it counts (the flag's value before, BPF_FETCH): a plain test
/// then set let both add, and the gauge stayed above 0 for good, the TC
/// recovery then parsing every received packet.
#[inline(always)]
pub fn set_pending(f: &mut FlowState) {
    let bit = FLOW_RECOVER_PENDING as u64;
    if f.flags & FLOW_RECOVER_PENDING == 0 && atomic::fetch_or_u64(flags_word(f), bit) & bit == 0 {
        gauge_add(&PENDING, 1);
    }
}

/// Recovery is no longer pending: the gauge and the event spacing reset.
#[inline(always)]
pub fn clear_pending(f: &mut FlowState) {
    let bit = FLOW_RECOVER_PENDING as u64;
    if f.flags & FLOW_RECOVER_PENDING != 0 && atomic::fetch_and_u64(flags_word(f), !bit) & bit != 0
    {
        gauge_add(&PENDING, -1);
    }
    if f.pending_packets != 0 {
        f.pending_packets = 0;
    }
}

/// Stores the ADD_ADDR `aa` (`len` bytes) with the connection, in the
/// slot of its address id (`id % 16`): a retransmit overwrites its own
/// slot, and two CPUs storing different ids never pick the same slot (no
/// allocation to race on). Ids 16 apart share a slot; the newer replaces
/// the older, as a full ring would. The first option goes into the entry
/// itself (`FlowState::first_addr`), the others into `FLOW_ADDRS`.
#[inline(always)]
pub fn store_add_addr(key: &FlowKey, f: &mut FlowState, aa: &[u8; 32], len: u32) {
    let id = aa[3];
    let slot = id as u32 & (ADDR_SLOTS - 1);
    let bit = 1u32 << slot;
    let dup = f.stored & bit != 0 && f.addr_ids[slot as usize] == id;
    let mut v = StoredAddAddr {
        len: len as u8,
        _pad: 0,
        bytes: [0; ADD_ADDR_MAX_LEN],
    };
    // `aa` holds `len` bytes and zeros after them.
    v.bytes.copy_from_slice(&aa[..ADD_ADDR_MAX_LEN]);
    // A slot stays where it was first stored: one already in the table
    // (the place was taken then) is updated there, never copied into a
    // place freed since, which would leave its table entry behind.
    let in_entry = f.held_addr(slot).is_some() || (f.stored & bit == 0 && claim_first_addr(f));
    if in_entry {
        f.first_addr = v;
    } else if FLOW_ADDRS
        .insert(&AddrKey { flow: *key, slot }, &v, 0)
        .is_err()
    {
        stats::event(FlowStat::AddAddrLost);
        return;
    }
    if dup {
        stats::event(FlowStat::AddAddrDuplicate);
        return;
    }
    let was_awaiting = awaiting(f);
    f.addr_ids[slot as usize] = id;
    // A new address in this slot has not been delivered yet.
    mark_stored(f, bit);
    if was_awaiting && !awaiting(f) {
        gauge_add(&AWAITING, -1);
    }
    stats::event(FlowStat::AddAddrStored);
}

/// Takes the entry's own option place for the caller, if no other slot
/// has it (`FLOW_FIRST_ADDR`, set atomically: one CPU wins).
#[inline(always)]
fn claim_first_addr(f: &mut FlowState) -> bool {
    let bit = FLOW_FIRST_ADDR as u64;
    f.flags & FLOW_FIRST_ADDR == 0 && atomic::fetch_or_u64(flags_word(f), bit) & bit == 0
}

/// The option stored in `slot` of the connection `key` (`f`): in the
/// entry, or in `FLOW_ADDRS` (absent when evicted from there).
#[inline(always)]
pub fn stored_addr<'a>(key: &FlowKey, f: &'a FlowState, slot: u32) -> Option<&'a StoredAddAddr> {
    match f.held_addr(slot) {
        Some(v) => Some(v),
        None => unsafe { FLOW_ADDRS.get(&AddrKey { flow: *key, slot }) },
    }
}

/// Forgets the stored address with id `id` (the peer withdrew it with
/// REMOVE_ADDR); true if one was stored.
#[inline(always)]
pub fn forget_addr(key: &FlowKey, f: &mut FlowState, id: u8) -> bool {
    let slot = id as u32 & (ADDR_SLOTS - 1);
    let bit = 1u32 << slot;
    if f.stored & bit == 0 || f.addr_ids[slot as usize] != id {
        return false;
    }
    if f.held_addr(slot).is_some() {
        // Emptied before the claim goes: a store racing with this one
        // claims a place no reader takes for its slot any more.
        f.first_addr.len = 0;
        atomic::and_u64(flags_word(f), !(FLOW_FIRST_ADDR as u64));
    } else {
        let _ = FLOW_ADDRS.remove(&AddrKey { flow: *key, slot });
    }
    drop_slot(f, bit);
    true
}

/// Slot bit `bit` holds nothing any more (its option withdrawn, or gone
/// from `FLOW_ADDRS`); the `AWAITING` gauge follows if the connection no
/// longer waits for a confirmation.
#[inline(always)]
pub fn drop_slot(f: &mut FlowState, bit: u32) {
    let was_awaiting = awaiting(f);
    clear_slot(f, bit);
    if was_awaiting && !awaiting(f) {
        gauge_add(&AWAITING, -1);
    }
}

/// Deliveries of one address before it is given up (the first + 3
/// retries), and the wait before the first retry (doubled each time):
/// 0.2 + 0.4 + 0.8 s covers a lost carrier and a client RTT of several
/// hundred ms without flooding it.
pub const MAX_ATTEMPTS: u8 = 4;
pub const RETRY_NS: u64 = 200_000_000;

/// What delivery of the connection's stored addresses is due now.
pub enum Due {
    /// Nothing to deliver (none stored, all confirmed, or waiting for a
    /// retry time).
    Nothing,
    /// Deliver `slot`; `retry` if it was delivered before.
    Slot { slot: u32, retry: bool },
}

/// What to deliver at `now`: the lowest stored slot never delivered;
/// else, once the connection's retry time passed, the lowest delivered
/// slot the stack has not confirmed. A slot out of attempts is given up
/// (forgotten, counted).
#[inline(always)]
pub fn due(key: &FlowKey, f: &mut FlowState, now: u64) -> Due {
    // A slot the stack confirmed without a datapath delivery was
    // delivered by user space (the agent): done too.
    let fresh = f.stored & !f.recovered & !f.confirmed;
    if fresh != 0 {
        return Due::Slot {
            slot: lowest(fresh),
            retry: false,
        };
    }
    let waiting = f.stored & !f.confirmed;
    if waiting == 0 || now < f.retry_at_ns {
        return Due::Nothing;
    }
    let slot = lowest(waiting);
    if f.attempts >= MAX_ATTEMPTS {
        let id = f.addr_ids[(slot & (ADDR_SLOTS - 1)) as usize];
        forget_addr(key, f, id);
        f.attempts = 0;
        f.retry_at_ns = 0;
        stats::event(FlowStat::AddAddrGivenUp);
        return Due::Nothing;
    }
    Due::Slot { slot, retry: true }
}

/// The lowest set bit of `v` (not 0), as a slot number.
#[inline(always)]
fn lowest(v: u32) -> u32 {
    let mut slot = 0;
    for i in 0..ADDR_SLOTS {
        if v & (1 << i) != 0 {
            slot = i;
            break;
        }
    }
    slot
}

/// `slot` was delivered at `now` by `via` (`VIA_*`): it waits for the
/// stack's confirmation until the next retry time.
#[inline(always)]
pub fn delivered(f: &mut FlowState, slot: u32, retry: bool, via: u8, now: u64) {
    // The gauge moves on the transition the atomic update made (the
    // delivered bits before it): two CPUs delivering two slots of one
    // connection at once count it once.
    let bit = 1u32 << (slot & 31);
    let (stored, before) = mark_recovered(f, bit);
    let confirmed = f.confirmed;
    if !awaits(stored, before, confirmed) && awaits(stored, before | bit, confirmed) {
        gauge_add(&AWAITING, 1);
    }
    if retry {
        f.add_addr_retried = f.add_addr_retried.saturating_add(1);
        stats::event(FlowStat::AddAddrRetried);
    } else {
        f.attempts = 0;
    }
    f.attempts = f.attempts.saturating_add(1);
    f.retry_at_ns = now + (RETRY_NS << ((f.attempts.saturating_sub(1)) & 7));
    f.recovered_via |= via;
    f.add_addr_recovered = f.add_addr_recovered.saturating_add(1);
}

/// The local stack showed it has the stored address with id `id` (its
/// ADD_ADDR echo, or an MP_JOIN to it): delivered for good, by the
/// datapath or otherwise (the agent, or the peer's own retransmission once
/// the connection passed `remove_below`). True if it was open.
#[inline(always)]
pub fn confirm(f: &mut FlowState, id: u8) -> bool {
    let slot = id as u32 & (ADDR_SLOTS - 1);
    let bit = 1u32 << slot;
    if f.stored & !f.confirmed & bit == 0 || f.addr_ids[slot as usize] != id {
        return false;
    }
    // The gauge moves on the transition the atomic update made (the
    // confirmed bits before it): two CPUs confirming at once count once.
    let before = mark_confirmed(f, bit);
    if before & bit != 0 {
        return false;
    }
    f.attempts = 0;
    f.retry_at_ns = 0;
    let (stored, recovered) = (f.stored, f.recovered);
    if awaits(stored, recovered, before) && !awaits(stored, recovered, before | bit) {
        gauge_add(&AWAITING, -1);
    }
    stats::event(FlowStat::AddAddrConfirmed);
    true
}

/// Anything stored and not confirmed (the metadata's `flow_due` hint: a
/// later step may have work; the exact decision is [`due`]'s).
#[inline(always)]
pub fn open(f: &FlowState) -> bool {
    f.stored & !f.confirmed != 0
}
