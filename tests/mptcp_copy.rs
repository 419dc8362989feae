//! Packet copy end to end on the two-path MPTCP testbed (docs/packet-copy.md), with the
//! daemon (`emptcp watch`) on the client:
//!
//! * an egress chain on path B (cli1) inserts MP_PRIO(backup=1) into what
//!   the client sends there, so the SERVER treats subflow B as a backup;
//! * the connection idles (`--idle-before`): nothing flows on B;
//! * with the `subflow_idle` rule, the daemon forges MP_PRIO(backup=0) for
//!   B from the egress capture and sends it through AF_XDP: the daemon
//!   counts it sent, the server's MPTcpExtMPPrioRx counts it received, and
//!   the server's stack clears subflow B's backup flag (its SF_PRIORITY
//!   event); without the rule
//!   (same run, first) B keeps the flag for the whole connection.
//!
//! Nothing falls back, no checksum error, no reset, and the server counts
//! no retransmission for the forged duplicate ACK.
mod common;
mod mptcp_common;
#[path = "watch_support/mod.rs"]
mod watch_support;

use std::{path::Path, time::Duration};

use common::*;
use mptcp_common::*;
use serde_json::Value;
use watch_support::*;

const PRIO_RX: &str = "MPTcpExtMPPrioRx";

/// Path B as the tests see it: the client's end (a local address prefix
/// as `ss`/the transfer report print it), the server's, and the prefix the
/// egress chain selects.
struct PathB {
    client: &'static str,
    server: &'static str,
    prefix: &'static str,
}

const PATH_B4: PathB = PathB {
    client: "198.51.100.1:",
    server: "198.51.100.2:",
    prefix: "198.51.100.0/24",
};

const PATH_B6: PathB = PathB {
    client: "[2001:db8:b::1]:",
    server: "[2001:db8:b::2]:",
    prefix: "2001:db8:b::/64",
};

/// A `packet_copy` rule named `name` that sends MP_PRIO(backup=0) on path B
/// (cli1) for the subflows of chain `backup-b` when `when` holds.
fn revive_b(name: &str, when: &str) -> String {
    format!(
        "packet_copy:
  - name: {name}
    interface: cli1
    chain: backup-b
    when: {{{when}}}
    send: {{mp_prio: {{backup: false}}}}
"
    )
}

/// The egress chain that makes the client's subflows to `prefix` (path B)
/// a backup for the server.
fn backup_b(prefix: &str) -> String {
    format!(
        "  - name: backup-b
    hook: egress
    match: {{remote: [{prefix}], remote_ports: [5201]}}
    actions: [set_backup: {{backup: true}}]
"
    )
}

/// Where the client's ingress (and with it the rule's ingress capture)
/// runs on path B.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ingress {
    Xdp,
    /// `ingress_hook: tc`: `tc_entry` -> `tc_ingress_capture`, no XDP
    /// program on cli1.
    Tc,
}

fn policy(revive: bool, b: &PathB, ingress: Ingress) -> String {
    let rule = if revive {
        revive_b("revive", "subflow_idle: 300ms")
    } else {
        String::new()
    };
    let hook = match ingress {
        Ingress::Xdp => "",
        Ingress::Tc => ", ingress_hook: tc",
    };
    format!(
        "version: 1
settings: {{flow_capacity: 16384}}
interfaces:
  - {{name: cli1{hook}, chains: [backup-b]}}
chains:
{chain}{rule}",
        chain = backup_b(b.prefix)
    )
}

fn received_on(res: &Value, local: &str) -> u64 {
    res["subflow_tcpinfo"]
        .as_array()
        .unwrap_or_else(|| panic!("no subflow_tcpinfo: {res}"))
        .iter()
        .find(|s| s["local"].as_str().is_some_and(|l| l.starts_with(local)))
        .and_then(|s| s["bytes_received"].as_u64())
        .unwrap_or_else(|| panic!("no subflow from {local}: {res}"))
}

