//! Apply: execute a plan's steps in order through aya, with all kernel I/O
//! in the one `execute` match. Each step is idempotent (re-running a step
//! that already happened is harmless; deleting what is gone is fine), so a
//! process killed between two steps leaves a state the next plan converges
//! from.
mod lock;
mod parallel;

use std::{
    collections::BTreeMap,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::Command,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, ProgramArray, lpm_trie::Key},
    programs::{
        LinkOrder, Program, ProgramError, ProgramInfo, SchedClassifier, TcAttachType, Xdp,
        XdpMode as AyaXdpMode, links::FdLink, tc::TcAttachOptions,
    },
};
use emptcp_common::{LAYOUT_VERSION, ObjectMeta, Selector};
pub use lock::{Lock, LockError, acquire as lock};

use crate::{
    codec::{self, LpmKey},
    desired::XdpMode,
    layout::{Layout, TcHook},
    netdev::AttachMode,
    object::{ENTRY_PROGRAM, Object},
    plan::{Plan, Step},
    sys,
};

/// Test hook: `EMPTCP_TEST_KILL_AFTER_STEP=N` SIGKILLs this process right
/// after step N (1-based), to prove crash-convergence at every boundary.
pub const KILL_AFTER_ENV: &str = "EMPTCP_TEST_KILL_AFTER_STEP";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("step {index} ({step})")]
    Step {
        index: usize,
        step: String,
        #[source]
        source: Box<StepError>,
    },
    #[error(
        "the saved plan is stale: the live state changed since it was made (plan {planned}, live {live}); run `emptcp plan` again"
    )]
    Stale { planned: String, live: String },
    #[error(
        "the saved plan was made for eBPF object {planned}, but this binary carries {have}; re-plan with this binary"
    )]
    ObjectMismatch { planned: String, have: String },
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("map operation failed")]
    Map(#[from] MapError),
    /// A program failed to load or attach; verifier logs are shortened to
    /// their tail (the full log is logged at debug level).
    #[error("{0}")]
    Program(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Creates a layout directory (and missing parents) mode 0700: only the
/// applying user may list or change what is pinned there.
fn create_private(d: &Path) -> Result<(), StepError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)
        .map_err(io("creating", d))
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> StepError + 'p {
    move |source| StepError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Keeps the first line and the last lines of a verifier log: the tail says
/// why the program was rejected, the rest is thousands of lines.
fn shorten(full: String) -> String {
    const TAIL: usize = 25;
    let Some(at) = full.find("Verifier output:") else {
        return full;
    };
    tracing::debug!(verifier_log = %full, "full verifier log");
    let lines: Vec<&str> = full[at..].lines().collect();
    if lines.len() <= TAIL + 1 {
        return full;
    }
    format!(
        "{}Verifier output (last {TAIL} of {} lines; EMPTCP_LOG=debug shows all):\n{}",
        &full[..at],
        lines.len(),
        lines[lines.len() - TAIL..].join("\n")
    )
}

impl From<ProgramError> for StepError {
    fn from(e: ProgramError) -> Self {
        StepError::Program(shorten(e.to_string()))
    }
}

impl From<aya::EbpfError> for StepError {
    fn from(e: aya::EbpfError) -> Self {
        StepError::Program(shorten(format!("loading the eBPF object: {e}")))
    }
}

fn is_enoent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Executes plans against one bpffs root.
pub struct Applier<'a> {
    layout: &'a Layout,
    object: &'a Object,
    /// The object loaded by a `LoadObject` step of this run, if any.
    loaded: Option<Ebpf>,
    kill_after: Option<usize>,
}

