//! The field layout of every shared type that a pinned map keeps, and a
//! fingerprint of it. The kernel reports a map's key and value *sizes* only:
//! a new build that rearranges a value's fields without changing its size
//! would read the entries an older build wrote with the wrong layout. The
//! reconciler records each map's fingerprint when the map is created and
//! compares it with the new build's before reusing the map.
//!
//! Each layout lists the type's fields in offset order; a compile-time check
//! ([`tiles`]) refuses a list that does not cover the type exactly, so a
//! field added, removed, resized or moved without updating the list fails
//! the build instead of leaving the fingerprint stale.
use core::mem::size_of;

use crate::{
    AddrKey, ChainCounters, ChainDef, ChainStep, FlowKey, FlowState, IfaceChains, JoinState, LpmV4,
    LpmV6, ObjectMeta, PortKey, Selector, StoredAddAddr, SubflowState, SynShift, Thresholds,
};

/// One field: its name, byte offset and size, and the layout of the
/// shared type it holds (a struct, or an array of structs), if any.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
    pub inner: Option<&'static TypeLayout>,
}

/// The layout of a key or value type of a pinned map.
#[derive(Debug)]
pub struct TypeLayout {
    pub size: usize,
    /// In offset order, covering every byte (padding included, as fields
    /// named `_...`).
    pub fields: &'static [Field],
}

/// The size of the value behind `_p` (a const way to get a field's size
/// from `addr_of!`).
#[doc(hidden)]
pub const fn pointee_size<T>(_p: *const T) -> usize {
    size_of::<T>()
}

/// `layout!(Type { field, other => INNER_LAYOUT, ... })`: the
/// [`TypeLayout`] of `Type`, checked at compile time to cover it exactly.
macro_rules! layout {
    ($t:ty { $($f:ident $(=> $inner:expr)?),* $(,)? }) => {{
        const L: TypeLayout = TypeLayout {
            size: size_of::<$t>(),
            fields: &[$(Field {
                name: stringify!($f),
                offset: core::mem::offset_of!($t, $f),
                size: {
                    let u = core::mem::MaybeUninit::<$t>::uninit();
                    // SAFETY: only the field's address is taken, never read.
                    pointee_size(unsafe { core::ptr::addr_of!((*u.as_ptr()).$f) })
                },
                inner: layout!(@inner $($inner)?),
            }),*],
        };
        const _: () = assert!(tiles(&L), concat!("the field list of ", stringify!($t), " does not match the type: list every field in offset order"));
        L
    }};
    (@inner) => { None };
    (@inner $inner:expr) => { Some(&$inner) };
}

/// True when the fields follow each other without gap or overlap and end
/// at the type's size.
pub const fn tiles(l: &TypeLayout) -> bool {
    let mut end = 0;
    let mut i = 0;
    while i < l.fields.len() {
        if l.fields[i].offset != end {
            return false;
        }
        end += l.fields[i].size;
        i += 1;
    }
    end == l.size
}

/// A primitive (or array of primitives) key or value: only its size.
const fn plain(size: usize) -> TypeLayout {
    TypeLayout { size, fields: &[] }
}

/// An LPM trie key (`struct bpf_lpm_trie_key_u8`): a u32 prefix length
/// followed by the data layout `$data`.
macro_rules! lpm_key {
    ($data:expr) => {
        TypeLayout {
            size: 4 + $data.size,
            fields: &[
                Field {
                    name: "prefix_len",
                    offset: 0,
                    size: 4,
                    inner: None,
                },
                Field {
                    name: "data",
                    offset: 4,
                    size: $data.size,
                    inner: Some(&$data),
                },
            ],
        }
    };
}

pub const U32: TypeLayout = plain(4);
pub const U8: TypeLayout = plain(1);

