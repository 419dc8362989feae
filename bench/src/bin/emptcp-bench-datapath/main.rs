//! `emptcp-bench-datapath`: what emptcp's datapath adds per packet, path
//! by path, over a bare program measured in the same run (XDP_PASS for
//! ingress, a bare TC program for egress), on frames each path really acts
//! on (a fresh frame per run, checked with the datapath's own counters);
//! then the memory per tracked flow. Exits non-zero when a per-packet target
//! is missed or a path did not act on every frame. Needs root. Prints
//! markdown; `--write-docs [FILE]` also rewrites the generated region of
//! docs/benchmarks.md.
//!
//! Usage: emptcp-bench-datapath [--samples N] [--rounds R] [--flow-capacity N] [--only TEXT]... [--write-docs [FILE]]
//!        emptcp-bench-datapath --hold-pass|--hold-meta NETNS IFACE...
mod frames;
mod measure;
mod paths;
mod references;
mod report;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    path::PathBuf,
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use aya::programs::ProgramInfo;
use emptcp::{
    apply::{self, Applier},
    counters,
    desired::Desired,
    layout::Layout,
    netns,
    object::Object,
    observe,
    plan::{self, PlanOptions},
    policy, sys,
};

use crate::{
    measure::{Hook, Round},
    paths::{Counter, Path},
    references::Under,
};

/// Repeat count of the runs on one frame (paths marked `hot`).
const REPEAT: u32 = 1_000_000;

fn sh(cmd: &str) -> anyhow::Result<String> {
    let o = Command::new("sh").arg("-c").arg(cmd).output()?;
    if !o.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs its commands (in reverse) when dropped, error or not.
struct Cleanup(Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in self.0.iter().rev() {
            let _ = Command::new("sh").arg("-c").arg(c).output();
        }
    }
}

fn converge(layout: &Layout, object: &Object, text: &str) -> anyhow::Result<()> {
    let p = policy::load_str("bench.yaml", text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let _lock = apply::lock(&layout.root)?;
    let d = Desired::new(&p, object).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let o = observe::observe(layout)?;
    let plan = plan::plan(&d, &o, PlanOptions::default()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Applier::new(layout, object).apply(&plan)?;
    Ok(())
}

fn memlock(fd: i32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("memlock:").map(|v| v.trim().parse::<u64>()))
        .context("no memlock in fdinfo")?
        .context("memlock")
}

/// `--hold-pass NETNS IFACE...`: attach a bare XDP_PASS program (native) to
/// each interface and hold it until killed: the throughput baseline of
/// `scripts/bench.sh throughput` (attaching any XDP program to a veth turns
/// off its peer's GSO, which no program can avoid). `--hold-meta` holds
/// instead a program that leaves per-packet-different XDP metadata (what
/// the datapath's description in metadata amounted to), which GRO cannot
/// merge.
fn hold(prog: OwnedFd, ifaces: &[String]) -> anyhow::Result<()> {
    let mut links = Vec::new();
    for i in ifaces {
        let ifindex = nix::net::if_::if_nametoindex(i.as_str())?;
        links.push(
            sys::xdp_link_create(prog.as_fd(), ifindex, sys::XDP_FLAGS_DRV_MODE)
                .with_context(|| format!("attach the program to {i}"))?,
        );
    }
    println!("ready");
    loop {
        std::thread::park();
    }
}

struct Args {
    samples: u32,
    rounds: usize,
    /// `settings.flow_capacity` of the policy (None: the product's
    /// default, at which the targets and the docs are).
    flow_capacity: Option<u32>,
    /// `--only TEXT`: time only the paths whose name contains one of
    /// these (with a small `--flow-capacity`, the other paths' flows
    /// would not fit the tables).
    only: Vec<String>,
    write_docs: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut a = Args {
        samples: 5000,
        rounds: 7,
        flow_capacity: None,
        only: Vec::new(),
        write_docs: None,
    };
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        let mut num = |what: &str| -> anyhow::Result<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|&v: &u64| v > 0)
                .with_context(|| format!("{what} needs a positive number"))
        };
        match arg.as_str() {
            "--samples" => a.samples = num("--samples")? as u32,
            "--rounds" => a.rounds = num("--rounds")? as usize,
            "--flow-capacity" => {
                a.flow_capacity = Some(u32::try_from(num("--flow-capacity")?)?);
            }
            "--only" => a.only.push(
                it.next()
                    .filter(|v| !v.starts_with("--"))
                    .context("--only needs part of a row's name")?
                    .clone(),
            ),
            "--write-docs" => {
                let file = it.next_if(|v| !v.starts_with("--"));
                a.write_docs = Some(file.map_or("docs/benchmarks.md".into(), PathBuf::from));
            }
            other => bail!(
                "unknown argument {other:?}; usage: emptcp-bench-datapath [--samples N] [--rounds R] [--flow-capacity N] [--only TEXT]... [--write-docs [FILE]]"
            ),
        }
    }
    if a.flow_capacity.is_some() && a.write_docs.is_some() {
        bail!("--write-docs writes the figures at the default sizing: leave out --flow-capacity");
    }
    if !a.only.is_empty() && a.write_docs.is_some() {
        bail!("--write-docs writes the whole table: leave out --only");
    }
    Ok(a)
}

