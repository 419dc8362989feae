//! The throw-away world a simulation runs in: a private mount namespace
//! with its own bpffs instance on /sys/fs/bpf, a private network namespace
//! with one stand-in veth per policy interface, and the policy applied
//! there by the normal engine (desired -> observe -> plan -> apply).
//!
//! Both namespaces belong to this process only: the host's bpffs and
//! interfaces are never touched, and whatever is left when the process
//! ends (also killed with SIGKILL) goes with it. `Drop` still detaches
//! and unpins everything explicitly, so a long-lived caller that runs
//! several simulations does not accumulate programs.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    apply::Applier,
    desired::Desired,
    layout::Layout,
    object::{EGRESS_ENTRY, ENTRY_PROGRAM, Object},
    observe::{self, Observed},
    plan::{self, PlanOptions},
    sys,
};

use aya::programs::{ProgramError, SchedClassifier, TestRun as _, TestRunOptions, Xdp};
use aya_obj::programs::XdpAttachType;

use super::SimError;

/// Where the private bpffs instance is mounted (in the private mount
/// namespace only: the host keeps its own /sys/fs/bpf).
const BPFFS: &str = "/sys/fs/bpf";

/// Capabilities a simulation needs (bit numbers of linux/capability.h).
const CAPS: [(u32, &str, &str); 3] = [
    (39, "CAP_BPF", "load and run the eBPF programs"),
    (
        12,
        "CAP_NET_ADMIN",
        "create the stand-in interfaces and attach XDP",
    ),
    (
        21,
        "CAP_SYS_ADMIN",
        "create the private namespaces and mount the private bpffs",
    ),
];

/// Says which of the needed capabilities this process lacks.
pub fn check_privileges() -> Result<(), SimError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<String> = CAPS
        .iter()
        .filter(|(bit, _, _)| eff & (1 << bit) == 0)
        .map(|(_, name, why)| format!("{name} (to {why})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SimError::Privileges(missing.join(", ")))
    }
}

/// Enters a private mount namespace and mounts a fresh bpffs instance
/// there. Must run before any thread exists (unshare(CLONE_NEWNS) refuses
/// a process whose threads share its filesystem state).
pub fn private_bpffs() -> Result<(), SimError> {
    use nix::{
        mount::{MsFlags, mount},
        sched::{CloneFlags, unshare},
    };
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| SimError::Sandbox {
        what: "creating the private mount namespace".into(),
        source: e.into(),
    })?;
    // Nothing mounted here may reach the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SimError::Sandbox {
        what: "making the private mount namespace private".into(),
        source: e.into(),
    })?;
    mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|e| SimError::Sandbox {
        what: format!("mounting a private bpffs on {BPFFS}"),
        source: e.into(),
    })
}

/// One applied policy in a fresh network namespace.
pub struct Sandbox {
    pub layout: Layout,
    /// Stand-in interface name -> ifindex.
    pub ifindex: BTreeMap<String, u32>,
    /// The observed state after apply (chain ids -> names for the report).
    pub observed: Observed,
    /// The applied entry programs, opened from their pins: packets are
    /// run through them with aya's `TestRun` (BPF_PROG_TEST_RUN). A policy
    /// with no egress chain and no `record_flow` loads no egress entry.
    entry: Xdp,
    egress_entry: Option<SchedClassifier>,
}

/// `TCX_NEXT` (`TC_ACT_UNSPEC`): the packet goes on.
const TCX_NEXT: i32 = -1;

/// `struct xdp_md` as a test-run context: data, data_end, data_meta,
/// ingress_ifindex, rx_queue_index, egress_ifindex. On the way out the
/// kernel writes the metadata length into `data`.
const XDP_MD_LEN: usize = 24;
const XDP_MD_IFINDEX: usize = 12;
/// Size of `struct __sk_buff` (UAPI) as a test-run context, and the offset
/// of its `ifindex`: the device the skb is given (its egress chains apply).
const SKB_CTX_LEN: usize = 192;
const SKB_CTX_IFINDEX: usize = 40;
/// Room in the output for a grown head and the metadata in front of it.
const HEADROOM: usize = 512;

fn ip(args: &[&str]) -> Result<(), SimError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| SimError::Sandbox {
            what: format!("running `ip {}` (is iproute2 installed?)", args.join(" ")),
            source: e,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(SimError::Sandbox {
        what: format!("`ip {}`", args.join(" ")),
        source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    })
}