/// Server counters (all of /proc/net/netstat and snmp, named as nstat
/// names them: `TcpExtTCPFastRetrans`), read by a thread that entered the
/// server's namespace, from /proc/thread-self/net: no process is started,
/// so a read takes well under a millisecond even where starting one takes
/// longer than the phase it brackets (a starved emulated guest).
fn server(lab: &Lab) -> Counters {
    let path = Path::new("/run/netns").join(&lab.tb.srv);
    in_netns_at(&path, || {
        let mut out = Counters::new();
        for f in ["netstat", "snmp"] {
            let text = std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
                .expect("server counters");
            let lines: Vec<&str> = text.lines().collect();
            // Pairs of lines: "Prefix: names..." then "Prefix: values...".
            for pair in lines.chunks(2) {
                let [names, values] = pair else { continue };
                let mut n = names.split_whitespace();
                let prefix = n.next().unwrap_or_default().trim_end_matches(':');
                for (name, v) in n.zip(values.split_whitespace().skip(1)) {
                    if let Ok(v) = v.parse() {
                        out.insert(format!("{prefix}{name}"), v);
                    }
                }
            }
        }
        out
    })
}

/// What the server may count for a duplicate ACK that is not one: none of
/// these may move while the connection idles and the forged packet arrives.
const NOT_CONGESTION: [&str; 6] = [
    "TcpRetransSegs",
    "TcpExtTCPFastRetrans",
    "TcpExtTCPLossProbes",
    "TcpExtTCPSACKReorder",
    "TcpExtTCPTimeouts",
    "MPTcpExtMPRstRx",
];

/// Of those, what only ACKs move: a forged packet taken for a duplicate
/// ACK would show here. The others (a tail loss probe, a retransmission
/// timeout and the segments they resend) are timers, which a loaded
/// machine fires on a path that carries traffic whatever emptcp does.
const ACK_DRIVEN: [&str; 3] = [
    "TcpExtTCPFastRetrans",
    "TcpExtTCPSACKReorder",
    "MPTcpExtMPRstRx",
];

/// What the server's subflow B looked like while the download ran.
#[derive(Debug, Default)]
struct Watched {
    /// Subflow B was marked backup (the MP_PRIO(backup) the egress chain
    /// inserted was received and acted on).
    backup: bool,
    /// ... and later made regular again, on the same connection.
    revived: bool,
}

/// Server counters, as a map.
type Counters = std::collections::BTreeMap<String, u64>;

/// The server's MPTCP stack, as it took MP_PRIO on subflow B: `ip mptcp
/// monitor`'s SF_PRIORITY events (`SF_PRIO` in its output; the kernel emits one for each MP_PRIO
/// it receives, with the subflow's backup flag after it) for the subflow
/// whose local address is B's, with the server's counters read as each
/// arrived. Event-driven: a backup phase shorter than any poll of `ss`
/// (which an emulated guest runs slowly) is seen all the same.
fn watch_priority(
    lab: &Lab,
    b: &PathB,
    done: &std::sync::atomic::AtomicBool,
) -> (Watched, Option<Counters>, Option<Counters>) {
    use std::io::{BufRead as _, BufReader};
    let addr = b.server.trim_end_matches(':').trim_matches(['[', ']']);
    let mut child = std::process::Command::new("ip")
        .args(["-n", &lab.tb.srv, "mptcp", "monitor"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ip mptcp monitor");
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut w = Watched::default();
    let (mut at_backup, mut at_revival) = (None, None);
    // The reader ends when the monitor is killed, once `done` is set.
    std::thread::scope(|sc| {
        sc.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Events the kernel queued before the end are read first.
            std::thread::sleep(Duration::from_millis(200));
            let _ = child.kill();
        });
        for line in out.lines().map_while(Result::ok) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ours = line.contains("SF_PRIO")
                && words
                    .iter()
                    .any(|t| *t == format!("saddr4={addr}") || *t == format!("saddr6={addr}"));
            if !ours {
                continue;
            }
            eprintln!("server: {line}");
            if words.contains(&"backup=1") && !w.backup {
                w.backup = true;
                at_backup = Some(server(lab));
            } else if words.contains(&"backup=0") && w.backup && !w.revived {
                w.revived = true;
                at_revival = Some(server(lab));
            }
        }
    });
    let _ = child.wait();
    (w, at_backup, at_revival)
}