/// The paths `--only` names, and for each hook they run on whose bare
/// figure no named path gives, the first path of that hook that does (the
/// bare program's repeat figure, on which the emptcp column and the
/// ratios rest, is timed beside the hot paths).
fn only_these(paths: Vec<paths::Path>, only: &[String]) -> anyhow::Result<Vec<paths::Path>> {
    let named = |p: &paths::Path| only.iter().any(|o| p.name.contains(o.as_str()));
    let mut need: Vec<measure::Hook> = Vec::new();
    for p in paths.iter().filter(|p| named(p)) {
        if !need.contains(&p.hook) {
            need.push(p.hook);
        }
    }
    if need.is_empty() {
        bail!("--only {only:?} names no row of the table");
    }
    need.retain(|h| !paths.iter().any(|p| named(p) && p.hot && p.hook == *h));
    let mut kept = Vec::new();
    for p in paths {
        let baseline = p.hot && need.contains(&p.hook);
        if baseline {
            need.retain(|h| *h != p.hook);
        }
        if baseline || named(&p) {
            kept.push(p);
        }
    }
    Ok(kept)
}

/// The programs a path is timed with.
struct Progs {
    bare_xdp: std::os::fd::OwnedFd,
    bare_tc: std::os::fd::OwnedFd,
    entry: aya::programs::ProgramFd,
    egress_entry: aya::programs::ProgramFd,
    tc_entry: aya::programs::ProgramFd,
    parse_only: std::os::fd::OwnedFd,
    floor: Floor,
    small_floor: Floor,
    v4_floor: Floor,
    two_table_floor: Floor,
}

impl Progs {
    /// The program a path times: emptcp's, or the reference program.
    fn under_test(&self, p: &Path) -> BorrowedFd<'_> {
        match p.under {
            Under::Emptcp => self.emptcp(p.hook),
            Under::ParseOnly => self.parse_only.as_fd(),
            Under::LookupFloor => self.floor.prog.as_fd(),
            Under::SmallLookupFloor => self.small_floor.prog.as_fd(),
            Under::V4LookupFloor => self.v4_floor.prog.as_fd(),
            Under::TwoTableFloor => self.two_table_floor.prog.as_fd(),
        }
    }
    /// The program a path's set-up frame of `hook` runs through: emptcp's
    /// of that hook, or the path's reference program.
    fn setup(&self, p: &Path, hook: Hook) -> BorrowedFd<'_> {
        match p.under {
            Under::Emptcp => self.emptcp(hook),
            _ => self.under_test(p),
        }
    }
    fn emptcp(&self, hook: Hook) -> BorrowedFd<'_> {
        match hook {
            Hook::Xdp => self.entry.as_fd(),
            Hook::Tc => self.egress_entry.as_fd(),
            Hook::TcIngress => self.tc_entry.as_fd(),
        }
    }
    fn bare(&self, hook: Hook) -> BorrowedFd<'_> {
        match hook {
            Hook::Xdp => self.bare_xdp.as_fd(),
            Hook::Tc | Hook::TcIngress => self.bare_tc.as_fd(),
        }
    }
}