impl Sandbox {
    /// A new network namespace (the previous one of this thread is left;
    /// it disappears once nothing refers to it), stand-ins for `desired`'s
    /// interfaces, and the policy applied under `root` inside the private
    /// bpffs.
    pub fn new(name: &str, object: &Object, desired: &Desired) -> Result<Sandbox, SimError> {
        use nix::sched::{CloneFlags, unshare};
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| SimError::Sandbox {
            what: "creating the private network namespace".into(),
            source: e.into(),
        })?;
        ip(&["link", "set", "lo", "up"])?;
        let mut ifindex = BTreeMap::new();
        for (i, name) in desired.interfaces.keys().enumerate() {
            let peer = format!("emsim{i}");
            ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "up"])?;
            ip(&["link", "set", name, "up"])?;
            let idx =
                nix::net::if_::if_nametoindex(name.as_str()).map_err(|e| SimError::Sandbox {
                    what: format!("reading the ifindex of stand-in {name}"),
                    source: e.into(),
                })?;
            ifindex.insert(name.clone(), idx);
        }
        let layout = Layout::new(PathBuf::from(BPFFS).join(name));
        let sb = Sandbox::apply(layout, object, desired, ifindex)?;
        Ok(sb)
    }

    fn apply(
        layout: Layout,
        object: &Object,
        desired: &Desired,
        ifindex: BTreeMap<String, u32>,
    ) -> Result<Sandbox, SimError> {
        let engine = |what: &str, e: String| SimError::Apply(format!("{what}: {e}"));
        let o = observe::observe(&layout).map_err(|e| engine("observing", e.to_string()))?;
        let p = plan::plan(desired, &o, PlanOptions::default()).map_err(|errs| {
            let m: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            engine("planning", m.join("; "))
        })?;
        Applier::new(&layout, object)
            .apply(&p)
            .map_err(|e| engine("applying", format!("{e:#}")))?;
        let observed = observe::observe(&layout).map_err(|e| engine("observing", e.to_string()))?;
        let opened = |n: &'static str| {
            move |e: ProgramError| SimError::Sandbox {
                what: format!("opening the applied program {n}"),
                source: std::io::Error::other(e),
            }
        };
        let entry = Xdp::from_pin(layout.prog(ENTRY_PROGRAM), XdpAttachType::Interface)
            .map_err(opened(ENTRY_PROGRAM))?;
        let egress_entry = observed
            .programs
            .contains_key(EGRESS_ENTRY)
            .then(|| SchedClassifier::from_pin(layout.prog(EGRESS_ENTRY)))
            .transpose()
            .map_err(opened(EGRESS_ENTRY))?;
        Ok(Sandbox {
            entry,
            egress_entry,
            layout,
            ifindex,
            observed,
        })
    }

    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Runs the XDP entry on `data` as received on `ifindex`; the frame it
    /// leaves goes to `out` (its allocation reused across packets), metadata
    /// in front. Returns the verdict and the metadata length.
    pub fn run_xdp(
        &self,
        data: &[u8],
        ifindex: u32,
        out: &mut Vec<u8>,
    ) -> Result<(u32, usize), ProgramError> {
        let mut ctx = [0u8; XDP_MD_LEN];
        ctx[4..8].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        ctx[XDP_MD_IFINDEX..XDP_MD_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        let mut ctx_out = [0u8; XDP_MD_LEN];
        out.resize(data.len() + HEADROOM, 0);
        let r = self.entry.test_run(TestRunOptions {
            data_in: Some(data),
            data_out: Some(out),
            ctx_in: Some(&ctx),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::default()
        })?;
        out.truncate(r.data_size_out as usize);
        let meta = u32::from_ne_bytes(ctx_out[..4].try_into().expect("4 bytes"));
        Ok((r.return_value, meta as usize))
    }

    /// Runs the TC egress entry on `data` as an skb sent by `ifindex`; the
    /// frame it leaves goes to `out`. Returns the program's return code
    /// (`TCX_NEXT` with the frame untouched where the policy loads none).
    pub fn run_skb(
        &self,
        data: &[u8],
        ifindex: u32,
        out: &mut Vec<u8>,
    ) -> Result<i32, ProgramError> {
        let Some(egress_entry) = &self.egress_entry else {
            out.clear();
            out.extend_from_slice(data);
            return Ok(TCX_NEXT);
        };
        let mut ctx = [0u8; SKB_CTX_LEN];
        ctx[SKB_CTX_IFINDEX..SKB_CTX_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        out.resize(data.len() + HEADROOM, 0);
        let r = egress_entry.test_run(TestRunOptions {
            data_in: Some(data),
            data_out: Some(out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok(r.return_value as i32)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Links first (a pin removed while another reference lives would
        // leave the program attached), then every pin.
        for dir in [self.layout.xdp_links_dir(), self.layout.tc_links_dir()] {
            if let Ok(links) = std::fs::read_dir(dir) {
                for l in links.flatten() {
                    if let Ok(fd) = sys::obj_get(&l.path()) {
                        let _ = sys::link_detach(&fd);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.layout.root);
    }
}
