//! The eBPF object embedded in the binary (built by build.rs), its identity
//! and the map definitions it declares. Pure: parsing needs no kernel, so
//! `plan --state` works offline.
use std::{borrow::Cow, collections::BTreeMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Environment variable naming an object file to load instead of the
/// embedded one (development and upgrade tests).
pub const OBJECT_ENV: &str = "EMPTCP_OBJECT";

static EMBEDDED: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/emptcp"));

/// The object built into this binary (tests derive "rebuilt" objects from it).
pub fn embedded() -> &'static [u8] {
    EMBEDDED
}

/// Name of the entry program (the one attached to interfaces).
pub const ENTRY_PROGRAM: &str = "entry";
/// Name of the TC egress entry program (attached with a TCX link to
/// interfaces with an egress chain).
pub const EGRESS_ENTRY: &str = "egress_entry";
/// Name of the TC ingress program of the in-kernel recovery (attached with
/// a TCX link to interfaces whose chains use `recover_add_addr`).
pub const INGRESS_RECOVER: &str = emptcp_common::INGRESS_RECOVER;

/// Is `program` an action (a chain step), not one of the programs every
/// packet goes through first (the entries and the captures)?
pub fn is_action_program(program: &str) -> bool {
    ![
        ENTRY_PROGRAM,
        EGRESS_ENTRY,
        INGRESS_RECOVER,
        emptcp_common::EGRESS_CAPTURE,
        emptcp_common::INGRESS_CAPTURE,
        emptcp_common::TC_INGRESS_CAPTURE,
        emptcp_common::RECORD_SETUP,
        emptcp_common::TC_ENTRY,
        emptcp_common::TC_RECORD_SETUP,
    ]
    .contains(&program)
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("this binary was built without its eBPF object (AYA_BUILD_SKIP was set)")]
    Missing,
    #[error("cannot read eBPF object {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse eBPF object")]
    Parse(#[from] aya_obj::ParseError),
}

/// `bpf_map_type` values emptcp names (include/uapi/linux/bpf.h).
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// Definition of a map as the kernel reports it, and the fingerprint of
/// its key and value layouts; compared with the pinned map before reuse
/// (aya does not check, see TOOLCHAIN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapDef {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// `emptcp_common::layouts` fingerprint: the object's for a desired
    /// map; for a pinned one, the one recorded when it was created (its
    /// `layouts/` pin). None: no shared struct in it, or not recorded (a
    /// root written before records existed, or a crash before the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<u64>,
}

impl std::fmt::Display for MapDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries, flags {:#x}, layout {}",
            self.map_type,
            self.key_size,
            self.value_size,
            self.max_entries,
            self.flags,
            self.layout
                .map_or_else(|| "not recorded".to_string(), |l| format!("{l:016x}"))
        )
    }
}

impl MapDef {
    /// Whether a pinned map `self` can be reused as `want`: the kernel's
    /// definition is equal and the layouts are, where both are known (an
    /// unrecorded map is taken to have the layout its sizes allow, as
    /// before records existed).
    pub fn reusable_as(&self, want: &MapDef) -> bool {
        let kernel = |d: &MapDef| (d.map_type, d.key_size, d.value_size, d.max_entries, d.flags);
        kernel(self) == kernel(want)
            && (self.layout.is_none() || want.layout.is_none() || self.layout == want.layout)
    }
}

/// The object to load: bytes, hash, programs and map definitions.
pub struct Object {
    pub bytes: Cow<'static, [u8]>,
    pub sha256: String,
    pub programs: Vec<String>,
    pub maps: BTreeMap<String, MapDef>,
}

impl Object {
    /// The embedded object, or the file named by `EMPTCP_OBJECT`.
    pub fn load() -> Result<Object, ObjectError> {
        let bytes: Cow<'static, [u8]> = match std::env::var_os(OBJECT_ENV) {
            Some(p) => Cow::Owned(std::fs::read(&p).map_err(|source| ObjectError::Read {
                path: p.to_string_lossy().into_owned(),
                source,
            })?),
            None => Cow::Borrowed(EMBEDDED),
        };
        Object::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Cow<'static, [u8]>) -> Result<Object, ObjectError> {
        if bytes.is_empty() {
            return Err(ObjectError::Missing);
        }
        let obj = aya_obj::Object::parse(&bytes)?;
        let mut programs: Vec<String> = obj.programs.keys().cloned().collect();
        programs.sort();
        let maps = obj
            .maps
            .iter()
            // .rodata/.bss/.data are rewritten on every load, never pinned.
            .filter(|(name, _)| !name.starts_with('.'))
            .map(|(name, m)| {
                (
                    name.clone(),
                    MapDef {
                        map_type: m.map_type(),
                        key_size: m.key_size(),
                        value_size: m.value_size(),
                        max_entries: m.max_entries(),
                        flags: m.map_flags(),
                        layout: emptcp_common::layouts::map_layout(name)
                            .map(emptcp_common::layouts::MapLayout::fingerprint),
                    },
                )
            })
            .collect();
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(Object {
            bytes,
            sha256,
            programs,
            maps,
        })
    }

    /// Action programs (every program but the entries).
    pub fn action_programs(&self) -> impl Iterator<Item = &str> {
        self.programs
            .iter()
            .map(String::as_str)
            .filter(|p| is_action_program(p))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use emptcp_common::layouts::MAP_LAYOUTS;

    use super::*;

    /// Maps of the object without a layout: no shared struct in them, or
    /// nothing that outlives a packet.
    const NO_LAYOUT: &[&str] = &[
        // Program arrays (the kernel's own value: a program).
        "PROGS",
        "EGRESS_PROGS",
        "TC_PROGS",
        // Ring buffers (records read once by user space).
        "EVENTS",
        "SUBFLOW_EVENTS",
        // u64 counters indexed by an enum (APPEND_ONLY where they grow).
        "STATS",
        "FLOW_STATS",
        "EGRESS_STATS",
        // u64 gauges.
        "AWAITING",
        "PENDING",
        // Per-CPU scratch, written before every read within one packet.
        "NEW_FLOW",
        "XDP_DESC",
        "TC_DESC",
        "SCRATCH",
        "CSUM_SCRATCH",
        "EGRESS_META",
    ];

    #[test]
    fn every_map_of_the_object_has_its_layout_or_needs_none() {
        let o = Object::load().expect("the embedded object");
        for l in MAP_LAYOUTS {
            let d = o
                .maps
                .get(l.map)
                .unwrap_or_else(|| panic!("{} not in the object", l.map));
            assert_eq!(
                (d.key_size as usize, d.value_size as usize),
                (l.key.size, l.value.size),
                "{}: the layout's key/value sizes are not the map's: is its type in MAP_LAYOUTS the one in ebpf/emptcp-ebpf/src/maps.rs?",
                l.map
            );
            assert_eq!(d.layout, Some(l.fingerprint()), "{}", l.map);
        }
        let listed: BTreeSet<&str> = MAP_LAYOUTS
            .iter()
            .map(|l| l.map)
            .chain(NO_LAYOUT.iter().copied())
            .collect();
        for name in o.maps.keys() {
            assert!(
                listed.contains(name.as_str()),
                "map {name} is neither in emptcp_common::layouts::MAP_LAYOUTS nor in NO_LAYOUT: list its key/value layout there (or say why it needs none)"
            );
        }
        for name in NO_LAYOUT {
            assert_eq!(o.maps[*name].layout, None, "{name}");
        }
    }
}
