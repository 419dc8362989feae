//! Which object a loaded program belongs to, read from the program itself.
//!
//! Every program of the eBPF object references the global `EMPTCP_OBJECT`
//! (ebpf/emptcp-ebpf/src/identity.rs): `EMPTCPID` followed by 8 bytes that
//! apply stamps with the start of the object's sha256 when it loads the
//! object. The kernel keeps that global in the `.rodata` map of the load,
//! listed among each program's maps, so observe can say which object runs
//! behind a link or in a tail-call slot without trusting the pin it was
//! found under or the `META` record. A program without the stamp (loaded by
//! someone else, or by hand) has no object.
use std::io;

use crate::sys;

/// The global every program of the object carries.
pub const GLOBAL: &str = "EMPTCP_OBJECT";
const MAGIC: &[u8; 8] = b"EMPTCPID";
/// `BPF_MAP_TYPE_ARRAY`: the type of the kernel's global-data maps.
const ARRAY: u32 = 2;

/// The object id of an object: the first 16 hex digits of its sha256.
pub fn object_id(sha256_hex: &str) -> String {
    sha256_hex.chars().take(16).collect()
}

/// The value apply writes into `EMPTCP_OBJECT` for the object with this
/// sha256 (hex).
pub fn stamp(sha256_hex: &str) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(MAGIC);
    let id = hex::decode(object_id(sha256_hex)).unwrap_or_default();
    let n = id.len().min(8);
    s[8..8 + n].copy_from_slice(&id[..n]);
    s
}

/// The object id stamped in a global-data value, if it holds the magic and
/// a stamp (all-zero = an unstamped load).
pub fn find_stamp(value: &[u8]) -> Option<String> {
    let at = value.windows(MAGIC.len()).position(|w| w == MAGIC)?;
    let id = value.get(at + 8..at + 16)?;
    (id.iter().any(|b| *b != 0)).then(|| hex::encode(id))
}

/// What a loaded program says about itself: the object it belongs to
/// (`None` when it carries no stamp: not loaded by emptcp) and the maps it
/// uses, by id with the kernel's name of each (at most 15 bytes).
#[derive(Debug, Default)]
pub struct ProgramFacts {
    pub object: Option<String>,
    pub maps: Vec<(u32, String)>,
}

/// The facts of the program with this id; an error when the kernel
/// refuses to say (the program is gone, or no privileges).
pub fn program_facts(prog_id: u32) -> io::Result<ProgramFacts> {
    let prog = sys::prog_by_id(prog_id)?;
    let mut facts = ProgramFacts::default();
    for map_id in sys::prog_map_ids(&prog)? {
        let Ok(map) = sys::map_by_id(map_id) else {
            continue;
        };
        let f = sys::map_facts(&map)?;
        facts.maps.push((map_id, f.name.clone()));
        // Global data: `.rodata` (aya names the map after its section).
        if facts.object.is_some()
            || f.map_type != ARRAY
            || !f.name.starts_with(".rodata")
            || f.key_size != 4
        {
            continue;
        }
        let mut value = vec![0u8; f.value_size as usize];
        sys::map_lookup(&map, &0u32.to_ne_bytes(), &mut value)?;
        facts.object = find_stamp(&value);
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_found_where_it_was_written() {
        let sha = "0123456789abcdef".repeat(4);
        let mut value = vec![7u8; 40];
        value[13..29].copy_from_slice(&stamp(&sha));
        assert_eq!(find_stamp(&value).as_deref(), Some("0123456789abcdef"));
        assert_eq!(object_id(&sha), "0123456789abcdef");
    }

    #[test]
    fn an_unstamped_or_foreign_value_has_no_object() {
        let mut value = vec![0u8; 32];
        value[4..12].copy_from_slice(MAGIC);
        assert_eq!(find_stamp(&value), None);
        assert_eq!(find_stamp(b"no magic here at all"), None);
        // Magic at the very end, stamp cut off.
        assert_eq!(find_stamp(MAGIC), None);
    }
}