impl<'a> Applier<'a> {
    pub fn new(layout: &'a Layout, object: &'a Object) -> Applier<'a> {
        Applier {
            layout,
            object,
            loaded: None,
            kill_after: std::env::var(KILL_AFTER_ENV)
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    /// Runs every step in order; stops at the first failure.
    pub fn apply(&mut self, plan: &Plan) -> Result<usize, ApplyError> {
        if !plan.object_sha256.is_empty() && plan.object_sha256 != self.object.sha256 {
            return Err(ApplyError::ObjectMismatch {
                planned: plan.object_sha256.clone(),
                have: self.object.sha256.clone(),
            });
        }
        for (i, step) in plan.steps.iter().enumerate() {
            tracing::debug!(step = i + 1, "{}", crate::plan::describe(step));
            self.execute(step).map_err(|source| ApplyError::Step {
                index: i + 1,
                step: crate::plan::describe(step),
                source: Box::new(source),
            })?;
            if self.kill_after == Some(i + 1) {
                // A crash between two steps, for the crash tests: SIGKILL
                // on ourselves never returns.
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            }
        }
        Ok(plan.steps.len())
    }

    fn map(&self, name: &str) -> Result<Map, StepError> {
        let p = self.layout.map(name);
        let md = MapData::from_pin(&p)?;
        Ok(Map::from_map_data(md)?)
    }

    fn hash<K: aya::Pod, V: aya::Pod>(
        &self,
        name: &str,
    ) -> Result<HashMap<MapData, K, V>, StepError> {
        Ok(HashMap::try_from(self.map(name)?)?)
    }

    fn chains(&self) -> Result<aya::maps::Array<MapData, emptcp_common::ChainDef>, StepError> {
        Ok(aya::maps::Array::try_from(self.map("CHAINS")?)?)
    }

    /// Writes (or, with `None`, clears) interface `ifindex`'s slot of the
    /// `IFACE_SLOTS` cache, unless another interface holds the slot: that
    /// one keeps it and this one is found through the `IFACES` hash.
    fn put_slot(
        &self,
        ifindex: u32,
        v: Option<emptcp_common::IfaceChains>,
    ) -> Result<(), StepError> {
        let mut slots: aya::maps::Array<_, emptcp_common::IfaceChains> =
            aya::maps::Array::try_from(self.map("IFACE_SLOTS")?)?;
        let slot = ifindex % emptcp_common::IFACE_SLOTS;
        let held = slots.get(&slot, 0)?;
        if held.in_use() && held.ifindex != ifindex {
            return Ok(());
        }
        slots.set(slot, v.unwrap_or(emptcp_common::IfaceChains::EMPTY), 0)?;
        Ok(())
    }

    /// The fd of a program: from this run's load if it loaded it, else
    /// from its pin.
    fn prog_fd(&self, name: &str) -> Result<aya::programs::ProgramFd, StepError> {
        if let Some(ebpf) = &self.loaded
            && let Some(Ok(fd)) = ebpf.program(name).map(|p| p.fd())
        {
            return fd.try_clone().map_err(io("cloning fd of", Path::new(name)));
        }
        Ok(ProgramInfo::from_pin(self.layout.prog(name))?.fd()?)
    }

    fn execute(&mut self, step: &Step) -> Result<(), StepError> {
        use Step::*;
        match step {
            RetireMap { name, .. } => {
                let from = self.layout.map(name);
                if from.exists() {
                    let to = self.layout.old_map(name);
                    std::fs::rename(&from, &to).map_err(io("retiring map", &from))?;
                }
            }
            LoadObject {
                max_entries,
                programs,
                ..
            } => self.load(max_entries, programs)?,
            RecordLayouts { records } => self.record_layouts(records)?,
            CopyMap { name } => {
                let old = self.layout.old_map(name);
                if old.exists() {
                    let from = sys::obj_get(&old).map_err(io("opening", &old))?;
                    let new = self.layout.map(name);
                    let to = sys::obj_get(&new).map_err(io("opening", &new))?;
                    let info = aya::maps::MapInfo::from_pin(&new)?;
                    let n = sys::copy_entries(
                        &from,
                        &to,
                        info.key_size() as usize,
                        info.value_size() as usize,
                    )
                    .map_err(io("copying entries into", &new))?;
                    tracing::info!(map = %name, entries = n, "migrated map entries");
                }
            }
            SetSlot { action, slot, .. } => {
                let fd = self.prog_fd(action)?;
                let mut progs = ProgramArray::try_from(self.map("PROGS")?)?;
                progs.set(*slot, &fd, 0)?;
            }
            SetEgressSlot { program, slot, .. } => {
                let fd = self.prog_fd(program)?;
                let mut progs = ProgramArray::try_from(self.map("EGRESS_PROGS")?)?;
                progs.set(*slot, &fd, 0)?;
            }
            SetTcSlot { program, slot, .. } => {
                let fd = self.prog_fd(program)?;
                let mut progs = ProgramArray::try_from(self.map("TC_PROGS")?)?;
                progs.set(*slot, &fd, 0)?;
            }
            ClearSlot { slot, .. } | ClearEgressSlot { slot, .. } | ClearTcSlot { slot, .. } => {
                let map = match step {
                    ClearSlot { .. } => "PROGS",
                    ClearEgressSlot { .. } => "EGRESS_PROGS",
                    _ => "TC_PROGS",
                };
                let mut progs = ProgramArray::try_from(self.map(map)?)?;
                match progs.clear_index(slot) {
                    Err(e) if !is_enoent(&e) => return Err(e.into()),
                    _ => {}
                }
            }
            PutThresholds { id, after, .. } => {
                self.hash::<u32, emptcp_common::Thresholds>("THRESHOLDS")?
                    .insert(id, codec::thresholds_to_kernel(after), 0)?;
            }
            PutChain { id, after, .. } => {
                self.chains()?.set(*id, codec::chain_to_kernel(after), 0)?;
            }
            PutSelector { id, after, .. } => {
                let sel = Selector {
                    flags: *after,
                    _pad: 0,
                };
                self.hash::<u32, Selector>("SELECTORS")?
                    .insert(id, sel, 0)?;
            }
            PutPrefix { entry, .. } => match codec::prefix_to_kernel(entry) {
                LpmKey::V4(len, data) => {
                    let mut t: LpmTrie<MapData, emptcp_common::LpmV4, u8> =
                        LpmTrie::try_from(self.map("SEL_V4")?)?;
                    t.insert(&Key::new(len, data), 1, 0)?;
                }
                LpmKey::V6(len, data) => {
                    let mut t: LpmTrie<MapData, emptcp_common::LpmV6, u8> =
                        LpmTrie::try_from(self.map("SEL_V6")?)?;
                    t.insert(&Key::new(len, data), 1, 0)?;
                }
            },
            DeletePrefix { entry, .. } => {
                let r = match codec::prefix_to_kernel(entry) {
                    LpmKey::V4(len, data) => {
                        let mut t: LpmTrie<MapData, emptcp_common::LpmV4, u8> =
                            LpmTrie::try_from(self.map("SEL_V4")?)?;
                        t.remove(&Key::new(len, data))
                    }
                    LpmKey::V6(len, data) => {
                        let mut t: LpmTrie<MapData, emptcp_common::LpmV6, u8> =
                            LpmTrie::try_from(self.map("SEL_V6")?)?;
                        t.remove(&Key::new(len, data))
                    }
                };
                ok_if_gone(r)?;
            }
            PutPorts { entries, .. } => {
                let mut m = self.hash::<emptcp_common::PortKey, u8>("PORTS")?;
                for p in entries {
                    m.insert(codec::port_to_kernel(p), 1, 0)?;
                }
            }
            DeletePorts { entries, .. } => {
                let mut m = self.hash::<emptcp_common::PortKey, u8>("PORTS")?;
                for p in entries {
                    ok_if_gone(m.remove(&codec::port_to_kernel(p)))?;
                }
            }
            PutIface { ifindex, after, .. } => {
                let v = codec::iface_to_kernel(*ifindex, after);
                // The slot cache first: after a crash between the two
                // writes the hash still differs from the policy, so the
                // next plan repeats this step and both agree again.
                self.put_slot(*ifindex, Some(v))?;
                self.hash::<u32, emptcp_common::IfaceChains>("IFACES")?
                    .insert(ifindex, v, 0)?;
            }
            PutEgressIface { ifindex, after, .. } => {
                let v = codec::iface_to_kernel(*ifindex, after);
                self.hash::<u32, emptcp_common::IfaceChains>("EGRESS_IFACES")?
                    .insert(ifindex, v, 0)?;
            }
            DeleteEgressIface { ifindex, .. } => {
                ok_if_gone(
                    self.hash::<u32, emptcp_common::IfaceChains>("EGRESS_IFACES")?
                        .remove(ifindex),
                )?;
            }
            DeleteIface { ifindex, .. } => {
                self.put_slot(*ifindex, None)?;
                ok_if_gone(
                    self.hash::<u32, emptcp_common::IfaceChains>("IFACES")?
                        .remove(ifindex),
                )?;
            }
            DeleteSelector { id, .. } => {
                ok_if_gone(self.hash::<u32, Selector>("SELECTORS")?.remove(id))?;
            }
            DeleteThresholds { id, .. } => {
                ok_if_gone(
                    self.hash::<u32, emptcp_common::Thresholds>("THRESHOLDS")?
                        .remove(id),
                )?;
            }
            DeleteChain { id, .. } => {
                self.chains()?.set(*id, codec::NO_CHAIN, 0)?;
            }
            DetachForeign {
                iface,
                prog_id,
                mode,
                ..
            } => detach_foreign(iface, *prog_id, *mode)?,
            Attach {
                iface,
                ifindex,
                mode,
            } => self.attach(iface, *ifindex, *mode)?,
            AttachTc {
                iface,
                ifindex,
                hook,
            } => self.attach_tc(iface, *ifindex, *hook)?,
            UpdateLink { iface, .. } | UpdateTcLink { iface, .. } => {
                let (pin, prog) = match step {
                    UpdateTcLink { hook, .. } => {
                        (self.layout.tc_link(*hook, iface), hook.program())
                    }
                    _ => (self.layout.xdp_link(iface), ENTRY_PROGRAM),
                };
                let link = sys::obj_get(&pin).map_err(io("opening link", &pin))?;
                let prog = self.prog_fd(prog)?;
                sys::link_update(&link, prog.as_fd()).map_err(io("bpf_link_update on", &pin))?;
            }
            Detach { iface, .. } | DetachTc { iface, .. } => {
                let pin = match step {
                    DetachTc { hook, .. } => self.layout.tc_link(*hook, iface),
                    _ => self.layout.xdp_link(iface),
                };
                if let Ok(link) = sys::obj_get(&pin) {
                    // Detach even if someone else holds an fd of the link;
                    // a link whose interface is gone reports ENOLINK: fine.
                    let _ = sys::link_detach(&link);
                }
                remove_if_present(&pin)?;
            }
            Unpin { path, .. } => remove_if_present(&self.layout.root.join(path))?,
            RemoveRoot { .. } => {
                for d in self.layout.all_dirs().iter().chain([&self.layout.root]) {
                    match std::fs::remove_dir(d) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(StepError::Io {
                                what: "removing",
                                path: d.clone(),
                                source: e,
                            });
                        }
                        _ => {}
                    }
                }
            }
            WriteMeta { object_sha256 } => {
                let mut sha = [0u8; 32];
                hex::decode_to_slice(object_sha256, &mut sha)
                    .map_err(|e| StepError::Other(format!("bad object hash: {e}")))?;
                let mut a: Array<MapData, ObjectMeta> = Array::try_from(self.map("META")?)?;
                a.set(
                    0,
                    ObjectMeta {
                        layout_version: LAYOUT_VERSION,
                        // The namespace this apply runs in (after --netns).
                        netns: crate::netns::current_inode().unwrap_or(0),
                        object_sha256: sha,
                    },
                    0,
                )?;
            }
        }
        Ok(())
    }

    /// Loads the object with every map pinned under maps/ (existing pins are
    /// reused, so their contents survive), verifies and pins each of
    /// `programs` (the object's others are not loaded).
    fn load(
        &mut self,
        max_entries: &BTreeMap<String, u32>,
        programs: &[String],
    ) -> Result<(), StepError> {
        for d in self.layout.all_dirs() {
            create_private(&d)?;
        }
        let names: Vec<String> = self.object.maps.keys().cloned().collect();
        let paths: Vec<PathBuf> = names.iter().map(|n| self.layout.map(n)).collect();
        // aya's loader reads and parses the kernel's BTF (5 MB) when it is
        // made, though this object has no CO-RE relocation to use it for:
        // on a thread of its own, while the kernel allocates the tables.
        let (loader, tables) = std::thread::scope(|s| {
            let loader = s.spawn(EbpfLoader::new);
            let tables = self.create_big_tables(max_entries);
            (loader.join(), tables)
        });
        tables?;
        let mut loader =
            loader.map_err(|_| StepError::Other("the BTF-reading thread panicked".into()))?;
        // Every program carries the object's identity (crate::identity):
        // observe reads it back to tell what runs, whatever the pins say.
        let stamp = crate::identity::stamp(&self.object.sha256);
        loader.override_global(crate::identity::GLOBAL, &stamp, true);
        for (n, p) in names.iter().zip(&paths) {
            loader.map_pin_path(n.as_str(), p.as_path());
        }
        for (n, size) in max_entries {
            loader.map_max_entries(n.as_str(), *size);
        }
        let mut ebpf = loader.load(&self.object.bytes)?;
        claim_namespace(&mut ebpf)?;
        // The kernel verifies each program in the thread that loads it, and
        // verification is most of an apply's time: load on every CPU.
        let todo: Vec<(String, &mut Program)> = ebpf
            .programs_mut()
            .filter(|(n, _)| programs.iter().any(|p| p == n))
            .map(|(n, p)| (n.to_string(), p))
            .collect();
        if todo.len() != programs.len() {
            let missing: Vec<&str> = programs
                .iter()
                .map(String::as_str)
                .filter(|p| !todo.iter().any(|(n, _)| n == p))
                .collect();
            return Err(StepError::Other(format!(
                "the object has no program {} (a plan made for another build?)",
                missing.join(", ")
            )));
        }
        let layout = self.layout;
        parallel::longest_first(
            todo,
            |(n, _)| u64::from(program_weight(n)),
            |(name, prog)| load_and_pin(layout, &name, prog),
            "a loader thread",
        )?;
        self.loaded = Some(ebpf);
        Ok(())
    }

    /// Pins each map a second time as `layouts/<MAP>@<fingerprint>` (see
    /// [`crate::layout`]): the record is bound to the map object, so a map
    /// replaced later never carries it.
    fn record_layouts(&self, records: &BTreeMap<String, u64>) -> Result<(), StepError> {
        create_private(&self.layout.layouts_dir())?;
        for (map, fingerprint) in records {
            let from = self.layout.map(map);
            let fd = sys::obj_get(&from).map_err(io("opening", &from))?;
            let record = self.layout.layout_record(map, *fingerprint);
            remove_if_present(&record)?;
            sys::obj_pin(&fd, &record).map_err(io("pinning layout record", &record))?;
        }
        Ok(())
    }

    /// Creates and pins, on every CPU (the largest first), the hash tables
    /// of the object that preallocate more than [`BIG_TABLE`] bytes and
    /// are not pinned yet; aya's load then finds them pinned and reuses
    /// them. aya creates maps one after the other, and at the default
    /// sizing the four connection tables (~450 MB preallocated) took
    /// ~130 ms of an apply, FLOWS alone ~65 ms.
    fn create_big_tables(&self, max_entries: &BTreeMap<String, u32>) -> Result<(), StepError> {
        let big: Vec<(String, crate::object::MapDef)> = self
            .object
            .maps
            .iter()
            .map(|(n, d)| {
                let mut d = *d;
                if let Some(m) = max_entries.get(n) {
                    d.max_entries = *m;
                }
                (n.clone(), d)
            })
            .filter(|(n, d)| {
                matches!(
                    d.map_type,
                    crate::object::BPF_MAP_TYPE_HASH | crate::object::BPF_MAP_TYPE_LRU_HASH
                ) && preallocated(d) >= BIG_TABLE
                    && !self.layout.map(n).exists()
            })
            .collect();
        let layout = self.layout;
        parallel::longest_first(
            big,
            |(_, d)| preallocated(d),
            |(name, def)| {
                let path = layout.map(&name);
                let fd = crate::sys::map_create(&def, &name)
                    .map_err(io("creating map", Path::new(&name)))?;
                crate::sys::obj_pin(&fd, &path).map_err(io("pinning map", &path))
            },
            "a map-creating thread",
        )
    }

    fn attach(&mut self, iface: &str, ifindex: u32, mode: XdpMode) -> Result<(), StepError> {
        let pin = self.layout.xdp_link(iface);
        if let Some(d) = pin.parent() {
            create_private(d)?;
        }
        // A pin left by a crash between attach and pin cannot exist (an
        // unpinned link dies with its process), so a pin here is stale.
        remove_if_present(&pin)?;
        let mut prog = Xdp::from_pin(
            self.layout.prog(ENTRY_PROGRAM),
            aya_obj::programs::XdpAttachType::Interface,
        )?;
        let aya_mode = match mode {
            XdpMode::Auto => AyaXdpMode::Default,
            XdpMode::Native => AyaXdpMode::Driver,
            XdpMode::Skb => AyaXdpMode::Skb,
        };
        let id = prog.attach_to_if_index(ifindex, aya_mode)?;
        let link = prog.take_link(id)?;
        let fd_link = FdLink::try_from(link).map_err(|e| {
            StepError::Other(format!(
                "{iface}: the kernel refused a bpf_link for XDP ({e}); emptcp needs link-based attach (Linux >= 5.9)"
            ))
        })?;
        fd_link
            .pin(&pin)
            .map_err(|e| StepError::Other(format!("pinning link {}: {e}", pin.display())))?;
        Ok(())
    }
}