/// A lookup-floor reference program attached to its interface, with
/// its own tables.
struct Floor {
    prog: std::os::fd::OwnedFd,
    tables: Vec<std::os::fd::OwnedFd>,
    _link: std::os::fd::OwnedFd,
}

impl Floor {
    /// Loads the floor program over a new table of FLOWS' shape
    /// (`capacity`: FLOWS' own if None) with keys `key` and attaches it
    /// to `iface`.
    fn attach(
        flows: &std::os::fd::OwnedFd,
        capacity: Option<u32>,
        key: references::FloorKey,
        iface: &str,
    ) -> anyhow::Result<Self> {
        let table = references::floor_table(flows, capacity, key)?;
        let insns = references::lookup_floor_program(table.as_fd(), key);
        Self::load(&insns, vec![table], iface)
    }

    /// The two-table floor (`references::two_table_floor_program`) over
    /// new tables of FLOWS' capacity, attached to `iface`.
    fn attach_two_tables(flows: &std::os::fd::OwnedFd, iface: &str) -> anyhow::Result<Self> {
        let [subs, conns] = references::two_tables(flows)?;
        let insns = references::two_table_floor_program(subs.as_fd(), conns.as_fd());
        Self::load(&insns, vec![subs, conns], iface)
    }

    fn load(insns: &[u8], tables: Vec<OwnedFd>, iface: &str) -> anyhow::Result<Self> {
        let prog = sys::load_xdp_insns("bench_floor", insns).with_context(|| {
            format!(
                "load the lookup-floor program; the verifier's log ends:\n{}",
                sys::xdp_verifier_log("bench_floor", insns)
            )
        })?;
        let index = nix::net::if_::if_nametoindex(iface)?;
        let _link = sys::xdp_link_create(prog.as_fd(), index, sys::XDP_FLAGS_SKB_MODE)
            .with_context(|| format!("attach the lookup-floor program to {iface}"))?;
        Ok(Self {
            prog,
            tables,
            _link,
        })
    }

    /// Every timed frame hit its flow: a miss would have inserted one
    /// more entry than the stream's flows (in each table).
    fn check_every_frame_hit(&self) -> anyhow::Result<()> {
        for table in &self.tables {
            let n = references::floor_entries(table)?;
            if n != paths::STREAM_FLOWS as usize {
                bail!(
                    "a lookup floor's table holds {n} entries, not the stream's {} flows: some timed frames missed",
                    paths::STREAM_FLOWS
                );
            }
        }
        Ok(())
    }
}

/// Current value of a counter, summed over CPUs.
fn counter(layout: &Layout, c: Counter) -> u64 {
    let get = |m: BTreeMap<String, u64>, n: &str| m.get(n).copied().unwrap_or(0);
    match c {
        Counter::Prog(p, o) => counters::program_counters(layout)
            .get(p)
            .and_then(|m| m.get(o).copied())
            .unwrap_or(0),
        Counter::Flow(n) => get(counters::datapath_events(layout), n),
        Counter::EgressStat(n) => get(counters::egress_counters(layout), n),
    }
}

