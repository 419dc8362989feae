//! `emptcp simulate`: what a policy (or a policy change) would do to
//! recorded traffic.
//!
//! Contract: the policy goes through the normal engine (policy -> desired
//! -> observe -> plan -> apply) into a private bpffs and network namespace
//! with stand-in interfaces ([`sandbox`]); the capture is read streaming
//! ([`trace`]) and each packet replayed through the real programs
//! ([`replay`]); what the datapath did is read from verdicts, from the
//! difference between the bytes given and the bytes left ([`effect`]) and
//! from the flow table, never guessed; the report ([`report`]) is per
//! connection with totals, and [`compare`] diffs two of them.
//! Nothing is left behind: the namespaces are this process's own.
pub mod compare;
pub mod copy;
pub mod effect;
pub mod frame;
mod memory;
pub mod pcap_out;
pub mod replay;
pub mod report;
pub mod sandbox;
pub mod synth;
pub mod trace;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use crate::{desired::Desired, object::Object, policy::PacketCopy};
pub use replay::Local;
use replay::{Directions, Replay};
use report::Report;
use sandbox::Sandbox;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(
        "simulate needs {0}; run it as root, or grant them (e.g. `setpriv --ambient-caps +bpf,+net_admin,+sys_admin`)"
    )]
    Privileges(String),
    #[error("setting up the simulation: {what}")]
    Sandbox {
        what: String,
        source: std::io::Error,
    },
    #[error("applying the policy in the simulation: {0}")]
    Apply(String),
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
    #[error(
        "packet {number} was captured with only {captured} of its {orig_len} bytes, which cuts its IP/TCP headers: it cannot be replayed; capture with a snaplen that keeps the headers (tcpdump -s 128)"
    )]
    HeadersCut {
        number: u64,
        captured: usize,
        orig_len: u32,
    },
    #[error("replaying packet {number} (BPF_PROG_TEST_RUN)")]
    Run {
        number: u64,
        source: aya::programs::ProgramError,
    },
    #[error("writing the output capture")]
    Write(#[source] std::io::Error),
    #[error("--local {0}: {1}")]
    Local(String, String),
    #[error(
        "interrupted at packet {0}; nothing is left behind (the simulation's namespaces end with it)"
    )]
    Interrupted(u64),
}

/// One simulation's inputs.
pub struct Options<'a> {
    pub policy_name: String,
    pub desired: &'a Desired,
    /// The policy's packet-copy rules (not part of the desired kernel state).
    pub packet_copy: &'a [PacketCopy],
    pub object: &'a Object,
    pub trace: &'a Path,
    pub locals: Vec<Local>,
    pub write: Option<PathBuf>,
    /// Set by SIGINT/SIGTERM: stop at the next packet.
    pub stop: &'a AtomicBool,
    /// The bpffs directory name (two policies use two).
    pub root_name: &'a str,
}

/// What the simulation does not model (listed in every report).
const NOT_SIMULATED: &[&str] = &[
    "the stack's reaction: packets are replayed as captured, so a withheld ADD_ADDR does not remove the join that followed it in the capture, and a packet-copy frame (added at its simulated time) does not change the traffic after it",
];

/// Parses `PREFIX[=IFACE]`.
pub fn parse_local(s: &str) -> Result<Local, SimError> {
    let (net, iface) = match s.split_once('=') {
        Some((n, i)) => (n, Some(i.to_string())),
        None => (s, None),
    };
    let net = net
        .parse::<ipnet::IpNet>()
        .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            SimError::Local(
                s.into(),
                "expected PREFIX or PREFIX=INTERFACE, e.g. 192.0.2.0/24=eth0".into(),
            )
        })?;
    Ok(Local { net, iface })
}

/// The policy as the replay runs it: every interface's ingress chains at
/// the XDP hook. A trace holds wire segments, which is what XDP sees; at
/// `ingress_hook: tc` the same chains meet them merged by GRO, and do to
/// each packet what they do at XDP (tests/datapath_tc_ingress.rs compares
/// the hooks packet by packet), so the replay's verdicts, rewrites and
/// counters are the policy's either way.
pub fn replayed(p: &crate::policy::Policy) -> crate::policy::Policy {
    let mut p = p.clone();
    for i in &mut p.interfaces {
        i.ingress_hook = crate::policy::IngressHook::Xdp;
    }
    p
}

/// Runs one policy over the trace.
pub fn simulate(o: &Options<'_>) -> Result<Report, SimError> {
    let ifaces: Vec<String> = o.desired.interfaces.keys().cloned().collect();
    for l in &o.locals {
        if let Some(i) = &l.iface
            && !ifaces.contains(i)
        {
            return Err(SimError::Local(
                format!("{}={i}", l.net),
                format!(
                    "the policy has no interface {i} (it has: {})",
                    ifaces.join(", ")
                ),
            ));
        }
    }
    let sb = Sandbox::new(o.root_name, o.object, o.desired)?;
    let mut trace = trace::Trace::open(o.trace)?;
    let rss_start = memory::reset_peak();
    let started = Instant::now();
    let cpu_started = cpu_time_s();
    let mut r = Replay::new(&sb, Directions::new(o.locals.clone(), ifaces))?;
    r.copier = copy::Copier::new(&sb, o.packet_copy)?;
    let mut linktype = None;
    while let Some(p) = trace.next_packet()? {
        if o.stop.load(Ordering::Relaxed) {
            return Err(SimError::Interrupted(p.number));
        }
        if let Some(path) = &o.write
            && linktype.is_none()
        {
            let ethernet = p.link == trace::Link::Ethernet;
            let lt = if ethernet {
                pcap_out::ETHERNET
            } else {
                pcap_out::RAW
            };
            linktype = Some(lt);
            let w = pcap_out::PcapWriter::create(path, lt).map_err(SimError::Write)?;
            r.writer = Some((w, !ethernet));
        }
        r.packet(&p)?;
    }
    let packet_copy = r.finish_copy()?;
    let counters = r.finish();
    if let Some((w, _)) = r.writer.take() {
        w.finish().map_err(SimError::Write)?;
    }
    let replay_s = started.elapsed().as_secs_f64();
    let replay_cpu_s = cpu_time_s() - cpu_started;
    let capture_s = r.last_ts.saturating_sub(r.first_ts.unwrap_or(0)) as f64 / 1e9;
    let packets = std::mem::take(&mut r.packets);
    let total = packets.total;
    let connections = std::mem::take(&mut r.book).finish();
    Ok(Report {
        policy: o.policy_name.clone(),
        capture: o.trace.display().to_string(),
        packets,
        totals: report::totals(&connections),
        connections,
        datapath_counters: counters,
        egress_counters: crate::counters::egress_counters(&sb.layout),
        capture_s,
        replay_s,
        replay_cpu_s,
        kernel_s: r.kernel.as_secs_f64(),
        rss_start_bytes: rss_start,
        peak_rss_bytes: memory::peak(),
        packets_per_s: if replay_s > 0.0 {
            total as f64 / replay_s
        } else {
            0.0
        },
        packet_copy,
        not_simulated: NOT_SIMULATED.iter().map(|s| s.to_string()).collect(),
    })
}

/// User + system CPU time of this process so far, in seconds: the replay's
/// cost without the time other processes take the CPU from it.
fn cpu_time_s() -> f64 {
    let u = own_rusage();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn own_rusage() -> libc::rusage {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u
}