/// One download that idles 1.5 s first (path B joined before the idle).
const IDLE_DOWNLOAD: &[&str] = &[
    "--download",
    "40M",
    "--idle-before",
    "1.5",
    "--wait-subflows-before",
    "1",
    "--wait-before-timeout",
    "3",
    "--subflow-tcpinfo",
];

/// One connection (`args`: mptcp_xfer.py client) with the server's MPTCP
/// events watched; returns the result, the client's counter deltas, the
/// server's over the whole run, the server's from the moment subflow B was
/// marked backup to the moment it was revived (or to the end of the
/// transfer), and what the server's stack did with subflow B's backup flag.
#[allow(clippy::type_complexity)]
fn observed(
    lab: &Lab,
    b: &PathB,
    args: &[&str],
) -> (
    Value,
    impl Fn(&str) -> i64,
    impl Fn(&str) -> i64,
    impl Fn(&str) -> i64,
    Watched,
) {
    let srv_before = server(lab);
    let done = std::sync::atomic::AtomicBool::new(false);
    let ((res, d), (watched, at_backup, at_revival)) = std::thread::scope(|sc| {
        let monitor = sc.spawn(|| watch_priority(lab, b, &done));
        // The monitor subscribes before the connection starts.
        std::thread::sleep(Duration::from_millis(300));
        let r = run(lab, args);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, monitor.join().expect("monitor thread"))
    });
    let srv_after = server(lab);
    let at_backup = at_backup.unwrap_or_else(|| srv_before.clone());
    let at_revival = at_revival.unwrap_or_else(|| srv_after.clone());
    (
        res,
        d,
        move |n: &str| delta(&srv_before, &srv_after, n),
        // From the moment subflow B is backup (joined, before the idle) to
        // its revival: the idle and the forged packet, not the handshakes
        // (a slow guest kernel retransmits a SYN-ACK now and then).
        move |n: &str| delta(&at_backup, &at_revival, n),
        watched,
    )
}

#[test]
fn an_idle_backup_subflow_is_revived_by_a_forged_mp_prio() {
    if kernel_or_skip("an_idle_backup_subflow_is_revived_by_a_forged_mp_prio") {
        revive_idle_backup("copy", &[], &PATH_B4);
    }
}

/// The same with cli1's ingress at the TC hook (`ingress_hook: tc`, the
/// choice for links with GRO): the rule's ingress capture runs there
/// (`tc_ingress_capture`, tests/datapath_capture.rs runs the capture's
/// cases on both hooks), cli1 has no XDP program, and the forged packet
/// still leaves through the TX-only AF_XDP socket, which needs none.
#[test]
fn an_idle_backup_subflow_is_revived_with_the_capture_at_tc() {
    if kernel_or_skip("an_idle_backup_subflow_is_revived_with_the_capture_at_tc") {
        revive_idle_backup_at("copytc", &[], &PATH_B4, Ingress::Tc);
    }
}

/// The same over a raw-IP path B (a TUN pair, no Ethernet header): the
/// egress chain and the capture parse raw IP, and the forged MP_PRIO goes
/// out of the TUN device as a bare IP packet (an Ethernet frame there
/// would reach the server as garbage and be dropped).
#[test]
fn an_idle_backup_subflow_on_a_tun_path_is_revived_by_a_forged_mp_prio() {
    if kernel_or_skip("an_idle_backup_subflow_on_a_tun_path_is_revived_by_a_forged_mp_prio") {
        revive_idle_backup("copytun", &[("LINK_B", "tun")], &PATH_B4);
    }
}

/// The same over IPv6 veth paths: the capture keys IPv6 subflows and the
/// forged MP_PRIO is an IPv6 segment (its checksum over the IPv6
/// pseudo-header).
#[test]
fn an_idle_backup_subflow_on_an_ipv6_path_is_revived_by_a_forged_mp_prio() {
    if kernel_or_skip("an_idle_backup_subflow_on_an_ipv6_path_is_revived_by_a_forged_mp_prio") {
        revive_idle_backup("copy6", &[("IPV6", "1")], &PATH_B6);
    }
}

