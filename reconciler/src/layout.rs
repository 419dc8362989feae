//! The pinned layout under the bpffs root. Everything emptcp owns lives
//! here, so "ours" is decided by path, never by guessing from names.
//!
//! ```text
//! <root>/maps/<MAP>        pinned maps (reused on every load)
//! <root>/maps/old-<MAP>    a map being migrated (definition changed)
//! <root>/progs/<prog>      pinned programs of the loaded object
//! <root>/links/xdp/<if>    pinned XDP links (one per interface)
//! <root>/links/tc/<if>     pinned TCX egress links (interfaces with an
//!                          egress chain)
//! ```
use std::path::{Path, PathBuf};

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
    pub fn progs_dir(&self) -> PathBuf {
        self.root.join("progs")
    }
    pub fn xdp_links_dir(&self) -> PathBuf {
        self.root.join("links/xdp")
    }
    pub fn tc_links_dir(&self) -> PathBuf {
        self.root.join("links/tc")
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
    pub fn tc_link(&self, ifname: &str) -> PathBuf {
        self.tc_links_dir().join(ifname)
    }
    /// Every directory of the layout, children before their parent.
    pub fn all_dirs(&self) -> [PathBuf; 5] {
        [
            self.maps_dir(),
            self.progs_dir(),
            self.xdp_links_dir(),
            self.tc_links_dir(),
            self.root.join("links"),
        ]
    }
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
