//! How full the connection tables are, for `emptcp status`. They are LRU
//! tables: one near its capacity evicts tracked connections (which then
//! lose what their chain's thresholds do), and one far larger than its
//! contents costs memory and, per packet, cache and TLB misses
//! (docs/policy.md, `flow_capacity`). Read-only.
use serde::Serialize;

use crate::{layout::Layout, sys};

/// The tables sized from `settings.flow_capacity` (docs/datapath.md, "Maps").
pub const CONNECTION_TABLES: [&str; 4] = ["FLOWS", "TOKENS", "JOINS", "FLOW_ADDRS"];

/// From this share of its capacity on, a table is reported as evicting:
/// the kernel's LRU keeps free nodes on per-CPU lists and starts evicting
/// somewhat before the last entry is taken.
pub const NEARLY_FULL: f64 = 0.9;

/// Entries per batch when counting (one `BPF_MAP_LOOKUP_BATCH` each).
const BATCH: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableFill {
    pub name: String,
    /// Entries at the time of reading.
    pub entries: u64,
    /// The table's `max_entries`.
    pub capacity: u32,
}

impl TableFill {
    pub fn nearly_full(&self) -> bool {
        self.entries as f64 >= NEARLY_FULL * f64::from(self.capacity)
    }

    /// Percent of the capacity in use.
    pub fn percent(&self) -> f64 {
        100.0 * self.entries as f64 / f64::from(self.capacity.max(1))
    }
}

/// The fill of each pinned connection table of `layout` (a table not
/// pinned, as before the first apply, is left out).
pub fn connection_tables(layout: &Layout) -> std::io::Result<Vec<TableFill>> {
    let mut out = Vec::new();
    for name in CONNECTION_TABLES {
        let Ok(fd) = sys::obj_get(&layout.map(name)) else {
            continue;
        };
        out.push(TableFill {
            name: name.to_string(),
            entries: sys::map_len(&fd, BATCH)?,
            capacity: sys::map_facts(&fd)?.max_entries,
        });
    }
    Ok(out)
}

/// The text of `emptcp status`: one line per table, and a warning for
/// each table that is nearly full.
pub fn render(out: &mut String, tables: &[TableFill]) {
    use std::fmt::Write as _;
    if tables.is_empty() {
        return;
    }
    let _ = writeln!(out, "connection tables (entries / capacity):");
    for t in tables {
        let _ = writeln!(
            out,
            "  {:<12} {:>9} / {:<9} {:>5.1} %",
            t.name,
            t.entries,
            t.capacity,
            t.percent()
        );
    }
    for t in tables.iter().filter(|t| t.nearly_full()) {
        let _ = writeln!(
            out,
            "WARNING: {} holds {} of {} entries: the LRU evicts tracked connections, which then lose their chain's thresholds; raise settings.flow_capacity (docs/policy.md)",
            t.name, t.entries, t.capacity
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(entries: u64, capacity: u32) -> TableFill {
        TableFill {
            name: "FLOWS".into(),
            entries,
            capacity,
        }
    }

    #[test]
    fn a_table_is_nearly_full_from_nine_tenths_on() {
        assert!(!fill(921, 1024).nearly_full());
        assert!(fill(922, 1024).nearly_full());
        assert!(fill(1024, 1024).nearly_full());
        assert!(!fill(0, 1_000_000).nearly_full());
    }

    #[test]
    fn only_a_nearly_full_table_is_warned_of() {
        let mut s = String::new();
        render(&mut s, &[fill(12, 16384)]);
        assert!(s.contains("FLOWS") && s.contains("12 / 16384"), "{s}");
        assert!(!s.contains("WARNING"), "{s}");
        let mut s = String::new();
        render(&mut s, &[fill(1000, 1024)]);
        assert!(
            s.contains("WARNING: FLOWS holds 1000 of 1024 entries")
                && s.contains("settings.flow_capacity"),
            "{s}"
        );
    }

    #[test]
    fn no_tables_print_nothing() {
        let mut s = String::new();
        render(&mut s, &[]);
        assert!(s.is_empty());
    }
}