/// One round of a path: fresh samples, their setup frames, then the timed
/// runs; fails unless every counter of the path moved by exactly one per
/// measured frame.
fn round_of(
    p: &mut Path,
    k: &mut u32,
    n: u32,
    progs: &Progs,
    layout: &Layout,
    ifindex: u32,
) -> anyhow::Result<Round> {
    let samples: Vec<_> = (0..n)
        .map(|_| {
            *k += 1;
            (p.sample)(*k)
        })
        .collect();
    for s in &samples {
        for f in &s.setup {
            measure::run(p.hook, progs.setup(p, p.hook), f, ifindex, 1)?;
        }
    }
    let frames: Vec<Vec<u8>> = samples.into_iter().map(|s| s.frame).collect();
    let before: Vec<u64> = p.acts.iter().map(|&c| counter(layout, c)).collect();
    let r = measure::round(
        p.hook,
        progs.bare(p.hook),
        progs.under_test(p),
        &frames,
        ifindex,
        p.verdict,
    )
    .with_context(|| format!("path {:?}", p.name))?;
    if std::env::var_os("EMPTCP_BENCH_VERBOSE").is_some() {
        eprintln!("{:>8.1} {:>7.1}  {}", r.bare, r.added, p.name);
    }
    for (c, b) in p.acts.iter().zip(before) {
        let moved = counter(layout, *c) - b;
        if moved != u64::from(n) {
            bail!(
                "path {:?}: counter {c:?} moved by {moved} over {n} measured frames: emptcp did not act on every frame, so the time would not be the action's (check the frame builder and the policy in paths.rs)",
                p.name
            );
        }
    }
    Ok(r)
}

/// A path whose frame stays what the path measures when it is run again
/// (nothing in it or in the state it meets changes): one frame with
/// repeat 10^6 through the bare program and through emptcp, the code hot
/// in the caches as in a busy receive loop. Returns the ns added; the
/// path's counters must move by the repeat count.
fn hot_round(
    p: &mut Path,
    k: &mut u32,
    progs: &Progs,
    layout: &Layout,
    ifindex: u32,
) -> anyhow::Result<(f64, f64)> {
    *k += 1;
    let frame = (p.sample)(*k).frame;
    let before: Vec<u64> = p.acts.iter().map(|&c| counter(layout, c)).collect();
    let bare = measure::run(p.hook, progs.bare(p.hook), &frame, ifindex, REPEAT)?.1;
    let (v, ns) = measure::run(p.hook, progs.under_test(p), &frame, ifindex, REPEAT)?;
    if v != p.verdict {
        bail!("path {:?} (repeat): verdict {}", p.name, v as i32);
    }
    for (c, b) in p.acts.iter().zip(before) {
        let moved = counter(layout, *c) - b;
        if moved != u64::from(REPEAT) {
            bail!(
                "path {:?} (repeat): counter {c:?} moved by {moved}, not {REPEAT}",
                p.name
            );
        }
    }
    Ok((f64::from(bare), f64::from(ns) - f64::from(bare)))
}

/// `EMPTCP_BENCH_PROFILE=NAME`: runs fresh frames of the first path whose
/// name contains NAME through emptcp alone for 10 s, for a profiler
/// (`perf record -a`) to look at; prints the frames run.
fn profile(paths: &mut [Path], which: &str, progs: &Progs) -> anyhow::Result<()> {
    let p = paths
        .iter_mut()
        .find(|p| p.name.contains(which))
        .with_context(|| format!("no path named like {which:?}"))?;
    let ifindex = nix::net::if_::if_nametoindex(p.iface)?;
    let t = Instant::now();
    let (mut k, mut n) = (0u32, 0u64);
    eprintln!("profiling {:?}", p.name);
    if std::env::var_os("EMPTCP_BENCH_PROFILE_REPEAT").is_some() {
        // The hot variant: one frame, repeat 10^6 (hot paths only).
        let f = (p.sample)(1).frame;
        while t.elapsed().as_secs() < 10 {
            measure::run(p.hook, progs.under_test(p), &f, ifindex, REPEAT)?;
        }
        return Ok(());
    }
    while t.elapsed().as_secs() < 10 {
        let samples: Vec<_> = (0..1000)
            .map(|_| {
                k += 1;
                (p.sample)(k)
            })
            .collect();
        for s in &samples {
            for f in &s.setup {
                measure::run(p.hook, progs.setup(p, p.hook), f, ifindex, 1)?;
            }
        }
        for s in &samples {
            measure::run(p.hook, progs.under_test(p), &s.frame, ifindex, 1)?;
        }
        n += 1000;
    }
    eprintln!("{n} frames");
    Ok(())
}

