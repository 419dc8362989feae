//! `emptcp-bench-datapath`: per-packet cost of the datapath as ratios to a
//! bare XDP_PASS program measured in the same run (BPF_PROG_TEST_RUN,
//! repeat 10^6), the memory per tracked flow and the cost of a 10^6-flow
//! map, and MPTCP download throughput through native XDP with the chain vs
//! without (two-path testbed, same run). Needs root. Prints markdown.
use std::{
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use aya::programs::ProgramInfo;
use emptcp::{
    apply::{self, Applier},
    desired::Desired,
    layout::Layout,
    netns,
    object::Object,
    observe,
    packet::{ACK, AckSpec, SYN, build_ack},
    plan::{self, PlanOptions},
    policy, sys,
};

const REPEAT: u32 = 1_000_000;

fn sh(cmd: &str) -> anyhow::Result<String> {
    let o = Command::new("sh").arg("-c").arg(cmd).output()?;
    if !o.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

struct Cleanup(Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in self.0.iter().rev() {
            let _ = Command::new("sh").arg("-c").arg(c).output();
        }
    }
}

fn seg(
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    flags: u8,
    options: Vec<u8>,
    payload: usize,
) -> Vec<u8> {
    build_ack(&AckSpec {
        src_mac: [2, 0, 0, 0, 0, 2],
        dst_mac: [2, 0, 0, 0, 0, 1],
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse::<IpAddr>().unwrap(),
        sport,
        dport,
        seq: 1000,
        ack: 2000,
        window: 512,
        options,
        ttl: 64,
        vlan_tci: None,
        flags,
        payload: vec![0x5a; payload],
    })
    .expect("frame")
}

fn udp_frame() -> Vec<u8> {
    let mut f = seg("192.0.2.2", "192.0.2.1", 5353, 5353, ACK, vec![], 64);
    f[14 + 9] = 17; // protocol UDP: the entry program leaves at the parser
    f
}

/// Median of `runs` BPF_PROG_TEST_RUN measurements (ns per packet).
fn measure(
    prog: std::os::fd::BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    runs: usize,
) -> anyhow::Result<(f64, u32)> {
    let mut v = Vec::new();
    let mut ret = 0;
    for _ in 0..runs {
        let r = sys::test_run_xdp(prog, frame, ifindex, REPEAT, 0)?;
        ret = r.retval;
        v.push(f64::from(r.duration_ns));
    }
    v.sort_by(f64::total_cmp);
    Ok((v[v.len() / 2], ret))
}

/// Median ns per run of the bare XDP_PASS program and of the entry on
/// `frame`; both must pass it.
fn compare(
    pass: std::os::fd::BorrowedFd,
    entry: std::os::fd::BorrowedFd,
    name: &str,
    frame: &[u8],
    ifindex: u32,
    runs: usize,
) -> anyhow::Result<(f64, f64)> {
    let (base, r0) = measure(pass, frame, ifindex, runs)?;
    let (cost, r1) = measure(entry, frame, ifindex, runs)?;
    if r0 != 2 || r1 != 2 {
        bail!("{name}: unexpected verdicts pass={r0} entry={r1}");
    }
    Ok((base, cost))
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
/// off its peer's GSO, which no program can avoid).
fn hold_pass(ns: &str, ifaces: &[String]) -> anyhow::Result<()> {
    netns::enter(ns)?;
    let pass = sys::load_xdp_pass("bench_pass")?;
    let mut links = Vec::new();
    for i in ifaces {
        let ifindex = nix::net::if_::if_nametoindex(i.as_str())?;
        links.push(
            sys::xdp_link_create(pass.as_fd(), ifindex, sys::XDP_FLAGS_DRV_MODE)
                .with_context(|| format!("attach XDP_PASS to {i}"))?,
        );
    }
    println!("ready");
    loop {
        std::thread::park();
    }
}

fn main() -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("emptcp-bench-datapath needs root (namespaces, bpffs, XDP)");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--hold-pass") {
        let Some(ns) = args.get(1) else {
            bail!("usage: emptcp-bench-datapath --hold-pass NETNS IFACE...");
        };
        return hold_pass(ns, &args[2..]);
    }
    let id = std::process::id();
    let ns = format!("emptcp-bdp{id}");
    let root = PathBuf::from(format!("/sys/fs/bpf/emptcp-bdp{id}"));
    let _cleanup = Cleanup(vec![
        format!("ip netns del {ns}"),
        format!("rm -rf {}", root.display()),
    ]);
    sh(&format!(
        "ip netns add {ns} && ip -n {ns} link add bdp0 type veth peer name bdp1 && ip -n {ns} link set bdp0 up && ip -n {ns} link set bdp1 up"
    ))?;
    netns::enter(&ns)?;
    let object = Object::load()?;
    let layout = Layout::new(&root);
    // EMPTCP_BENCH_ACTIONS narrows the chain to cost the actions one by one
    // (e.g. "record_flow" or "record_flow, strip_add_addr").
    let actions = std::env::var("EMPTCP_BENCH_ACTIONS")
        .unwrap_or_else(|_| "record_flow, strip_add_addr, recover_add_addr".into());
    // Thresholds only where an action uses them (validation insists).
    let thresholds = if actions.contains("add_addr") {
        "    thresholds: {remove_below: 1MiB, recover_at: 4MiB}\n"
    } else {
        ""
    };
    converge(
        &layout,
        &object,
        &format!(
            "version: 1\ninterfaces: [{{name: bdp0, xdp_mode: skb, chains: [mptcp]}}]\nchains:\n  - name: mptcp\n    match: {{remote: [192.0.2.0/24], remote_ports: [5201]}}\n{thresholds}    actions: [{actions}]\n"
        ),
    )?;
    let ifindex = nix::net::if_::if_nametoindex("bdp0")?;
    let pass = sys::load_xdp_pass("bench_pass")?;
    let entry = ProgramInfo::from_pin(layout.prog("entry"))?.fd()?;

    // A tracked MPTCP connection: its SYN-ACK with MP_CAPABLE creates the flow.
    let mp_capable = vec![30, 12, 0x01, 0x81, 1, 2, 3, 4, 5, 6, 7, 8];
    let synack = seg(
        "192.0.2.2",
        "192.0.2.1",
        5201,
        40000,
        SYN | ACK,
        mp_capable,
        0,
    );
    sys::test_run_xdp(entry.as_fd(), &synack, ifindex, 1, 0)?;
    // A data segment: NOP NOP TS + DSS (4-byte data ack, 4-byte mapping).
    let mut opts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    opts.extend_from_slice(&[
        30, 20, 0x20, 0x05, 0, 0, 0, 9, 0, 0, 0x10, 0, 0, 0, 0, 1, 0x05, 0x78, 1, 1,
    ]);
    let data = seg("192.0.2.2", "192.0.2.1", 5201, 40000, ACK, opts, 1400);
    let other = seg("203.0.113.9", "192.0.2.1", 443, 40001, ACK, vec![], 1400);

    let runs = 7;
    let mut rows = Vec::new();
    for (name, frame) in [
        ("non-TCP packet (UDP)", udp_frame()),
        ("TCP packet matching no chain", other),
        (
            "MPTCP data packet through the chain (default: record_flow + strip + recover)",
            data.clone(),
        ),
    ] {
        let (base, cost) = compare(pass.as_fd(), entry.as_fd(), name, &frame, ifindex, runs)?;
        rows.push((name, base, cost));
    }
    // Each action program alone on the data packet, with the metadata the
    // entry program wrote for it (taken from one run of the whole chain,
    // which leaves the position at the last step: nothing is tail-called
    // after the program measured).
    let (_, described, meta_len) = sys::test_run_xdp_out(entry.as_fd(), &data, ifindex)?;
    // The chain takes its description off on every way out
    // (`chain::leave`): without one to hand the actions, the per-action
    // table is left out and says so.
    let mut alone = Vec::new();
    let names = if meta_len == 0 { "" } else { actions.as_str() };
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let prog = ProgramInfo::from_pin(layout.prog(name))?.fd()?;
        let mut v = Vec::new();
        for _ in 0..runs {
            let r = sys::test_run_xdp_meta(
                prog.as_fd(),
                &described,
                meta_len as u32,
                ifindex,
                REPEAT,
                0,
            )?;
            v.push(f64::from(r.duration_ns));
        }
        v.sort_by(f64::total_cmp);
        alone.push((name.to_string(), v[v.len() / 2]));
    }
    println!(
        "| path (BPF_PROG_TEST_RUN, repeat 10^6, median of {runs}) | bare XDP_PASS | emptcp | ratio | target |"
    );
    println!("|---|---|---|---|---|");
    for (i, (name, base, cost)) in rows.iter().enumerate() {
        let target = match i {
            0 => "",
            1 => "≤ 1.5×",
            _ => "≤ 10×",
        };
        println!(
            "| {name} | {base:.1} ns | {cost:.1} ns | {:.2}× | {target} |",
            cost / base
        );
    }

    println!();
    println!(
        "| one action program alone on the data packet (metadata given) | ns | ratio to bare XDP_PASS |"
    );
    println!("|---|---|---|");
    if alone.is_empty() {
        println!("| not measured: the entry program leaves no description on the packet | - | - |");
    }
    let base = rows[0].1;
    for (name, ns) in &alone {
        println!("| {name} | {ns:.1} | {:.2}× |", ns / base);
    }

    // Memory per flow: the FLOWS map preallocates every entry (LRU).
    let flows = aya::maps::MapData::from_pin(layout.map("FLOWS"))?;
    let info = flows.info()?;
    let fd = flows.fd().as_fd().as_raw_fd();
    let per_flow = memlock(fd)? as f64 / f64::from(info.max_entries());
    let addrs = aya::maps::MapData::from_pin(layout.map("FLOW_ADDRS"))?;
    let a_info = addrs.info()?;
    let per_addr =
        memlock(addrs.fd().as_fd().as_raw_fd())? as f64 / f64::from(a_info.max_entries());
    println!();
    println!("| memory | value |");
    println!("|---|---|");
    println!(
        "| FLOWS: key {} B + value {} B; kernel memory per entry (memlock / max_entries, {} entries) | {per_flow:.0} B |",
        info.key_size(),
        info.value_size(),
        info.max_entries()
    );
    println!(
        "| FLOW_ADDRS (stored ADD_ADDRs, {} entries = capacity/4): per entry | {per_addr:.0} B |",
        a_info.max_entries()
    );
    println!(
        "| total per tracked flow at the default sizing (FLOWS + FLOW_ADDRS/4) | {:.0} B |",
        per_flow + per_addr / 4.0
    );

    // Cost of a 10^6-flow map: a fresh apply (creates and preallocates it)
    // against one with a 1024-flow table.
    let mut times = Vec::new();
    for cap in [1024u32, 1_000_000] {
        let root2 = PathBuf::from(format!("/sys/fs/bpf/emptcp-bdp{id}-c{cap}"));
        let _c = Cleanup(vec![format!("rm -rf {}", root2.display())]);
        let l2 = Layout::new(&root2);
        let t = Instant::now();
        converge(
            &l2,
            &object,
            &format!(
                "version: 1\nsettings: {{flow_capacity: {cap}}}\ninterfaces: [{{name: bdp1, xdp_mode: skb, chains: [c]}}]\nchains: [{{name: c, actions: [count]}}]\n"
            ),
        )?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let _ = std::fs::remove_dir_all(&root2);
    }
    println!(
        "| first apply with a 10^6-flow table vs a 1024-flow table | {:.1} ms vs {:.1} ms |",
        times[1], times[0]
    );

    // An interface with the ingress capture (a packet_copy rule names it):
    // every TCP packet is looked up in SUBFLOWS through `ingress_capture`.
    converge(
        &layout,
        &object,
        &format!(
            "version: 1\ninterfaces: [{{name: bdp0, xdp_mode: skb, chains: [mptcp, cap]}}]\nchains:\n  - name: mptcp\n    match: {{remote: [192.0.2.0/24], remote_ports: [5201]}}\n{thresholds}    actions: [{actions}]\n  - name: cap\n    hook: egress\n    match: {{remote: [192.0.2.0/24], remote_ports: [5201]}}\n    actions: [count]\npacket_copy:\n  - {{name: revive, interface: bdp0, chain: cap, when: {{subflow_idle: 1s}}, send: {{mp_prio: {{backup: false}}}}}}\n"
        ),
    )?;
    // The data packet's subflow, as the egress capture would have created
    // it (local = the packet's destination on ingress).
    let mut key = emptcp_common::FlowKey {
        family: 4,
        local_port: 40000,
        remote_port: 5201,
        ..Default::default()
    };
    key.local[..4].copy_from_slice(&[192, 0, 2, 1]);
    key.remote[..4].copy_from_slice(&[192, 0, 2, 2]);
    let mut subflows: aya::maps::HashMap<_, emptcp_common::FlowKey, emptcp_common::SubflowState> =
        aya::maps::HashMap::try_from(aya::maps::Map::from_map_data(
            aya::maps::MapData::from_pin(layout.map("SUBFLOWS"))?,
        )?)?;
    let state = emptcp_common::SubflowState {
        flags: emptcp_common::SF_SEQ_SEEN | emptcp_common::SF_ACK_SEEN,
        ..Default::default()
    };
    subflows.insert(key, state, 0)?;
    let other = seg("203.0.113.9", "192.0.2.1", 443, 40001, ACK, vec![], 1400);
    println!();
    println!(
        "| on an interface with the ingress capture (packet_copy) | bare XDP_PASS | emptcp | ratio |"
    );
    println!("|---|---|---|---|");
    for (name, frame) in [
        (
            "TCP packet of no captured subflow, matching no chain",
            other,
        ),
        (
            "MPTCP data packet of a captured subflow, through capture and the chain",
            data,
        ),
    ] {
        let (base, cost) = compare(pass.as_fd(), entry.as_fd(), name, &frame, ifindex, runs)?;
        println!(
            "| {name} | {base:.1} ns | {cost:.1} ns | {:.2}× |",
            cost / base
        );
    }
    Ok(())
}