/// The same over an IPv6 raw-IP path B (TUN): a bare IPv6 packet.
#[test]
fn an_idle_backup_subflow_on_an_ipv6_tun_path_is_revived_by_a_forged_mp_prio() {
    if kernel_or_skip("an_idle_backup_subflow_on_an_ipv6_tun_path_is_revived_by_a_forged_mp_prio") {
        revive_idle_backup("copy6tun", &[("LINK_B", "tun"), ("IPV6", "1")], &PATH_B6);
    }
}

/// What a revival by the rule's forged MP_PRIO(backup=0) shows: the server
/// marked subflow B backup and later regular again; from the one to the
/// other (the idle and the forged packet) it counted no retransmission,
/// loss or congestion event (the forged packet is not taken for a duplicate
/// ACK); nothing fell back or broke; the daemon's sends all succeeded.
///
/// `traffic`: the window from backup to revival also carried data on
/// another path. Then only the ACK-driven counters must stay still, and a
/// retransmitted segment must come with a timer that explains it (a loss
/// probe or a timeout): on a loaded machine the busy path's timers fire now
/// and then (once in 5 runs of the suite with every core busy:
/// `TcpRetransSegs` +1), which says nothing of the forged packet on the
/// idle one.
fn assert_revived(
    res: &Value,
    seen: &Watched,
    until_revived: &impl Fn(&str) -> i64,
    d: &impl Fn(&str) -> i64,
    st: &Value,
    traffic: bool,
) {
    assert!(
        seen.backup,
        "the server never marked subflow B backup: {res}"
    );
    assert!(
        seen.revived,
        "the server kept subflow B backup despite the forged MP_PRIO: {res}"
    );
    let moved: Vec<(&str, i64)> = NOT_CONGESTION
        .iter()
        .map(|c| (*c, until_revived(c)))
        .collect();
    let strict: &[&str] = if traffic {
        &ACK_DRIVEN
    } else {
        &NOT_CONGESTION
    };
    for (c, n) in &moved {
        if strict.contains(c) {
            assert_eq!(*n, 0, "server {c} moved before the revival: {moved:?}");
        }
    }
    if traffic {
        let timers = until_revived("TcpExtTCPLossProbes") + until_revived("TcpExtTCPTimeouts");
        assert!(
            until_revived("TcpRetransSegs") == 0 || timers > 0,
            "the server retransmitted before the revival without a timer: {moved:?}"
        );
    }
    no_damage(d);
    assert_eq!(
        st["packet_copy"][0]["send_failures"].as_u64(),
        Some(0),
        "{st:#}"
    );
}