impl Applier<'_> {
    /// Attaches the program of `hook` (`egress_entry`, `ingress_recover`,
    /// `tc_entry`)
    /// to that TC hook of `iface` with a TCX link and pins the link.
    fn attach_tc(&mut self, iface: &str, ifindex: u32, hook: TcHook) -> Result<(), StepError> {
        let pin = self.layout.tc_link(hook, iface);
        if let Some(d) = pin.parent() {
            create_private(d)?;
        }
        // As for XDP: a pin here is stale (an unpinned link dies with us).
        remove_if_present(&pin)?;
        // aya attaches by name; make sure the name still is the interface
        // the plan saw (one ioctl: listing every link with `ip` cost ~5 ms
        // per attach).
        let now = nix::net::if_::if_nametoindex(iface).ok();
        if now != Some(ifindex) {
            return Err(StepError::Other(format!(
                "{iface}: interface changed since the plan (ifindex {ifindex} -> {now:?}); plan again"
            )));
        }
        let mut prog = SchedClassifier::from_pin(self.layout.prog(hook.program()))?;
        let at = match hook {
            TcHook::Egress => TcAttachType::Egress,
            TcHook::Ingress | TcHook::IngressChains => TcAttachType::Ingress,
        };
        let id = prog
            .attach_with_options(iface, at, TcAttachOptions::TcxOrder(LinkOrder::default()))
            .map_err(|e| {
                StepError::Other(format!(
                    "{iface}: attaching the TC {} program {} with a TCX link failed ({}); emptcp needs TCX (Linux >= 6.6)",
                    hook.as_str(),
                    hook.program(),
                    shorten(e.to_string())
                ))
            })?;
        let link = prog.take_link(id)?;
        let fd_link = FdLink::try_from(link)
            .map_err(|e| StepError::Other(format!("{iface}: TCX link is not an fd link: {e}")))?;
        fd_link
            .pin(&pin)
            .map_err(|e| StepError::Other(format!("pinning link {}: {e}", pin.display())))?;
        Ok(())
    }
}

