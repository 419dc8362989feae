//! Observe: read what is live under the bpffs root (our pinned maps,
//! programs and links, the entries we own) and the interfaces of the
//! network namespace. Returns plain data that serializes to a snapshot
//! (`emptcp state export`), so `plan --state` needs no kernel.
//!
//! Contract: read-only, never creates or removes anything.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapInfo},
    programs::ProgramInfo,
};
use emptcp_common::{
    ChainDef, IfaceChains, LpmV4, LpmV6, ObjectMeta, PROG_SLOTS, PortKey, Selector, Thresholds,
};
use serde::{Deserialize, Serialize};

use crate::{
    codec, identity,
    layout::{self, Layout, TcHook},
    netdev::{self, NetDev},
    object::MapDef,
    state::Entries,
    sys,
};

/// Snapshot format version (bumped on incompatible changes).
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedMeta {
    pub layout_version: u32,
    pub object_sha256: String,
    /// The network namespace the root serves (`ObjectMeta::netns`; 0 when
    /// not recorded).
    #[serde(default)]
    pub netns: u32,
    /// That namespace still exists (checked only when it is not the one
    /// observed from).
    #[serde(default)]
    pub netns_exists: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedProg {
    pub id: u32,
    pub tag: String,
    /// The name the kernel knows the program by (the function name, cut to
    /// 15 bytes): a pin holding another program of the same object is told
    /// apart by it.
    #[serde(default)]
    pub kernel_name: String,
    /// Maps the program uses that are not the ones pinned under their
    /// names (the pin holds another map, or the program's map is pinned as
    /// `old-NAME`): what a load interrupted while the object's maps were
    /// being replaced leaves, a program still bound to a retired map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unpinned_maps: Vec<String>,
}

impl ObservedProg {
    /// Whether the kernel's name of the program is `name` (as the kernel
    /// keeps it: at most 15 bytes).
    pub fn is_named(&self, name: &str) -> bool {
        self.kernel_name.as_bytes() == kernel_name(name)
    }
}

/// A program's or map's name as the kernel keeps it: at most 15 bytes.
fn kernel_name(name: &str) -> &[u8] {
    &name.as_bytes()[..name.len().min(15)]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedLink {
    pub id: u32,
    pub prog_id: u32,
    /// 0 when the interface it was attached to is gone.
    pub ifindex: u32,
}

/// Everything observe found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub snapshot_version: u32,
    pub root: PathBuf,
    /// Kernel release the snapshot was taken on (informational).
    #[serde(default)]
    pub kernel: String,
    pub meta: Option<ObservedMeta>,
    /// Inode number of the network namespace observed from (0: unknown).
    #[serde(default)]
    pub netns: u32,
    /// Pinned maps by name (`old-NAME` while a migration is in flight).
    pub maps: BTreeMap<String, MapDef>,
    /// Pinned programs by name.
    pub programs: BTreeMap<String, ObservedProg>,
    /// PROGS slot -> program id.
    pub prog_slots: BTreeMap<u32, u32>,
    /// EGRESS_PROGS slot -> program id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub egress_prog_slots: BTreeMap<u32, u32>,
    /// TC_PROGS slot -> program id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tc_prog_slots: BTreeMap<u32, u32>,
    /// Pinned XDP links by interface name.
    pub links: BTreeMap<String, ObservedLink>,
    /// Pinned TCX egress links by interface name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tc_links: BTreeMap<String, ObservedLink>,
    /// Pinned TCX ingress links (the in-kernel recovery) by interface name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tc_ingress_links: BTreeMap<String, ObservedLink>,
    /// Pinned TCX ingress links of the ingress chains (`ingress_hook: tc`)
    /// by interface name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tc_chain_links: BTreeMap<String, ObservedLink>,
    /// Interfaces of the network namespace.
    pub netdevs: BTreeMap<String, NetDev>,
    /// Entries of the configuration maps.
    pub entries: Entries,
    /// Files under the root that are not part of our layout (never touched).
    pub unknown: Vec<PathBuf>,
    /// Program id -> the object it belongs to (`identity::object_id`), read
    /// from the program itself, for every program pinned, in a slot or
    /// behind a link. A program without the stamp is absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<u32, String>,
    /// File names under `layouts/` (records of map layouts, see
    /// [`Layout::layout_record`]); the ones bound to a pinned map set its
    /// `MapDef::layout`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layout_records: Vec<String>,
}

impl Observed {
    /// The object (sha256) the last finished apply recorded in META; none
    /// before one finished (a load records only the namespace at once).
    pub fn recorded_object(&self) -> Option<&str> {
        self.meta
            .as_ref()
            .map(|m| m.object_sha256.as_str())
            .filter(|s| !s.is_empty())
    }

    /// The object the program with this id belongs to, if it carries one.
    pub fn object_of(&self, prog_id: u32) -> Option<&str> {
        self.objects.get(&prog_id).map(String::as_str)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading pinned {what} {path}: {detail}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error(transparent)]
    Netdev(#[from] netdev::NetdevError),
}

fn pin_err(what: &'static str, path: &Path, e: impl std::fmt::Display) -> ObserveError {
    ObserveError::Pin {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ObserveError + '_ {
    move |source| ObserveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the live state. Missing root = nothing applied yet (not an error).
pub fn observe(layout: &Layout) -> Result<Observed, ObserveError> {
    let mut o = Observed {
        snapshot_version: SNAPSHOT_VERSION,
        root: layout.root.clone(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        netdevs: netdev::list()?,
        netns: crate::netns::current_inode().unwrap_or(0),
        ..Default::default()
    };
    if !layout.root.exists() {
        return Ok(o);
    }
    for name in layout::list(&layout.root).map_err(io_err(&layout.root))? {
        if !matches!(name.as_str(), "maps" | "layouts" | "progs" | "links") {
            o.unknown.push(layout.root.join(name));
        }
    }
    let maps_dir = layout.maps_dir();
    let mut map_ids = BTreeMap::new();
    for name in layout::list(&maps_dir).map_err(io_err(&maps_dir))? {
        let p = maps_dir.join(&name);
        let Some(info) =
            still_pinned(&p, MapInfo::from_pin(&p)).map_err(|e| pin_err("map", &p, e))?
        else {
            continue;
        };
        map_ids.insert(info.id(), name.clone());
        o.maps.insert(
            name,
            MapDef {
                map_type: info.map_type().map(|t| t as u32).unwrap_or(0),
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
                flags: info.map_flags(),
                layout: None,
            },
        );
    }
    read_layout_records(layout, &map_ids, &mut o)?;
    let progs_dir = layout.progs_dir();
    for name in layout::list(&progs_dir).map_err(io_err(&progs_dir))? {
        let p = progs_dir.join(&name);
        let Some(info) =
            still_pinned(&p, ProgramInfo::from_pin(&p)).map_err(|e| pin_err("program", &p, e))?
        else {
            continue;
        };
        o.programs.insert(
            name,
            ObservedProg {
                id: info.id(),
                tag: format!("{:016x}", info.tag()),
                kernel_name: info.name_as_str().unwrap_or_default().to_string(),
                unpinned_maps: Vec::new(),
            },
        );
    }
    o.links = read_links(&layout.xdp_links_dir())?;
    o.tc_links = read_links(&layout.tc_links_dir())?;
    o.tc_ingress_links = read_links(&layout.tc_ingress_links_dir())?;
    o.tc_chain_links = read_links(&layout.tc_chain_links_dir())?;
    read_slots(layout, &mut o)?;
    read_entries(layout, &mut o)?;
    read_objects(&mut o, &map_ids)?;
    Ok(o)
}

/// The object of every program we hold (pins, slots, links), and which
/// maps of a pinned program are not the pinned ones (`map_ids`: the id of
/// each pinned map -> its pin name).
fn read_objects(o: &mut Observed, map_ids: &BTreeMap<u32, String>) -> Result<(), ObserveError> {
    let ids: std::collections::BTreeSet<u32> = o
        .programs
        .values()
        .map(|p| p.id)
        .chain(o.prog_slots.values().copied())
        .chain(o.egress_prog_slots.values().copied())
        .chain(o.tc_prog_slots.values().copied())
        .chain(o.links.values().map(|l| l.prog_id))
        .chain(o.tc_links.values().map(|l| l.prog_id))
        .chain(o.tc_ingress_links.values().map(|l| l.prog_id))
        .chain(o.tc_chain_links.values().map(|l| l.prog_id))
        .collect();
    let mut maps_of = BTreeMap::new();
    for id in ids {
        match identity::program_facts(id) {
            Ok(f) => {
                if let Some(obj) = f.object {
                    o.objects.insert(id, obj);
                }
                maps_of.insert(id, f.maps);
            }
            // Unloaded since it was listed: nothing runs it any more.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                return Err(ObserveError::Pin {
                    what: "program",
                    path: PathBuf::from(format!("id {id}")),
                    detail: e.to_string(),
                });
            }
        }
    }
    let pinned_names: Vec<&String> = o.maps.keys().collect();
    for prog in o.programs.values_mut() {
        let Some(maps) = maps_of.get(&prog.id) else {
            continue;
        };
        prog.unpinned_maps = unpinned_maps(maps, map_ids, &pinned_names);
    }
    Ok(())
}

/// Of the maps a program uses (id, kernel name), those whose pin under
/// their name holds another map: the map is pinned under another name
/// (`old-NAME`), or not at all while `NAME` is. Maps no pin is named after
/// (global data, `.rodata`) are the program's own.
fn unpinned_maps(
    used: &[(u32, String)],
    map_ids: &BTreeMap<u32, String>,
    pinned: &[&String],
) -> Vec<String> {
    let mut out = Vec::new();
    for (id, name) in used {
        let wrong = match map_ids.get(id) {
            Some(pin) => kernel_name(pin) != name.as_bytes(),
            None => pinned.iter().any(|p| kernel_name(p) == name.as_bytes()),
        };
        if wrong {
            out.push(name.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Observed {
    /// The root was last written from another network namespace (one that
    /// is gone, or the plan is refused). Its pinned links are that
    /// namespace's: an ifindex is only unique within a namespace, so such a
    /// link can name the ifindex of one of ours while it is attached (until
    /// the dying namespace is cleaned up, asynchronously) to a device of
    /// the other. None of them is kept.
    pub fn links_of_another_namespace(&self) -> bool {
        self.meta
            .as_ref()
            .is_some_and(|m| m.netns != 0 && self.netns != 0 && m.netns != self.netns)
    }

    /// The pinned TCX links of `hook` by interface name.
    pub fn tc_links_of(&self, hook: TcHook) -> &BTreeMap<String, ObservedLink> {
        match hook {
            TcHook::Egress => &self.tc_links,
            TcHook::Ingress => &self.tc_ingress_links,
            TcHook::IngressChains => &self.tc_chain_links,
        }
    }

    pub fn tc_links_of_mut(&mut self, hook: TcHook) -> &mut BTreeMap<String, ObservedLink> {
        match hook {
            TcHook::Egress => &mut self.tc_links,
            TcHook::Ingress => &mut self.tc_ingress_links,
            TcHook::IngressChains => &mut self.tc_chain_links,
        }
    }
}

/// The pinned links of one directory (XDP or TCX; both report their
/// interface in the same place of `bpf_link_info`).
/// `opened` (the pin `p` listed a moment ago, opened), or None when it
/// failed because the pin is gone: an apply in another process (the
/// daemon healing a link, an unpin) changed the tree between the listing
/// and the open, and the pin is observed as absent, as a listing a moment
/// later would have it. Any other failure stays an error.
fn still_pinned<T, E>(p: &Path, opened: Result<T, E>) -> Result<Option<T>, E> {
    match opened {
        Ok(v) => Ok(Some(v)),
        Err(_) if std::fs::symlink_metadata(p).is_err() => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_links(dir: &Path) -> Result<BTreeMap<String, ObservedLink>, ObserveError> {
    let mut links = BTreeMap::new();
    for name in layout::list(dir).map_err(io_err(dir))? {
        let p = dir.join(&name);
        let Some(fd) = still_pinned(&p, sys::obj_get(&p)).map_err(|e| pin_err("link", &p, e))?
        else {
            continue;
        };
        let f = sys::link_facts(&fd).map_err(|e| pin_err("link", &p, e))?;
        links.insert(
            name,
            ObservedLink {
                id: f.id,
                prog_id: f.prog_id,
                ifindex: f.ifindex,
            },
        );
    }
    Ok(links)
}

/// Binds each layout record to the map it pins, if that map is the
/// record's `<MAP>` or the `old-<MAP>` it was retired to (a record left by
/// a replaced map names an id no pin holds: it binds nothing).
fn read_layout_records(
    layout: &Layout,
    map_ids: &BTreeMap<u32, String>,
    o: &mut Observed,
) -> Result<(), ObserveError> {
    let dir = layout.layouts_dir();
    for name in layout::list(&dir).map_err(io_err(&dir))? {
        let p = dir.join(&name);
        o.layout_records.push(name.clone());
        let Some((map, fingerprint)) = layout::parse_layout_record(&name) else {
            continue;
        };
        // Not a map (not ours to read): bound to nothing, replaced.
        let Ok(info) = MapInfo::from_pin(&p) else {
            continue;
        };
        let Some(pinned_as) = map_ids.get(&info.id()) else {
            continue;
        };
        if (pinned_as == map || pinned_as.strip_prefix(layout::OLD_PREFIX) == Some(map))
            && let Some(def) = o.maps.get_mut(pinned_as)
        {
            def.layout = Some(fingerprint);
        }
    }
    Ok(())
}

fn read_slots(layout: &Layout, o: &mut Observed) -> Result<(), ObserveError> {
    for (map, slots) in [
        ("PROGS", &mut o.prog_slots),
        ("EGRESS_PROGS", &mut o.egress_prog_slots),
        ("TC_PROGS", &mut o.tc_prog_slots),
    ] {
        if !o.maps.contains_key(map) {
            continue;
        }
        let p = layout.map(map);
        let fd = sys::obj_get(&p).map_err(|e| pin_err("map", &p, e))?;
        for slot in 0..PROG_SLOTS {
            if let Some(id) = sys::prog_array_get(&fd, slot).map_err(|e| pin_err("map", &p, e))? {
                slots.insert(slot, id);
            }
        }
    }
    Ok(())
}

/// Opens a pinned map if it exists and has the key/value sizes of `K`/`V`.
/// A map with another layout is left to the planner (it plans a
/// replacement); its entries are not ours to decode.
fn open(layout: &Layout, o: &Observed, name: &str, k: usize, v: usize) -> Option<(PathBuf, Map)> {
    let def = o.maps.get(name)?;
    if def.key_size as usize != k || def.value_size as usize != v {
        return None;
    }
    let p = layout.map(name);
    let md = MapData::from_pin(&p).ok()?;
    Map::from_map_data(md).ok().map(|m| (p, m))
}

macro_rules! each_hash {
    ($layout:expr, $o:expr, $name:literal, $k:ty, $v:ty, |$key:ident, $val:ident| $body:expr) => {
        if let Some((p, m)) = open($layout, $o, $name, size_of::<$k>(), size_of::<$v>()) {
            let map: HashMap<MapData, $k, $v> =
                HashMap::try_from(m).map_err(|e| pin_err("map", &p, e))?;
            for r in map.iter() {
                let ($key, $val) = r.map_err(|e| pin_err("map", &p, e))?;
                $body;
            }
        }
    };
}

fn read_entries(layout: &Layout, o: &mut Observed) -> Result<(), ObserveError> {
    let mut e = Entries::default();
    if let Some((p, m)) = open(layout, o, "CHAINS", 4, size_of::<ChainDef>()) {
        let a: Array<MapData, ChainDef> = Array::try_from(m).map_err(|e| pin_err("map", &p, e))?;
        for (k, v) in codec::chains_in(&a).map_err(|e| pin_err("map", &p, e))? {
            e.chains.insert(k, codec::chain_from_kernel(&v));
        }
    }
    each_hash!(layout, o, "THRESHOLDS", u32, Thresholds, |k, v| e
        .thresholds
        .insert(k, codec::thresholds_from_kernel(&v)));
    each_hash!(layout, o, "SELECTORS", u32, Selector, |k, v| e
        .selectors
        .insert(k, v.flags));
    each_hash!(layout, o, "PORTS", PortKey, u8, |k, _v| e
        .ports
        .insert(codec::port_from_kernel(&k)));
    each_hash!(layout, o, "IFACES", u32, IfaceChains, |k, v| e
        .ifaces
        .insert(k, codec::iface_from_kernel(&v)));
    each_hash!(layout, o, "EGRESS_IFACES", u32, IfaceChains, |k, v| e
        .egress_ifaces
        .insert(k, codec::iface_from_kernel(&v)));
    if let Some((p, m)) = open(layout, o, "SEL_V4", 4 + size_of::<LpmV4>(), 1) {
        let t: LpmTrie<MapData, LpmV4, u8> =
            LpmTrie::try_from(m).map_err(|e| pin_err("map", &p, e))?;
        for r in t.iter() {
            let (k, _) = r.map_err(|e| pin_err("map", &p, e))?;
            e.prefixes
                .extend(codec::prefix_v4_from_kernel(k.prefix_len(), &k.data()));
        }
    }
    if let Some((p, m)) = open(layout, o, "SEL_V6", 4 + size_of::<LpmV6>(), 1) {
        let t: LpmTrie<MapData, LpmV6, u8> =
            LpmTrie::try_from(m).map_err(|e| pin_err("map", &p, e))?;
        for r in t.iter() {
            let (k, _) = r.map_err(|e| pin_err("map", &p, e))?;
            e.prefixes
                .extend(codec::prefix_v6_from_kernel(k.prefix_len(), &k.data()));
        }
    }
    if let Some((p, m)) = open(layout, o, "META", 4, size_of::<ObjectMeta>()) {
        let a: Array<MapData, ObjectMeta> =
            Array::try_from(m).map_err(|e| pin_err("map", &p, e))?;
        let meta = a.get(&0, 0).map_err(|e| pin_err("map", &p, e))?;
        // A load records the namespace at once; the rest is written by the
        // apply's last step (layout 0 and no object until then).
        if meta.layout_version != 0 || meta.netns != 0 {
            let other = meta.netns != 0 && meta.netns != o.netns;
            o.meta = Some(ObservedMeta {
                layout_version: meta.layout_version,
                object_sha256: if meta.object_sha256 == [0; 32] {
                    String::new()
                } else {
                    hex::encode(meta.object_sha256)
                },
                netns: meta.netns,
                netns_exists: !other || crate::netns::exists(meta.netns),
            });
        }
    }
    o.entries = e;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::still_pinned;

    /// A pin that vanished between the listing and the open is absent; a
    /// pin that is there but cannot be opened is an error.
    #[test]
    fn a_pin_gone_since_the_listing_is_absent_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("vb0");
        let r: Result<Option<u32>, &str> = still_pinned(&gone, Err("ENOENT"));
        assert_eq!(r, Ok(None));
        let there = dir.path().join("vb1");
        std::fs::write(&there, b"").unwrap();
        assert_eq!(still_pinned::<u32, _>(&there, Err("EPERM")), Err("EPERM"));
        assert_eq!(still_pinned::<u32, &str>(&there, Ok(7)), Ok(Some(7)));
    }
}