/// cli1 with the rule: its ingress (and the capture) at TC, as status
/// says, and no XDP program on the device.
fn captured_at_tc(lab: &Lab) {
    let st = status_json(lab.root(), &lab.tb.cli);
    let cli1 = st["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "cli1"))
        .unwrap_or_else(|| panic!("cli1 not in status: {st:#}"));
    assert_eq!(cli1["ingress_hook"], "tc", "{cli1:#}");
    assert_eq!(cli1["program"], "tc_entry", "{cli1:#}");
    assert_eq!(cli1["attached"], true, "{cli1:#}");
    assert_eq!(cli1["capture"], true, "{cli1:#}");
    let link = must(&format!("ip -n {} -d link show dev cli1", lab.tb.cli));
    assert!(!link.contains("prog/xdp"), "an XDP program on cli1: {link}");
}

/// Control (no rule: subflow B stays backup) and revival (the rule's forged
/// MP_PRIO clears it) on a testbed with `options` (testbed.sh).
fn revive_idle_backup(name: &str, options: &[(&str, &str)], b: &PathB) {
    revive_idle_backup_at(name, options, b, Ingress::Xdp)
}

/// [`revive_idle_backup`] with cli1's ingress on `ingress`.
fn revive_idle_backup_at(name: &str, options: &[(&str, &str)], b: &PathB, ingress: Ingress) {
    let lab = Lab::with(name, options);
    let file = policy_file(&lab.dir, "p.yaml", &policy(false, b, ingress));
    let daemon = Daemon::start(lab.root(), &lab.tb.cli, &["-f", file.to_str().unwrap()]);
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });

    // Control, without the rule: the server got MP_PRIO(backup), marked
    // subflow B backup, and it stayed so for the whole connection.
    let (res, d, srv, _, seen) = observed(&lab, b, IDLE_DOWNLOAD);
    assert_eq!(res["joined_before"], true, "no join before the idle: {res}");
    let b_without = received_on(&res, b.client);
    eprintln!(
        "without the rule: path B received {b_without}, server MPPrioRx +{}, {seen:?}",
        srv(PRIO_RX)
    );
    assert!(
        srv(PRIO_RX) >= 1,
        "the server got no MP_PRIO(backup): {res}"
    );
    assert!(
        seen.backup,
        "the server never marked subflow B backup: {res}"
    );
    assert!(
        !seen.revived,
        "subflow B left backup without the rule: {res}"
    );
    no_damage(&d);

    // With the rule: the idle subflow B gets MP_PRIO(backup=0) from AF_XDP.
    std::fs::write(&file, policy(true, b, ingress)).unwrap();
    daemon.wait_state("rule armed", Duration::from_secs(10), |s| {
        s["packet_copy"][0]["armed"] == true
    });
    if ingress == Ingress::Tc {
        captured_at_tc(&lab);
    }
    let (res, d, srv, until_revived, seen) = observed(&lab, b, IDLE_DOWNLOAD);
    assert_eq!(res["joined_before"], true, "no join before the idle: {res}");
    let b_with = received_on(&res, b.client);
    let st = daemon.state().unwrap_or_default();
    eprintln!(
        "with the rule: path B received {b_with} (without {b_without}), server MPPrioRx +{}, {seen:?}, rule {:#}",
        srv(PRIO_RX),
        st["packet_copy"][0]
    );
    // What emptcp controls, each step: the daemon sent the forged packet,
    // the server counted it, and acted on it (subflow B no longer backup).
    // No timing margin: the server's events cover the whole connection.
    // (How many bytes B then carries is the scheduler's choice: reported.)
    let sent = st["packet_copy"][0]["sent"].as_u64().unwrap_or(0);
    assert!(
        sent >= 1,
        "the rule sent nothing: {st:#}\n{}",
        daemon.log_text()
    );
    assert!(
        srv(PRIO_RX) >= 2,
        "the server did not get both MP_PRIOs (backup, then the forged one): {res}"
    );
    assert_revived(&res, &seen, &until_revived, &d, &st, false);
    for c in ["MPTcpExtMPRstRx", "TcpExtTCPAbortOnData"] {
        assert_eq!(srv(c), 0, "server {c}");
    }

    // The interface goes: the rule is disarmed, and says why.
    must(&format!("ip -n {} link del cli1", lab.tb.cli));
    let st = daemon.wait_state("rule disarmed", Duration::from_secs(10), |s| {
        s["packet_copy"][0]["armed"] == false
    });
    let reason = st["packet_copy"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cli1 does not exist"), "{st:#}");
    drop(daemon);
    lab.destroy();
}

/// Path B backup (egress set_backup on cli1), path A's subflows captured
/// too (an egress chain on cli0), and, with `rule`, MP_PRIO(backup=0) on B
/// once every other subflow of its connection (A) has carried nothing for
/// 1 s.
fn failover_policy(rule: bool) -> String {
    let rule = if rule {
        revive_b("revive-on-a-idle", "other_subflows_idle: 1s")
    } else {
        String::new()
    };
    format!(
        "version: 1
settings: {{flow_capacity: 16384}}
interfaces:
  - {{name: cli0, chains: [capture-a]}}
  - {{name: cli1, chains: [backup-b]}}
chains:
  - name: capture-a
    hook: egress
    match: {{remote: [192.0.2.0/24], remote_ports: [5201]}}
    actions: [count]
{chain}{rule}",
        chain = backup_b(PATH_B4.prefix)
    )
}

/// `other_subflows_idle` watches the path that carries the connection, not
/// the backup: in one run, on one testbed, three connections of paced
/// request/response (64 KiB each way every 50 ms, all answers on A since
/// the server holds B backup), then the connection kept open and quiet:
///
/// 1. without the rule, quiet for 3 s: B stays backup (the control);
/// 2. with the rule, 40 rounds (about 2 s) and closed at once: B is idle
///    all along (a `subflow_idle: 1s` rule would fire), A never goes quiet
///    for 1 s (its longest gap is a round, 50 ms plus the exchange: a 20x
///    margin for a loaded machine), so nothing is sent and B stays backup;
/// 3. with the rule, 10 rounds then 3 s quiet: A is quiet for 1 s, the
///    rule sends MP_PRIO(backup=0) on B and the server makes B regular
///    (2 s of margin for the daemon's wake-up and the send).
#[test]
fn a_backup_subflow_is_revived_when_the_other_path_goes_quiet() {
    if !kernel_or_skip("a_backup_subflow_is_revived_when_the_other_path_goes_quiet") {
        return;
    }
    let b = &PATH_B4;
    let lab = Lab::new("copyother");
    let file = policy_file(&lab.dir, "p.yaml", &failover_policy(false));
    let daemon = Daemon::start(lab.root(), &lab.tb.cli, &["-f", file.to_str().unwrap()]);
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    let quiet = paced("10", &["--linger", "3"]);
    let busy = paced("40", &[]);

    // 1. Control: no rule, A quiet for 3 s, B stays backup.
    let (res, d, _, _, seen) = observed(&lab, b, &quiet);
    assert!(
        seen.backup,
        "the server never marked subflow B backup: {res}"
    );
    assert!(
        !seen.revived,
        "subflow B left backup without the rule: {res}"
    );
    no_damage(&d);

    std::fs::write(&file, failover_policy(true)).unwrap();
    daemon.wait_state("rule armed", Duration::from_secs(10), |s| {
        s["packet_copy"][0]["armed"] == true
    });
    let sent = |daemon: &Daemon| {
        daemon.state().unwrap_or_default()["packet_copy"][0]["sent"]
            .as_u64()
            .unwrap_or(0)
    };

    // 2. A busy, B idle: the rule holds.
    let (res, d, _, _, seen) = observed(&lab, b, &busy);
    assert!(
        seen.backup,
        "the server never marked subflow B backup: {res}"
    );
    assert!(
        !seen.revived,
        "subflow B was revived while path A carried the connection: {res}"
    );
    assert_eq!(
        sent(&daemon),
        0,
        "the rule fired while path A was busy:\n{}",
        daemon.log_text()
    );
    no_damage(&d);

    // 3. A quiet: the rule revives B.
    let (res, d, srv, until_revived, seen) = observed(&lab, b, &quiet);
    let st = daemon.state().unwrap_or_default();
    eprintln!(
        "A quiet with the rule: server MPPrioRx +{}, {seen:?}, rule {:#}",
        srv(PRIO_RX),
        st["packet_copy"][0]
    );
    assert!(
        sent(&daemon) >= 1,
        "the rule sent nothing: {st:#}\n{}",
        daemon.log_text()
    );
    assert_revived(&res, &seen, &until_revived, &d, &st, true);
    drop(daemon);
    lab.destroy();
}

fn announce_policy() -> String {
    "version: 1
settings: {flow_capacity: 16384}
interfaces:
  - {name: cli0, chains: [track-a, capture-a]}
chains:
  - name: track-a
    match: {remote: [192.0.2.0/24], remote_ports: [5201]}
    actions: [record_flow]
  - name: capture-a
    hook: egress
    match: {remote: [192.0.2.0/24], remote_ports: [5201]}
    actions: [count]
packet_copy:
  - name: announce-b
    interface: cli0
    chain: capture-a
    when: {flow_bytes_at: 1MiB}
    send: {add_addr: {address: 198.51.100.1, id: 7}}
"
    .to_string()
}

/// A forged ADD_ADDR (HMAC from the keys the egress capture took from the
/// MP_CAPABLE handshake) announcing the client's second address reaches the
/// server once the connection passed 1 MiB: the server accepts it (its
/// MPTcpExtAddAddr rises, nothing dropped) and, allowed by its limits,
/// tries a join to that address (MPTcpExtMPJoinSynTx).
#[test]
fn a_forged_add_addr_passes_the_servers_hmac_check() {
    if !kernel_or_skip("a_forged_add_addr_passes_the_servers_hmac_check") {
        return;
    }
    let lab = Lab::new("copyaa");
    must(&format!(
        "ip -n {} mptcp limits set subflows 4 add_addr_accepted 4",
        lab.tb.srv
    ));
    // The client ignores the server's own announcement: its join would
    // already connect the server to 198.51.100.1, and the server's PM does
    // not join an address it has a subflow to.
    must(&format!(
        "ip -n {} mptcp limits set subflows 4 add_addr_accepted 0",
        lab.tb.cli
    ));
    let file = policy_file(&lab.dir, "p.yaml", &announce_policy());
    let daemon = Daemon::start(lab.root(), &lab.tb.cli, &["-f", file.to_str().unwrap()]);
    daemon.wait_state("armed", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true && s["packet_copy"][0]["armed"] == true
    });
    let srv_before = lab.tb.counters("srv");
    // Paced request/response (40 rounds of 64 KiB each way, 50 ms apart:
    // about 2 s, 1 MiB after about 0.4 s): the server is still sending when
    // the rule fires (FLOWS is polled every 100 ms), so its path manager
    // may still open a subflow. A bulk download ends in a fraction of a
    // second once GRO merges the matched segments, and a server that has
    // sent its DATA_FIN opens none.
    let args = paced("40", &["--linger", "0.5"]);
    let (res, d) = run(&lab, &args);
    let srv_after = lab.tb.counters("srv");
    let srv = |n: &str| delta(&srv_before, &srv_after, n);
    let st = daemon.state().unwrap_or_default();
    eprintln!(
        "server AddAddr +{}, AddAddrDrop +{}, MPJoinSynTx +{}; rule {:#}",
        srv("MPTcpExtAddAddr"),
        srv("MPTcpExtAddAddrDrop"),
        srv("MPTcpExtMPJoinSynTx"),
        st["packet_copy"][0]
    );
    assert!(
        st["packet_copy"][0]["sent"].as_u64().unwrap_or(0) >= 1,
        "the rule sent nothing: {st:#}\n{}",
        daemon.log_text()
    );
    assert!(
        srv("MPTcpExtAddAddr") >= 1,
        "server saw no ADD_ADDR: {res}\nserver counters moved: {}",
        moved(&srv_before, &srv_after)
    );
    assert_eq!(srv("MPTcpExtAddAddrDrop"), 0, "server dropped it");
    assert!(
        srv("MPTcpExtMPJoinSynTx") >= 1,
        "server did not try to join the announced address"
    );
    no_damage(&d);
    drop(daemon);
    lab.destroy();
}