pub const CHAIN_STEP: TypeLayout = layout!(ChainStep { action, arg });
pub const CHAIN_DEF: TypeLayout = layout!(ChainDef {
    len,
    _pad,
    steps => CHAIN_STEP,
    name,
});
pub const THRESHOLDS: TypeLayout = layout!(Thresholds {
    remove_below,
    recover_at
});
pub const SELECTOR: TypeLayout = layout!(Selector { flags, _pad });
pub const LPM_V4: TypeLayout = layout!(LpmV4 {
    dir,
    chain,
    addr,
    _pad
});
/// The trie's key: the prefix length in bits, then [`LpmV4`].
pub const LPM_V4_KEY: TypeLayout = lpm_key!(LPM_V4);
pub const LPM_V6: TypeLayout = layout!(LpmV6 {
    dir,
    chain,
    addr,
    _pad
});
/// The trie's key: the prefix length in bits, then [`LpmV6`].
pub const LPM_V6_KEY: TypeLayout = lpm_key!(LPM_V6);
pub const PORT_KEY: TypeLayout = layout!(PortKey {
    chain,
    port,
    dir,
    _pad
});
pub const IFACE_CHAINS: TypeLayout = layout!(IfaceChains {
    n_chains,
    ifindex,
    require,
    flags,
    chains,
    chain_flags,
    ports,
    v4,
    v4_alt,
    remote_ports,
    local_ports,
    name,
});
pub const CHAIN_COUNTERS: TypeLayout = layout!(ChainCounters { packets, bytes });
pub const OBJECT_META: TypeLayout = layout!(ObjectMeta {
    layout_version,
    netns,
    object_sha256
});
pub const FLOW_KEY: TypeLayout = layout!(FlowKey {
    family,
    _pad,
    local_port,
    remote_port,
    local,
    remote,
});
pub const FLOW_STATE: TypeLayout = layout!(FlowState {
    bytes,
    data_ack,
    data_end,
    ack_base,
    end_base,
    retry_at_ns,
    flags,
    _flags_hi,
    stored,
    recovered,
    confirmed,
    token,
    chain,
    ifindex,
    rcv_nxt,
    ack,
    tsval,
    tsecr,
    mark,
    window,
    vlan_tci,
    mac,
    addr_ids,
    rcv_wnd_log2,
    wscale,
    joins,
    attempts,
    add_addr_nopped,
    add_addr_dropped,
    add_addr_recovered,
    pending_packets,
    add_addr_retried,
    prio_sent,
    recovered_via,
    pending_since,
    first_addr => STORED_ADD_ADDR,
});
pub const JOIN_STATE: TypeLayout = layout!(JoinState {
    conn => FLOW_KEY,
    token,
    flags,
    rcv_nxt,
    wscale,
    prio_sent,
    rcv_wnd_log2,
    _pad,
});
pub const SYN_SHIFT: TypeLayout = layout!(SynShift {
    peer,
    flags,
    local_wnd_log2,
    _pad
});
pub const ADDR_KEY: TypeLayout = layout!(AddrKey {
    flow => FLOW_KEY,
    slot
});
pub const STORED_ADD_ADDR: TypeLayout = layout!(StoredAddAddr { len, _pad, bytes });
pub const SUBFLOW_STATE: TypeLayout = layout!(SubflowState {
    data_ack,
    local_key,
    remote_key,
    last_data_tx_ns,
    last_ack_advance_ns,
    last_seen_ns,
    snd_nxt,
    rcv_nxt,
    tsval,
    tsecr,
    chain,
    ifindex,
    flags,
    window,
    vlan_tci,
    mac,
    wscale,
    prio_sent,
    _pad,
    last_rx_data_ns,
    peer_token,
    _pad2,
});

/// A pinned map whose entries outlive a load, with its key and value
/// layouts. Maps not listed hold no shared struct (program arrays, ring
/// buffers, u64 counters and gauges) or only per-packet scratch.
pub struct MapLayout {
    pub map: &'static str,
    pub key: &'static TypeLayout,
    pub value: &'static TypeLayout,
}

pub const MAP_LAYOUTS: &[MapLayout] = &[
    MapLayout {
        map: "CHAINS",
        key: &U32,
        value: &CHAIN_DEF,
    },
    MapLayout {
        map: "THRESHOLDS",
        key: &U32,
        value: &THRESHOLDS,
    },
    MapLayout {
        map: "SELECTORS",
        key: &U32,
        value: &SELECTOR,
    },
    MapLayout {
        map: "SEL_V4",
        key: &LPM_V4_KEY,
        value: &U8,
    },
    MapLayout {
        map: "SEL_V6",
        key: &LPM_V6_KEY,
        value: &U8,
    },
    MapLayout {
        map: "PORTS",
        key: &PORT_KEY,
        value: &U8,
    },
    MapLayout {
        map: "IFACES",
        key: &U32,
        value: &IFACE_CHAINS,
    },
    MapLayout {
        map: "IFACE_SLOTS",
        key: &U32,
        value: &IFACE_CHAINS,
    },
    MapLayout {
        map: "EGRESS_IFACES",
        key: &U32,
        value: &IFACE_CHAINS,
    },
    MapLayout {
        map: "CHAIN_STATS",
        key: &U32,
        value: &CHAIN_COUNTERS,
    },
    MapLayout {
        map: "META",
        key: &U32,
        value: &OBJECT_META,
    },
    MapLayout {
        map: "FLOWS",
        key: &FLOW_KEY,
        value: &FLOW_STATE,
    },
    MapLayout {
        map: "TOKENS",
        key: &U32,
        value: &FLOW_KEY,
    },
    MapLayout {
        map: "JOINS",
        key: &FLOW_KEY,
        value: &JOIN_STATE,
    },
    MapLayout {
        map: "SYN_SHIFTS",
        key: &FLOW_KEY,
        value: &SYN_SHIFT,
    },
    MapLayout {
        map: "FLOW_ADDRS",
        key: &ADDR_KEY,
        value: &STORED_ADD_ADDR,
    },
    MapLayout {
        map: "SUBFLOWS",
        key: &FLOW_KEY,
        value: &SUBFLOW_STATE,
    },
];