/// Bytes a hash table of `d` preallocates for its keys and values.
fn preallocated(d: &crate::object::MapDef) -> u64 {
    u64::from(d.max_entries) * u64::from(d.key_size + d.value_size)
}

/// Preallocated bytes from which a hash table is created before aya's load,
/// beside the others ([`Applier::create_big_tables`]).
const BIG_TABLE: u64 = 16 << 20;

/// Load time of a program (verification and JIT), in ms of one CPU: its
/// `BPF_PROG_LOAD` in an apply on 2 vCPU AMD EPYC, kernel 6.18 (strace -T;
/// docs/datapath.md "Verifier notes" lists the verified instructions). The
/// loader threads take the longest first ([`parallel::longest_first`]); only the
/// order matters, and a program not listed is light.
fn program_weight(name: &str) -> u32 {
    // A TC ingress variant verifies like its XDP twin (the same code).
    let name = name.strip_prefix(emptcp_common::TC_PREFIX).unwrap_or(name);
    match name {
        "egress_entry" => 80,
        "ingress_capture" => 75,
        "entry" => 68,
        "record_flow_setup" => 18,
        "record_flow" => 17,
        "strip_add_addr" => 9,
        "recover_add_addr" | "egress_capture" => 8,
        "ingress_recover" | "set_backup" => 6,
        _ => 1,
    }
}

