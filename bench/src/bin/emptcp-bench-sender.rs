//! `emptcp-bench-sender`: how fast packet copy can emit forged control
//! packets. On a veth pair in a namespace of its own, one thread pinned to
//! one CPU sends the same forged duplicate ACK (IPv4, timestamps, 8-byte
//! DSS data ack, MP_PRIO: 82 bytes) through the TX-only AF_XDP socket
//! (copy mode: veth has no zero-copy) and through a raw AF_PACKET socket,
//! in alternating rounds of the same run; prints markdown rows with the
//! median rates and their ratio. Needs root.
//!
//! The frames carry a destination MAC that is not the peer's, so the peer
//! drops them at the IP layer: the benchmark measures the sending path,
//! not the peer's TCP stack (which would answer each ACK with a RST). The
//! peer's rx_packets counter checks that every frame was delivered.
//!
//! Then the trigger -> packet latency of a packet-copy round, judged
//! against its target (exit 1 when missed). `--write-docs FILE` rewrites
//! the generated region of FILE (docs/benchmarks.md) with the output.
//!
//! Usage: emptcp-bench-sender [--write-docs FILE]
use std::{
    fmt::Write as _,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use emptcp::{
    netns,
    packet::{ControlAck, DataAck, Flow, Signal, Timestamps, build_control},
    xsk::{SendError, Sender},
};

const ROUND: Duration = Duration::from_millis(1000);
const ROUNDS: usize = 5;
const BATCH: usize = 32;
const DEV: &str = "bs0";
const PEER: &str = "bs1";

fn sh(cmd: &str) -> anyhow::Result<String> {
    let o = Command::new("sh").arg("-c").arg(cmd).output()?;
    if !o.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The namespace, deleted (with the veth pair) on drop, even on error.
struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn frame() -> Vec<u8> {
    build_control(
        &Flow {
            src_mac: [2, 0, 0, 0, 0, 1],
            // Not the peer's MAC: dropped as PACKET_OTHERHOST (see above).
            dst_mac: [2, 0, 0, 0, 0, 0x99],
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            sport: 40000,
            dport: 5201,
            vlan_tci: None,
            raw_ip: false,
            ttl: 64,
        },
        &ControlAck {
            seq: 1,
            ack: 1,
            window: 512,
            timestamps: Some(Timestamps { tsval: 1, tsecr: 1 }),
            data_ack: Some(DataAck::Ack64(1)),
            signal: Some(Signal::MpPrio {
                backup: true,
                addr_id: None,
            }),
        },
    )
    .expect("frame")
}

fn rx_packets(dev: &str) -> anyhow::Result<u64> {
    let out = sh(&format!("ip -s -j link show dev {dev}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("rx packets")
}

/// Calls `step` (which sends some frames and returns how many) for one
/// round; returns packets per second and the packets sent.
fn round(mut step: impl FnMut() -> anyhow::Result<u64>) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let mut n = 0;
    loop {
        for _ in 0..64 {
            n += step()?;
        }
        let t = start.elapsed();
        if t >= ROUND {
            return Ok((n as f64 / t.as_secs_f64(), n));
        }
    }
}

/// A raw AF_PACKET socket bound to the interface, sending only (protocol
/// 0: it receives nothing). Default path, through the (noqueue) qdisc.
fn packet_socket(ifindex: u32) -> anyhow::Result<OwnedFd> {
    // SAFETY: plain syscalls; the fd is owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        ensure!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        let r = libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        );
        ensure!(r == 0, "bind: {}", std::io::Error::last_os_error());
        Ok(fd)
    }
}

fn packet_send(fd: &OwnedFd, f: &[u8]) -> anyhow::Result<u64> {
    // SAFETY: f is valid for its length.
    let r = unsafe { libc::send(fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
    ensure!(r >= 0, "send: {}", std::io::Error::last_os_error());
    Ok(1)
}

fn packet_sendmmsg(fd: &OwnedFd, f: &[u8]) -> anyhow::Result<u64> {
    let mut iov = libc::iovec {
        iov_base: f.as_ptr() as *mut _,
        iov_len: f.len(),
    };
    // SAFETY: zeroed msghdrs are valid; each points to the one iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| unsafe {
            let mut m: libc::mmsghdr = std::mem::zeroed();
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: msgs holds BATCH valid headers.
    let r = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
    ensure!(r >= 0, "sendmmsg: {}", std::io::Error::last_os_error());
    Ok(r as u64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const DOCS: emptcp_bench::Region = emptcp_bench::Region {
    begin: "<!-- generated by `scripts/bench.sh sender --write-docs` (emptcp-bench-sender): begin -->",
    end: "<!-- generated by `scripts/bench.sh sender --write-docs`: end -->",
};

fn main() -> anyhow::Result<()> {
    let mut docs = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--write-docs" => {
                docs = Some(std::path::PathBuf::from(
                    it.next().context("--write-docs needs a file")?,
                ))
            }
            other => {
                bail!("unknown argument {other:?}; usage: emptcp-bench-sender [--write-docs FILE]")
            }
        }
    }
    let load_start = emptcp_bench::loadavg();
    let (tables, met) = measure()?;
    emptcp_bench::Run {
        tables,
        met,
        load_start,
    }
    .publish("emptcp-bench-sender", &DOCS, docs.as_deref())
}

/// The rate tables and the latency table, and whether the latency target
/// was met.
fn measure() -> anyhow::Result<(String, bool)> {
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root (namespaces, AF_XDP)"
    );
    let ns = Ns(format!("emptcp-bsend-{}", std::process::id()));
    emptcp_bench::undo_on_signal(format!("ip netns del {}", ns.0));
    sh(&format!("ip netns add {}", ns.0))?;
    // No IPv6 in the namespace: its neighbour discovery and MLD frames
    // would make the peer's receive count differ from what we sent.
    sh(&format!(
        "ip netns exec {} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
        ns.0
    ))?;
    sh(&format!(
        "ip -n {n} link add {DEV} type veth peer name {PEER} && \
         ip -n {n} addr add 192.0.2.1/24 dev {DEV} && \
         ip -n {n} addr add 192.0.2.2/24 dev {PEER} && \
         ip -n {n} link set {DEV} up && ip -n {n} link set {PEER} up && \
         ip -n {n} link set lo up",
        n = ns.0
    ))?;
    // Only this (single) thread moves; the host's bpffs is not involved.
    netns::enter(&ns.0)?;
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(0)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;

    let f = frame();
    let mut tx = Sender::open(DEV, 0)?;
    let ps = packet_socket(tx.ifindex())?;

    let rx0 = rx_packets(PEER)?;
    let mut total = 0u64;
    let mut xdp_err = 0u64;
    let (mut xdp1, mut xdpb, mut pk1, mut pkb) = (vec![], vec![], vec![], vec![]);
    let mut xdp_one = |tx: &mut Sender| match tx.send(&f) {
        Ok(()) => Ok(1),
        Err(SendError::RingFull(_)) => {
            xdp_err += 1;
            Ok(0)
        }
        Err(e) => Err(anyhow::Error::from(e)),
    };
    for _ in 0..ROUNDS {
        let (r, n) = round(|| xdp_one(&mut tx))?;
        xdp1.push(r);
        total += n;
        let (r, n) = round(|| Ok(tx.send_batch(std::iter::repeat_n(f.as_slice(), BATCH))? as u64))?;
        xdpb.push(r);
        total += n;
        let (r, n) = round(|| packet_send(&ps, &f))?;
        pk1.push(r);
        total += n;
        let (r, n) = round(|| packet_sendmmsg(&ps, &f))?;
        pkb.push(r);
        total += n;
    }
    ensure!(
        tx.flush(Duration::from_secs(2))?,
        "AF_XDP frames not completed"
    );
    std::thread::sleep(Duration::from_millis(200));
    let delivered = rx_packets(PEER)? - rx0;

    // What the forging itself costs, for scale.
    let start = Instant::now();
    let mut forged = 0u64;
    while start.elapsed() < ROUND {
        for _ in 0..1000 {
            std::hint::black_box(frame());
        }
        forged += 1000;
    }
    let forge_rate = forged as f64 / start.elapsed().as_secs_f64();

    let (x1, xb, p1, pb) = (median(xdp1), median(xdpb), median(pk1), median(pkb));
    let k = |r: f64| format!("{:.0} kpps ({:.0} ns/packet)", r / 1e3, 1e9 / r);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| forged control packet ({} B), one core, median of {ROUNDS} × {} s | AF_XDP (copy mode) | AF_PACKET | AF_XDP / AF_PACKET |",
        f.len(),
        ROUND.as_secs_f64()
    );
    let _ = writeln!(o, "|---|---|---|---|");
    let _ = writeln!(
        o,
        "| one frame per call (send / send()) | {} | {} | {:.2}× |",
        k(x1),
        k(p1),
        x1 / p1
    );
    let _ = writeln!(
        o,
        "| batches of {BATCH} (send_batch / sendmmsg) | {} | {} | {:.2}× |",
        k(xb),
        k(pb),
        xb / pb
    );
    let c = tx.counters();
    let _ = writeln!(
        o,
        "\nDelivered to the peer: {delivered} of {total} frames sent; AF_XDP: {} completed, {} ring-full retries, {} busy kicks, {} invalid descriptors. Forging one frame (`build_control`, allocating): {:.0} ns.",
        c.sent,
        xdp_err,
        c.busy_kicks,
        tx.kernel_stats()?.tx_invalid_descs,
        1e9 / forge_rate
    );
    ensure!(
        delivered == total,
        "the peer received {delivered} frames, {total} were sent"
    );
    drop(tx);
    let (lat, met) = latency()?;
    let (walk, walk_met) = capture_walk()?;
    Ok((format!("{o}\n{lat}\n{walk}"), met && walk_met))
}

/// Subflows in the capture-walk measurement.
const WALK_SUBFLOWS: u64 = 100_000;
/// Its target: at most 1 µs per captured subflow (a packet-copy round
/// reads the capture once a second: 10 % of one core at 10^5 subflows;
/// reading one entry at a time took 2.6-3.2 µs on the machines measured).
const WALK_TARGET: Duration = Duration::from_millis(100);

/// What reading the capture costs a packet-copy round: `SUBFLOWS` (an LRU
/// hash of the capture's key and value) with 10^5 subflows, read whole
/// the way the packet-copy task reads it (`sys::map_entries`, a batch
/// of entries per system call) and, as the baseline, one entry at a time
/// (aya's iterator: next key, then lookup), in alternating order, the
/// median of 5 each.
fn capture_walk() -> anyhow::Result<(String, bool)> {
    use std::os::fd::AsFd as _;

    use emptcp_common::{FlowKey, SubflowState};
    let def = emptcp::object::MapDef {
        map_type: 9, // BPF_MAP_TYPE_LRU_HASH
        key_size: size_of::<FlowKey>() as u32,
        value_size: size_of::<SubflowState>() as u32,
        max_entries: emptcp_common::DEFAULT_SUBFLOW_CAPACITY,
        flags: 0,
        layout: None,
    };
    let fd = emptcp::sys::map_create(&def, "bench_walk")?;
    let md = aya::maps::MapData::from_fd(fd.try_clone()?)?;
    let mut m: aya::maps::HashMap<_, FlowKey, SubflowState> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(md))?;
    for i in 0..WALK_SUBFLOWS {
        let mut key = FlowKey {
            family: 4,
            local_port: 40000 + (i % 20000) as u16,
            remote_port: 443,
            ..FlowKey::default()
        };
        key.local[..4].copy_from_slice(&[192, 0, 2, 1]);
        key.remote[..4].copy_from_slice(&[198, 51, 100, (i / 20000) as u8]);
        let v = SubflowState {
            snd_nxt: i as u32,
            ..SubflowState::default()
        };
        m.insert(key, v, 0)?;
    }
    let (mut batched, mut each) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut n = 0u64;
        emptcp::sys::map_entries(
            fd.as_fd(),
            def.key_size as usize,
            def.value_size as usize,
            emptcp::sys::BATCH_ENTRIES,
            |k, v| {
                std::hint::black_box((k, v));
                n += 1;
                Ok(true)
            },
        )?;
        batched.push(start.elapsed().as_secs_f64());
        ensure!(n == WALK_SUBFLOWS, "the batched walk read {n} entries");
        let start = Instant::now();
        let mut n = 0u64;
        for e in m.iter() {
            std::hint::black_box(e?);
            n += 1;
        }
        each.push(start.elapsed().as_secs_f64());
        ensure!(n == WALK_SUBFLOWS, "the per-entry walk read {n} entries");
    }
    let (b, e) = (median(batched), median(each));
    let met = b <= WALK_TARGET.as_secs_f64();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| reading the capture (`SUBFLOWS`, {WALK_SUBFLOWS} subflows) once, median of {ROUNDS} | batched (BPF_MAP_LOOKUP_BATCH, {} per call) | one entry at a time (next key + lookup) | ratio | target |",
        emptcp::sys::BATCH_ENTRIES
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    let _ = writeln!(
        o,
        "| a packet-copy round's walk | {:.1} ms | {:.1} ms | {:.1}× faster | ≤ {} ms — {} |",
        b * 1e3,
        e * 1e3,
        e / b,
        WALK_TARGET.as_millis(),
        if met { "met" } else { "**MISSED**" }
    );
    Ok((o, met))
}