/// The layout of map `name`, if it is one of [`MAP_LAYOUTS`].
pub fn map_layout(name: &str) -> Option<&'static MapLayout> {
    MAP_LAYOUTS.iter().find(|m| m.map == name)
}

/// FNV-1a, 64 bit: stable across builds and platforms (a fingerprint is
/// stored in bpffs and compared by a later build).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn word(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// Fingerprint of `l` over its first `len` bytes: the name, offset and
/// size of each named field that ends within them (and its inner layout's
/// fingerprint). Reserved fields (`_...`) do not count, their bytes carry
/// nothing; so the fingerprint of a value's first `n` bytes equals that of
/// an older `n`-byte value when the newer one only appended fields.
fn type_fingerprint(l: &TypeLayout, len: usize, h: &mut Fnv) {
    if l.fields.is_empty() {
        h.word(len.min(l.size) as u64);
        return;
    }
    for f in l.fields {
        if f.name.starts_with('_') || f.offset + f.size > len {
            continue;
        }
        h.bytes(f.name.as_bytes());
        h.word(f.offset as u64);
        h.word(f.size as u64);
        if let Some(inner) = f.inner {
            let mut ih = Fnv::new();
            type_fingerprint(inner, inner.size, &mut ih);
            h.word(ih.0);
        }
    }
}

impl MapLayout {
    /// The fingerprint of the map's key and value layouts.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint_of_value_prefix(self.value.size)
    }

    /// The fingerprint this map would have had with a value of only its
    /// first `value_len` bytes: equal to an older map's fingerprint when
    /// this layout appended fields to that one's value.
    pub fn fingerprint_of_value_prefix(&self, value_len: usize) -> u64 {
        let mut h = Fnv::new();
        type_fingerprint(self.key, self.key.size, &mut h);
        h.word(0xff);
        type_fingerprint(self.value, value_len, &mut h);
        h.0
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{boxed::Box, vec::Vec};

    use super::*;

    #[test]
    fn every_listed_map_has_its_own_fingerprint_per_layout() {
        let flows = map_layout("FLOWS").unwrap();
        assert_ne!(
            flows.fingerprint(),
            map_layout("SUBFLOWS").unwrap().fingerprint()
        );
        // Same key and value types: same fingerprint.
        assert_eq!(
            map_layout("IFACES").unwrap().fingerprint(),
            map_layout("EGRESS_IFACES").unwrap().fingerprint()
        );
    }

    #[test]
    fn a_swap_of_two_same_size_fields_changes_the_fingerprint() {
        static SWAPPED: [Field; 2] = [
            Field {
                name: "tsecr",
                offset: 0,
                size: 4,
                inner: None,
            },
            Field {
                name: "tsval",
                offset: 4,
                size: 4,
                inner: None,
            },
        ];
        static ORIGINAL: [Field; 2] = [
            Field {
                name: "tsval",
                offset: 0,
                size: 4,
                inner: None,
            },
            Field {
                name: "tsecr",
                offset: 4,
                size: 4,
                inner: None,
            },
        ];
        let a = TypeLayout {
            size: 8,
            fields: &ORIGINAL,
        };
        let b = TypeLayout {
            size: 8,
            fields: &SWAPPED,
        };
        let fp = |v: &'static TypeLayout| {
            MapLayout {
                map: "X",
                key: &U32,
                value: v,
            }
            .fingerprint()
        };
        let a: &'static TypeLayout = Box::leak(Box::new(a));
        let b: &'static TypeLayout = Box::leak(Box::new(b));
        assert_ne!(fp(a), fp(b));
    }

    #[test]
    fn appending_fields_keeps_the_fingerprint_of_the_old_prefix() {
        // SubflowState grew from 104 to 112 bytes by appending peer_token,
        // FlowState from 152 to 184 by appending first_addr.
        for (name, value, old_size) in [
            ("SUBFLOWS", &SUBFLOW_STATE, 104),
            ("FLOWS", &FLOW_STATE, 152),
        ] {
            let now = map_layout(name).unwrap();
            let old_fields: Vec<Field> = value
                .fields
                .iter()
                .filter(|f| f.offset + f.size <= old_size)
                .map(|f| Field {
                    name: f.name,
                    offset: f.offset,
                    size: f.size,
                    inner: f.inner,
                })
                .collect();
            let old = TypeLayout {
                size: old_size,
                fields: Box::leak(old_fields.into_boxed_slice()),
            };
            let old = MapLayout {
                map: name,
                key: &FLOW_KEY,
                value: Box::leak(Box::new(old)),
            };
            assert_eq!(
                now.fingerprint_of_value_prefix(old_size),
                old.fingerprint(),
                "{name}"
            );
            assert_ne!(now.fingerprint(), old.fingerprint(), "{name}");
        }
    }
}
