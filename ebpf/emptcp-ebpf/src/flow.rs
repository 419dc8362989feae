//! The flow table: keys from packets, removal with the stored options, and
//! the per-flow ring of ADD_ADDR options (de-duplicated by address id).
use emptcp_common::{
    ADD_ADDR_MAX_LEN, ADDR_SLOTS, AddrKey, FlowKey, FlowStat, FlowState, StoredAddAddr,
};

use crate::{
    maps::{FLOW_ADDRS, FLOWS},
    stats,
};

/// The tracked flow of `key`, if any.
#[inline(always)]
pub fn get(key: &FlowKey) -> Option<&'static mut FlowState> {
    // SAFETY: an LRU value stays valid for the program run; concurrent
    // writers of one flow are rare (RSS keeps a 4-tuple on one CPU) and a
    // race only skews a counter or a stored option.
    FLOWS.get_ptr_mut(key).map(|p| unsafe { &mut *p })
}

/// Forgets a flow and its stored options; true if it was tracked.
#[inline(always)]
pub fn remove(key: &FlowKey) -> bool {
    let Some(f) = get(key) else {
        return false;
    };
    let stored = f.stored;
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
    FLOWS.remove(key).is_ok()
}

/// Stores the ADD_ADDR `aa` (`len` bytes) in the flow's
/// ring. A retransmit (same address id) overwrites its own slot, so the
/// ring never fills with copies; a new id takes the next slot, replacing
/// the oldest when all 16 are used.
#[inline(always)]
pub fn store_add_addr(key: &FlowKey, f: &mut FlowState, aa: &[u8; 32], len: u32) {
    let id = aa[3];
    let mut slot = ADDR_SLOTS;
    for i in 0..ADDR_SLOTS {
        if f.stored & (1 << i) != 0 && f.addr_ids[i as usize] == id {
            slot = i;
            break;
        }
    }
    let dup = slot < ADDR_SLOTS;
    if !dup {
        slot = (f.next_slot as u32) % ADDR_SLOTS;
    }
    let mut v = StoredAddAddr {
        len: len as u8,
        _pad: 0,
        bytes: [0; ADD_ADDR_MAX_LEN],
    };
    // `aa` holds `len` bytes and zeros after them.
    v.bytes.copy_from_slice(&aa[..ADD_ADDR_MAX_LEN]);
    let ak = AddrKey { flow: *key, slot };
    if FLOW_ADDRS.insert(&ak, &v, 0).is_err() {
        stats::event(FlowStat::AddAddrLost);
        return;
    }
    if dup {
        stats::event(FlowStat::AddAddrDuplicate);
        return;
    }
    let bit = 1u32 << slot;
    f.stored |= bit;
    // A new address in this slot has not been re-inserted yet.
    f.recovered &= !bit;
    f.addr_ids[(slot & (ADDR_SLOTS - 1)) as usize] = id;
    f.next_slot = f.next_slot.wrapping_add(1);
    stats::event(FlowStat::AddAddrStored);
}

/// The lowest slot stored and not yet recovered, or `ADDR_SLOTS`.
#[inline(always)]
pub fn next_to_recover(f: &FlowState) -> u32 {
    let due = f.stored & !f.recovered;
    for i in 0..ADDR_SLOTS {
        if due & (1 << i) != 0 {
            return i;
        }
    }
    ADDR_SLOTS
}