/// Loads (verifies) one program and pins it: beside, then renamed over the
/// old pin, so the path always names a complete program.
fn load_and_pin(layout: &Layout, name: &str, prog: &mut Program) -> Result<(), StepError> {
    let tmp = layout.progs_dir().join(format!("new-{name}"));
    remove_if_present(&tmp)?;
    let pinned = match prog {
        Program::Xdp(p) => {
            p.load()?;
            p.pin(&tmp)
        }
        Program::SchedClassifier(p) => {
            p.load()?;
            p.pin(&tmp)
        }
        _ => {
            return Err(StepError::Other(format!(
                "program {name} has a type emptcp does not load"
            )));
        }
    };
    pinned.map_err(|e| StepError::Other(format!("pinning {}: {e}", tmp.display())))?;
    let dst = layout.prog(name);
    std::fs::rename(&tmp, &dst).map_err(io("pinning", &dst))?;
    Ok(())
}

fn ok_if_gone(r: Result<(), MapError>) -> Result<(), StepError> {
    match r {
        Err(e) if !is_enoent(&e) => Err(e.into()),
        _ => Ok(()),
    }
}

fn remove_if_present(p: &Path) -> Result<(), StepError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StepError::Io {
            what: "removing",
            path: p.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Records in META, as soon as the load has it, the network namespace this
/// apply serves, unless META names one already: a run that stops before
/// its last step (`WriteMeta`) leaves links keyed by this namespace's
/// ifindexes, and an apply from another namespace must be refused, not
/// take them for its own. The rest of META stays until `WriteMeta`.
fn claim_namespace(ebpf: &mut aya::Ebpf) -> Result<(), StepError> {
    let Some(map) = ebpf.map_mut("META") else {
        return Ok(());
    };
    let mut a: Array<&mut aya::maps::MapData, ObjectMeta> = Array::try_from(map)?;
    let mut meta = a.get(&0, 0)?;
    if meta.netns == 0 {
        meta.netns = crate::netns::current_inode().unwrap_or(0);
        a.set(0, meta, 0)?;
    }
    Ok(())
}

/// Removes a program we did not attach (only reached with --force): a
/// link-based attachment is detached by id, a netlink one through iproute2.
/// The link must be this interface's: one program is often linked to
/// several interfaces, and links are listed system-wide.
fn detach_foreign(iface: &str, prog_id: u32, mode: AttachMode) -> Result<(), StepError> {
    let ifindex = nix::net::if_::if_nametoindex(iface)
        .map_err(|e| StepError::Other(format!("interface {iface}: {e}")))?;
    let mut ours = Vec::new();
    for l in aya::programs::loaded_links().flatten() {
        if l.program_id() == prog_id
            && let Ok(fd) = sys::link_by_id(l.id())
            && let Ok(f) = sys::link_facts(&fd)
            && f.link_type == sys::LINK_TYPE_XDP
            && f.ifindex == ifindex
        {
            ours.push(fd);
        }
    }
    // Interface indexes are per namespace: two links of this program on
    // interfaces with this index in two namespaces cannot be told apart.
    if ours.len() > 1 {
        return Err(StepError::Other(format!(
            "{iface}: program {prog_id} has {} XDP links on interfaces with index {ifindex} \
             (other namespaces); detach the foreign program by hand",
            ours.len()
        )));
    }
    if let Some(fd) = ours.pop() {
        return sys::link_detach(&fd).map_err(io("detaching foreign link on", Path::new(iface)));
    }
    let m = match mode {
        AttachMode::Native => "xdpdrv",
        AttachMode::Skb => "xdpgeneric",
        AttachMode::Hw => "xdpoffload",
    };
    let out = Command::new("ip")
        .args(["link", "set", "dev", iface, m, "off"])
        .output()
        .map_err(io("running ip link set", Path::new(iface)))?;
    if !out.status.success() {
        return Err(StepError::Other(format!(
            "ip link set dev {iface} {m} off: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