/// Trigger -> packet on the wire: a packet-copy round that finds a subflow
/// due (subflow_idle) forges its MP_PRIO and sends it through AF_XDP; the
/// clock stops when the peer's AF_PACKET socket has it. A new subflow each
/// time, so the rule fires every time.
fn latency() -> anyhow::Result<(String, bool)> {
    use emptcp::copy::{
        capture::monotonic_ns,
        forge::Captured,
        rules::{Armed, Payload},
        runner::Runner,
        trigger::{Rule, SubflowView, When},
    };
    const N: u16 = 1000;
    // The sender's socket of the rate test frees its queue some ms later.
    std::thread::sleep(Duration::from_millis(100));
    let ifindex = nix::net::if_::if_nametoindex(DEV)?;
    let peer = nix::net::if_::if_nametoindex(PEER)?;
    let rx = unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        );
        ensure!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = peer as i32;
        ensure!(
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32
            ) == 0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        fd
    };
    let armed = [Armed {
        rule: Rule {
            name: "bench".into(),
            ifindex,
            chain: 0,
            when: When::SubflowIdle { idle_ns: 1_000_000 },
        },
        interface: DEV.into(),
        raw_ip: false,
        payload: Payload::MpPrio { backup: false },
    }];
    let mut runner = Runner::new();
    let mut lat = Vec::new();
    let mut buf = vec![0u8; 2048];
    for i in 0..N {
        let port = 10_000 + i;
        let mut key = emptcp_common::FlowKey {
            family: 4,
            local_port: port,
            remote_port: 5201,
            ..Default::default()
        };
        key.local[..4].copy_from_slice(&[192, 0, 2, 1]);
        key.remote[..4].copy_from_slice(&[192, 0, 2, 2]);
        let now = monotonic_ns();
        let view = SubflowView {
            key,
            conn: 0,
            chain: 0,
            ifindex,
            last_activity_ns: now - 2_000_000,
            conn_bytes: None,
        };
        let cap = Captured {
            key,
            mac: [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1],
            vlan_tci: 0,
            snd_nxt: 1000,
            ack: 2000,
            window: 512,
            timestamps: None,
            data_ack: None,
            keys: None,
        };
        let t0 = monotonic_ns();
        ensure!(
            runner.round(&armed, &[], &[(view, cap)], &mut |_| Some(cap), t0) == 1,
            "the rule did not send: {:?}",
            runner.status()
        );
        loop {
            let n = unsafe { libc::recv(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            ensure!(
                n > 0,
                "no frame at the peer: {}",
                std::io::Error::last_os_error()
            );
            let n = n as usize;
            // IPv4 TCP from the rule: source port at 14 + 20.
            if n >= 54 && buf[23] == 6 && u16::from_be_bytes([buf[34], buf[35]]) == port {
                break;
            }
        }
        lat.push(monotonic_ns() - t0);
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1e3;
    let (p50, p99) = (pct(0.50), pct(0.99));
    let met = p99 < 1000.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| trigger -> packet at the peer (packet-copy round: decide, forge, AF_XDP send; veth; {N} firings) | p50 | p99 | target |"
    );
    let _ = writeln!(o, "|---|---|---|---|");
    let _ = writeln!(
        o,
        "| subflow_idle rule, MP_PRIO | {p50:.1} µs | {p99:.1} µs | {} |",
        emptcp_bench::verdict("p99 < 1 ms", met)
    );
    Ok((o, met))
}