/// Binds the process to the CPU it runs on: the two runs of a pair then
/// meet the same caches and clock.
fn pin_to_this_cpu() -> anyhow::Result<()> {
    // SAFETY: plain syscalls on a zeroed cpu_set_t of this process.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            bail!("sched_getcpu: {}", std::io::Error::last_os_error());
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("emptcp-bench-datapath needs root (namespaces, bpffs, XDP)");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(which @ ("--hold-pass" | "--hold-meta")) = args.first().map(String::as_str) {
        let Some(ns) = args.get(1) else {
            bail!("usage: emptcp-bench-datapath {which} NETNS IFACE...");
        };
        netns::enter(ns)?;
        let prog = if which == "--hold-pass" {
            sys::load_xdp_pass("bench_pass")?
        } else {
            match sys::load_xdp_per_packet_meta("bench_meta") {
                Ok(p) => p,
                // The verifier refuses the helper (a kernel that gives XDP
                // no metadata): said on stdout, where scripts/bench.sh
                // looks for "ready", so its row can say why.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    println!("unsupported: this kernel gives XDP programs no bpf_xdp_adjust_meta");
                    return Ok(());
                }
                Err(e) => return Err(e).context("load the metadata program"),
            }
        };
        return hold(prog, &args[2..]);
    }
    let args = parse_args(&args)?;
    let load_start = emptcp_bench::loadavg();
    let id = std::process::id();
    let ns = format!("emptcp-bdp{id}");
    let root = PathBuf::from(format!("/sys/fs/bpf/emptcp-bdp{id}"));
    let undo = vec![
        format!("ip netns del {ns}"),
        format!("rm -rf {}", root.display()),
    ];
    for c in &undo {
        emptcp_bench::undo_on_signal(c.clone());
    }
    // Release builds abort on panic (no unwinding, so no Drop): the hook
    // removes the namespace and the root first.
    let on_panic = undo.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        drop(Cleanup(on_panic.clone()));
        default_hook(info);
    }));
    let _cleanup = Cleanup(undo);
    let mut setup = format!("ip netns add {ns}");
    for v in paths::VETHS {
        setup += &format!(
            " && ip -n {ns} link add {v} type veth peer name {v}p && ip -n {ns} link set {v} up && ip -n {ns} link set {v}p up"
        );
    }
    setup += &format!(
        " && ip -n {ns} tuntap add mode tun name {t} && ip -n {ns} link set {t} up",
        t = paths::TUN
    );
    sh(&setup)?;
    netns::enter(&ns)?;
    let object = Object::load()?;
    let layout = Layout::new(&root);
    converge(&layout, &object, &paths::policy(args.flow_capacity))?;
    let ifindex =
        |name: &str| nix::net::if_::if_nametoindex(name).with_context(|| name.to_string());
    let pin = |name: &str| -> anyhow::Result<aya::programs::ProgramFd> {
        Ok(ProgramInfo::from_pin(layout.prog(name))
            .with_context(|| format!("program {name}"))?
            .fd()?)
    };
    // The bare program is attached too (skb mode, an interface of its
    // own): the kernel calls XDP programs that are attached somewhere
    // through its XDP dispatcher (a direct call) and others indirectly, a
    // difference of its own that would otherwise count against the bare
    // program in a single run. emptcp's entry is attached (the policy).
    let bare_xdp = sys::load_xdp_pass("bench_pass")?;
    let _bare_link = sys::xdp_link_create(
        bare_xdp.as_fd(),
        ifindex(paths::BARE)?,
        sys::XDP_FLAGS_SKB_MODE,
    )
    .context("attach the bare XDP_PASS program")?;
    let parse_only = sys::load_xdp_insns("bench_parse", &references::parse_only_program())?;
    let _parse_link = sys::xdp_link_create(
        parse_only.as_fd(),
        ifindex(paths::REFERENCE)?,
        sys::XDP_FLAGS_SKB_MODE,
    )
    .context("attach the parse-only program")?;
    let flows = sys::obj_get(&layout.map("FLOWS"))?;
    use references::FloorKey;
    let floor = Floor::attach(&flows, None, FloorKey::Flow, paths::FLOOR)?;
    let small_floor = Floor::attach(
        &flows,
        Some(references::SMALL_FLOOR_CAPACITY),
        FloorKey::Flow,
        paths::SMALL_FLOOR,
    )?;
    let v4_floor = Floor::attach(&flows, None, FloorKey::V4, paths::V4_FLOOR)?;
    let two_table_floor = Floor::attach_two_tables(&flows, paths::TWO_TABLE_FLOOR)?;
    let progs = Progs {
        parse_only,
        floor,
        small_floor,
        v4_floor,
        two_table_floor,
        bare_xdp,
        bare_tc: sys::load_tc_verdict("bench_tc_next", -1)?,
        entry: pin("entry")?,
        egress_entry: pin("egress_entry")?,
        tc_entry: pin("tc_entry")?,
    };

    let mut paths = paths::paths();
    if !args.only.is_empty() {
        paths = only_these(paths, &args.only)?;
    }
    for p in &paths {
        let i = ifindex(p.iface)?;
        for (hook, f) in &p.init {
            measure::run(*hook, progs.setup(p, *hook), f, i, 1)?;
        }
    }
    pin_to_this_cpu()?;
    if let Ok(which) = std::env::var("EMPTCP_BENCH_PROFILE") {
        return profile(&mut paths, &which, &progs);
    }
    let mut rounds: Vec<Vec<Round>> = paths.iter().map(|_| Vec::new()).collect();
    let mut hot: Vec<Vec<(f64, f64)>> = paths.iter().map(|_| Vec::new()).collect();
    let mut ks = vec![0u32; paths.len()];
    // Round after round over every path, so a change in the machine's
    // load spreads over all of them instead of landing on one.
    for _ in 0..args.rounds {
        for (i, p) in paths.iter_mut().enumerate() {
            let idx = ifindex(p.iface)?;
            rounds[i].push(round_of(p, &mut ks[i], args.samples, &progs, &layout, idx)?);
            if p.hot {
                hot[i].push(hot_round(p, &mut ks[i], &progs, &layout, idx)?);
            }
        }
    }
    for (under, floor) in [
        (Under::LookupFloor, &progs.floor),
        (Under::SmallLookupFloor, &progs.small_floor),
        (Under::V4LookupFloor, &progs.v4_floor),
        (Under::TwoTableFloor, &progs.two_table_floor),
    ] {
        if paths.iter().any(|p| p.under == under) {
            floor.check_every_frame_hit()?;
        }
    }
    let mut rows: Vec<report::Row> = paths
        .iter()
        .zip(rounds.iter().zip(&hot))
        .map(|(p, (r, h))| report::Row::new(p, r, h))
        .collect();
    for (i, p) in paths.iter().enumerate() {
        if let Some(to) = p.relative_to {
            if !args.only.is_empty() && !paths.iter().any(|q| q.name == to) {
                continue; // --only left out the row it is judged against
            }
            let j = paths.iter().position(|q| q.name == to).with_context(|| {
                format!(
                    "path {:?} is judged against {to:?}, which is no path",
                    p.name
                )
            })?;
            rows[i].relative = Some(report::Relative::of(&rounds[i], &rounds[j]));
        }
    }
    let memory = memory_table(
        &layout,
        &object,
        id,
        args.flow_capacity,
        &progs.two_table_floor.tables,
    )?;
    let load_end = emptcp_bench::loadavg();
    let text = report::render(&args, &rows, &memory, &load_start, &load_end);
    // Not print!: a closed stdout (`| head`) must not abort before the
    // cleanup.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    if let Some(file) = &args.write_docs {
        report::DOCS.write(file, &text)?;
        eprintln!("wrote the generated region of {}", file.display());
    }
    let missed: Vec<_> = rows
        .iter()
        .filter(|r| r.missed(report::bare_of(&rows, r.hook())))
        .map(|r| r.name)
        .collect();
    if !missed.is_empty() {
        bail!("target missed: {}", missed.join("; "));
    }
    Ok(())
}

