//! The capacities of the tables whose size depends on the policy.
use std::collections::BTreeMap;

use super::{FLOW_ADDRS_MAP, FLOWS_MAP, JOINS_MAP, SUBFLOWS_MAP, SYN_SHIFTS_MAP, TOKENS_MAP};
use crate::{
    object::MapDef,
    policy::{self, Hook, Policy},
};

/// Capacity of a table no chain of the policy fills: the least
/// `flow_capacity` allows (a preallocated LRU table of the default size
/// would lock ~450 MB of kernel memory for the four connection tables).
pub const UNUSED_TABLE_CAPACITY: u32 = policy::MIN_FLOW_CAPACITY;

/// Sizes the tables whose capacity depends on the policy in `maps`, and
/// returns those capacities; `tracks`: the desired state runs
/// `record_flow`, the one action that fills the connection tables. Each table gets its share of
/// `flow_capacity` only while a chain fills it, else
/// [`UNUSED_TABLE_CAPACITY`]: adding the first chain that fills a table
/// then migrates it (empty) to its full size, removing the last one
/// migrates it back (keeping what fits).
pub(super) fn size_tables(
    policy: &Policy,
    tracks: bool,
    maps: &mut BTreeMap<String, MapDef>,
) -> BTreeMap<String, u32> {
    let flows = if tracks {
        policy.settings.flow_capacity
    } else {
        UNUSED_TABLE_CAPACITY
    };
    // Captured subflows: only egress chains fill the table; with one it
    // holds as many subflows as the flow table holds flows, up to the
    // object's default.
    let subflows = if policy.chains.iter().any(|c| c.hook == Hook::Egress) {
        policy.settings.flow_capacity.clamp(
            UNUSED_TABLE_CAPACITY,
            emptcp_common::DEFAULT_SUBFLOW_CAPACITY,
        )
    } else {
        UNUSED_TABLE_CAPACITY
    };
    // The token index holds one entry per connection. Joined subflows and
    // stored ADD_ADDRs are fewer (most connections never join or store
    // one): a quarter of the flow table, the datapath's default ratio.
    let quarter = (flows / 4).max(UNUSED_TABLE_CAPACITY);
    // Handshakes in flight (the window scales of connections the peer
    // opens): a fixed capacity, not a share of the flow table.
    let handshakes = if tracks {
        emptcp_common::SYN_SHIFT_CAPACITY
    } else {
        UNUSED_TABLE_CAPACITY
    };
    let mut overrides = BTreeMap::new();
    for (name, n) in [
        (FLOWS_MAP, flows),
        (TOKENS_MAP, flows),
        (JOINS_MAP, quarter),
        (FLOW_ADDRS_MAP, quarter),
        (SYN_SHIFTS_MAP, handshakes),
        (SUBFLOWS_MAP, subflows),
    ] {
        if let Some(m) = maps.get_mut(name) {
            m.max_entries = n;
            overrides.insert(name.to_string(), n);
        }
    }
    overrides
}
