//! The pinned layout under the bpffs root. Everything emptcp owns lives
//! here, so "ours" is decided by path, never by guessing from names.
//!
//! ```text
//! <root>/maps/<MAP>        pinned maps (reused on every load)
//! <root>/maps/old-<MAP>    a map being migrated (definition changed)
//! <root>/layouts/<MAP>@<fingerprint>
//!                          a second pin of <MAP>: the layout fingerprint
//!                          of its key and value (emptcp_common::layouts),
//!                          recorded when the map was created; bound to the
//!                          map itself, so a replaced map never inherits it
//! <root>/progs/<prog>      pinned programs of the loaded object
//! <root>/links/xdp/<if>    pinned XDP links (one per interface)
//! <root>/links/tc/<if>     pinned TCX egress links (interfaces with an
//!                          egress chain or connection tracking)
//! <root>/links/tc-ingress/<if>
//!                          pinned TCX ingress links of the in-kernel
//!                          recovery (interfaces with recover_add_addr)
//! ```
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The TC hook a TCX link of ours is attached to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcHook {
    /// `egress_entry`: egress chains, connection tracking.
    #[default]
    Egress,
    /// `ingress_recover`: the in-kernel recovery.
    Ingress,
    /// `tc_entry`: the ingress chains of an interface with `ingress_hook:
    /// tc` (TCX ingress, after GRO).
    #[serde(rename = "ingress_chains")]
    IngressChains,
}

impl TcHook {
    pub const ALL: [TcHook; 3] = [TcHook::Egress, TcHook::Ingress, TcHook::IngressChains];

    /// The program the hook's links run.
    pub fn program(self) -> &'static str {
        match self {
            TcHook::Egress => crate::object::EGRESS_ENTRY,
            TcHook::Ingress => crate::object::INGRESS_RECOVER,
            TcHook::IngressChains => emptcp_common::TC_ENTRY,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TcHook::Egress => "egress",
            TcHook::Ingress => "ingress",
            TcHook::IngressChains => "ingress chains",
        }
    }
}

pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/emptcp";
/// bpffs refuses names with a dot, so no hidden-file convention here.
pub const OLD_PREFIX: &str = "old-";

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }
    pub fn layouts_dir(&self) -> PathBuf {
        self.root.join("layouts")
    }
    /// The record of map `map`'s layout `fingerprint`.
    pub fn layout_record(&self, map: &str, fingerprint: u64) -> PathBuf {
        self.layouts_dir()
            .join(layout_record_name(map, fingerprint))
    }
    pub fn progs_dir(&self) -> PathBuf {
        self.root.join("progs")
    }
    pub fn xdp_links_dir(&self) -> PathBuf {
        self.root.join("links/xdp")
    }
    pub fn tc_links_dir(&self) -> PathBuf {
        self.root.join("links/tc")
    }
    pub fn tc_ingress_links_dir(&self) -> PathBuf {
        self.root.join("links/tc-ingress")
    }
    pub fn tc_chain_links_dir(&self) -> PathBuf {
        self.root.join("links/tc-chains")
    }
    /// The directory of the TCX links of `hook`.
    pub fn tc_hook_dir(&self, hook: TcHook) -> PathBuf {
        match hook {
            TcHook::Egress => self.tc_links_dir(),
            TcHook::Ingress => self.tc_ingress_links_dir(),
            TcHook::IngressChains => self.tc_chain_links_dir(),
        }
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }
    pub fn old_map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(format!("{OLD_PREFIX}{name}"))
    }
    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }
    pub fn xdp_link(&self, ifname: &str) -> PathBuf {
        self.xdp_links_dir().join(ifname)
    }
    pub fn tc_link(&self, hook: TcHook, ifname: &str) -> PathBuf {
        self.tc_hook_dir(hook).join(ifname)
    }
    /// Every directory of the layout, children before their parent.
    pub fn all_dirs(&self) -> [PathBuf; 8] {
        [
            self.maps_dir(),
            self.layouts_dir(),
            self.progs_dir(),
            self.xdp_links_dir(),
            self.tc_links_dir(),
            self.tc_ingress_links_dir(),
            self.tc_chain_links_dir(),
            self.root.join("links"),
        ]
    }
}

/// The file name of a layout record: `<MAP>@<fingerprint as 16 hex digits>`
/// (bpffs refuses dots in names).
pub fn layout_record_name(map: &str, fingerprint: u64) -> String {
    format!("{map}@{fingerprint:016x}")
}

/// The map and fingerprint a layout record's file name names.
pub fn parse_layout_record(name: &str) -> Option<(&str, u64)> {
    let (map, hex) = name.rsplit_once('@')?;
    if hex.len() != 16 {
        return None;
    }
    Some((map, u64::from_str_radix(hex, 16).ok()?))
}

/// File names in `dir`, sorted; an absent directory is empty.
pub fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                names.push(e?.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}