fn abort_policy() -> String {
    "version: 1
settings: {flow_capacity: 16384}
interfaces:
  - {name: cli0, chains: [capture-a]}
chains:
  - name: capture-a
    hook: egress
    match: {remote: [192.0.2.0/24], remote_ports: [5201]}
    actions: [count]
packet_copy:
  - name: late
    interface: cli0
    chain: capture-a
    when: {subflow_idle: 1500ms}
    send: {mp_prio: {backup: false}}
"
    .to_string()
}

/// The peer kills the connection (SO_LINGER 0: MP_FASTCLOSE, a RST on each
/// subflow) while the subflow is idle but before the rule's idle time: the
/// client's stack answers nothing, so only the ingress capture sees the
/// end. The rule counts the subflow as closed before firing, logs it, and
/// sends nothing: the server receives no segment at all afterwards.
#[test]
fn a_connection_closed_before_the_trigger_fires_gets_no_packet() {
    if !kernel_or_skip("a_connection_closed_before_the_trigger_fires_gets_no_packet") {
        return;
    }
    let lab = Lab::new("copyrst");
    let file = policy_file(&lab.dir, "p.yaml", &abort_policy());
    let daemon = Daemon::start(lab.root(), &lab.tb.cli, &["-f", file.to_str().unwrap()]);
    daemon.wait_state("armed", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true && s["packet_copy"][0]["armed"] == true
    });
    let res = lab.tb.xfer(&[
        "--server-abort",
        "--wait-subflows-before",
        "1",
        "--idle-before",
        "0.5",
    ]);
    assert_eq!(
        res["after_abort"], "reset",
        "the server did not reset: {res}"
    );
    // Any answer of the client's stack to the reset is in by now.
    std::thread::sleep(Duration::from_millis(200));
    let srv_before = server(&lab);
    // Past the rule's idle time (1.5 s from the last data), with margin
    // (scaled in an emulated guest: `common::time_scale`).
    let st = daemon.wait_state(
        "closed before firing",
        scaled(Duration::from_secs(5)),
        |s| {
            s["packet_copy"][0]["closed_before_firing"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
    );
    std::thread::sleep(scaled(Duration::from_millis(1500)));
    let srv = |n: &str| delta(&srv_before, &server(&lab), n);
    let st = daemon.state().unwrap_or(st);
    eprintln!("rule {:#}", st["packet_copy"][0]);
    assert_eq!(st["packet_copy"][0]["fired"].as_u64(), Some(0), "{st:#}");
    assert_eq!(st["packet_copy"][0]["sent"].as_u64(), Some(0), "{st:#}");
    assert_eq!(
        srv("TcpInSegs"),
        0,
        "the server received segments after the reset"
    );
    assert_eq!(
        srv("TcpOutRsts"),
        0,
        "the server answered a dead connection"
    );
    let log = daemon.log_text();
    assert!(
        log.contains("connection closed before the trigger fired"),
        "no log line: {log}"
    );
    drop(daemon);
    lab.destroy();
}

/// The capture the packet-copy task reads can be missing for a moment: an
/// apply that resizes `SUBFLOWS` replaces its pin, a root is rebuilt. Here
/// its pin is moved away for several resolve periods while an idle subflow
/// the rule already fired for stays open. The task must skip its rounds
/// meanwhile, not decide on an empty view: that took the subflow for
/// closed, forgot that the rule fired for it, and fired again (a second
/// MP_PRIO for one idle period) once the pin was back.
#[test]
fn a_capture_missing_for_a_moment_neither_fires_again_nor_counts_a_close() {
    if !kernel_or_skip("a_capture_missing_for_a_moment_neither_fires_again_nor_counts_a_close") {
        return;
    }
    let lab = Lab::new("copygap");
    let policy = abort_policy().replace("subflow_idle: 1500ms", "subflow_idle: 300ms");
    let file = policy_file(&lab.dir, "p.yaml", &policy);
    // No drift pass during the test: it would re-create the moved pin.
    let daemon = Daemon::start(
        lab.root(),
        &lab.tb.cli,
        &["-f", file.to_str().unwrap(), "--drift-interval", "10m"],
    );
    daemon.wait_state("armed", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true && s["packet_copy"][0]["armed"] == true
    });
    // The connection stays open and idle long after its upload.
    let xfer = lab
        .tb
        .xfer_in_background(&["--upload", "10K", "--linger", "12"]);
    let rule = |s: &Value, n: &str| s["packet_copy"][0][n].as_u64().unwrap_or(0);
    daemon.wait_state("fired once", scaled(Duration::from_secs(8)), |s| {
        rule(s, "sent") >= 1
    });
    let pin = lab.root().join("maps/SUBFLOWS");
    let moved = lab.root().join("maps/SUBFLOWS-moved");
    std::fs::rename(&pin, &moved).unwrap();
    // Three resolve periods (1 s each) without the capture, then three with
    // it back: the old task re-fired within one period of either.
    std::thread::sleep(scaled(Duration::from_secs(3)));
    std::fs::rename(&moved, &pin).unwrap();
    std::thread::sleep(scaled(Duration::from_secs(3)));
    let st = daemon.state().expect("daemon state");
    eprintln!("rule {:#}", st["packet_copy"][0]);
    let out = xfer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rule(&st, "fired"), 1, "fired again after the gap: {st:#}");
    assert_eq!(rule(&st, "sent"), 1, "{st:#}");
    assert_eq!(rule(&st, "closed_before_firing"), 0, "{st:#}");
    drop(daemon);
    lab.destroy();
}