/// Memory per connection and per joined subflow (the LRU maps preallocate
/// every entry: the kernel's memlock of each map, divided by its
/// capacity), the same for the two-table design of the reference row
/// (`two_tables`: its subflow and connection tables), and the cost of
/// creating a 10^6-flow table at apply.
fn memory_table(
    layout: &Layout,
    object: &Object,
    id: u32,
    flow_capacity: Option<u32>,
    two_tables: &[OwnedFd],
) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    // A pinned map's memlock, capacity, key and value size.
    let map = |name: &str| -> anyhow::Result<(f64, u32, u32, u32)> {
        let m = aya::maps::MapData::from_pin(layout.map(name))?;
        let info = m.info()?;
        let bytes = memlock(m.fd().as_fd().as_raw_fd())? as f64;
        Ok((
            bytes,
            info.max_entries(),
            info.key_size(),
            info.value_size(),
        ))
    };
    writeln!(
        out,
        "| memory (kernel memlock of each map, this run's {}) | value |\n|---|---|",
        flow_capacity.map_or("default sizing".to_string(), |c| format!(
            "sizing, flow_capacity {c}"
        ))
    )?;
    let flows = map("FLOWS")?;
    let mut per_conn = 0.0;
    for (name, what) in [
        ("FLOWS", "the connection"),
        ("TOKENS", "its token"),
        ("JOINS", "a joined subflow"),
        ("FLOW_ADDRS", "a stored ADD_ADDR"),
    ] {
        let (bytes, n, k, v) = map(name)?;
        let per = bytes / f64::from(n);
        // Each map's share of one tracked connection: its memory over the
        // flow table's capacity (JOINS and FLOW_ADDRS hold a quarter as
        // many entries).
        let share = bytes / f64::from(flows.1);
        per_conn += share;
        writeln!(
            out,
            "| {name} ({what}): key {k} B + value {v} B, {n} entries: per entry / share per connection | {per:.0} B / {share:.0} B |"
        )?;
    }
    let joins = map("JOINS")?;
    writeln!(
        out,
        "| per tracked connection at {} (the four maps over FLOWS' capacity; target 245 B, docs/datapath.md \"Memory per flow\" says why it is exceeded) | {per_conn:.0} B |",
        flow_capacity.map_or("the default sizing".to_string(), |c| format!(
            "flow_capacity {c}"
        ))
    )?;
    writeln!(
        out,
        "| per joined subflow (a JOINS entry; its connection's own share above) | {:.0} B |",
        joins.0 / f64::from(joins.1)
    )?;
    // The two-table design keeps a subflow entry per subflow (the
    // initial one too, and room for joined ones as JOINS has today) and
    // a connection entry keyed by token (TOKENS' role, so no TOKENS),
    // FLOW_ADDRS as today.
    let per_entry = |fd: &OwnedFd| -> anyhow::Result<f64> {
        let cap = sys::map_facts(fd)?.max_entries;
        Ok(memlock(fd.as_raw_fd())? as f64 / f64::from(cap))
    };
    if let [subs, conns] = two_tables {
        let (sub, conn) = (per_entry(subs)?, per_entry(conns)?);
        let addrs = map("FLOW_ADDRS")?;
        writeln!(
            out,
            "| the two-table design of the reference row (per connection: a subflow entry, key 40 B + value {} B, plus JOINS' share of them for joined subflows, a connection entry, key 4 B + value {} B, and FLOW_ADDRS' share as today): per connection / per joined subflow | {:.0} B / {sub:.0} B |",
            references::SUBFLOW_VALUE,
            flows.3,
            sub * (1.0 + f64::from(joins.1) / f64::from(flows.1))
                + conn
                + addrs.0 / f64::from(flows.1),
        )?;
    }
    // A fresh apply creates and preallocates the connection tables: 10^6
    // flows against 1024 (a chain that records flows, so they are sized
    // from flow_capacity), then a policy that records none at the default
    // flow_capacity, whose tables keep the least size.
    let mut times = Vec::new();
    let mut unused_tables = 0.0;
    for (cap, actions) in [
        (1024u32, "[record_flow, count]"),
        (1_000_000, "[record_flow, count]"),
        (1_000_000, "[count]"),
    ] {
        let root2 = PathBuf::from(format!("/sys/fs/bpf/emptcp-bdp{id}-c{}", times.len()));
        let _c = Cleanup(vec![format!("rm -rf {}", root2.display())]);
        let layout2 = Layout::new(&root2);
        let t = Instant::now();
        converge(
            &layout2,
            object,
            &format!(
                "version: 1\nsettings: {{flow_capacity: {cap}}}\ninterfaces: [{{name: bd0p, xdp_mode: skb, chains: [c]}}]\nchains: [{{name: c, actions: {actions}}}]\n"
            ),
        )?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        unused_tables = 0.0;
        for name in ["FLOWS", "TOKENS", "JOINS", "FLOW_ADDRS"] {
            let m = aya::maps::MapData::from_pin(layout2.map(name))?;
            unused_tables += memlock(m.fd().as_fd().as_raw_fd())? as f64;
        }
    }
    writeln!(
        out,
        "| first apply with a 10^6-flow table vs a 1024-flow table | {:.0} ms vs {:.0} ms |",
        times[1], times[0]
    )?;
    writeln!(
        out,
        "| a policy that records no flows (`count` only, default flow_capacity): the four connection tables, first apply | {:.0} KiB, {:.0} ms |",
        unused_tables / 1024.0,
        times[2]
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keeps_the_named_rows_and_one_baseline_per_hook() {
        let only = ["of a tracked flow (1400 B) through record_flow".to_string()];
        let kept = only_these(paths::paths(), &only).unwrap();
        let named: Vec<_> = kept.iter().filter(|p| p.name.contains(&only[0])).collect();
        assert_eq!(named.len(), 1, "the data chain row");
        let baselines: Vec<_> = kept.iter().filter(|p| !p.name.contains(&only[0])).collect();
        assert_eq!(baselines.len(), 1, "one hot XDP row for the bare figure");
        assert!(baselines[0].hot && baselines[0].hook == measure::Hook::Xdp);
        assert!(kept.iter().all(|p| p.hook == measure::Hook::Xdp));
    }

    #[test]
    fn only_adds_no_baseline_when_a_named_row_is_hot() {
        let only = ["count alone: data segment".to_string()];
        let kept = only_these(paths::paths(), &only).unwrap();
        assert_eq!(kept.len(), 1);
        assert!(kept[0].hot);
    }

    #[test]
    fn only_naming_no_row_is_an_error() {
        let Err(err) = only_these(paths::paths(), &["no such row".to_string()]) else {
            panic!("a name of no row was taken");
        };
        assert!(err.to_string().contains("names no row"), "{err}");
    }
}
