//! End to end on the links MPTCP runs on in the field: the two-path
//! testbed with its first path (the initial subflow, which carries the
//! server's ADD_ADDR and the download) over a veth pair (Ethernet) or a
//! TUN pair (raw IP, no link-layer header, joined by tests/mptcp/tunfwd.py),
//! in IPv4 or IPv6: the matrix {IPv4 veth, IPv6 veth, IPv4 TUN, IPv6 TUN},
//! one test per cell. Each cell, in one run, on the kernel's own counters:
//!
//! * baseline (no emptcp): a short flow joins the announced address;
//! * short flow (< remove_below): no join, no fallback, no checksum error;
//! * long upload (>= recover_at): the re-inserted ADD_ADDR reaches the
//!   client and the second subflow is established, data verified;
//! * pure download, control: the address stripped and nothing recovering
//!   it, the connection stays single-path;
//! * pure download with `emptcp apply` only: the in-kernel recovery (TC
//!   ingress duplicate ACK) delivers the address and the client joins;
//! * the kernel log gains no "hw csum failure".
//!
//! On TUN also the recovery agent (user space) instead of the in-kernel
//! recovery: its live frame carries an Ethernet header on every link (the
//! kernel hands a passed live frame to eth_type_trans()), and the stack of
//! the raw-IP device takes it.
mod common;
mod mptcp_common;

use common::*;
use mptcp_common::*;

const JOIN: &str = "MPTcpExtMPJoinSynAckRx";
const JOIN_TX: &str = "MPTcpExtMPJoinSynTx";
const ADD_ADDR: &str = "MPTcpExtAddAddr";

/// The quickstart-style policy on both client interfaces; `auto` XDP mode
/// (plan picks generic on a TUN device: it has no native XDP for raw IP).
/// Remote prefixes of both families: one policy serves every cell.
fn policy(recover: bool) -> String {
    let actions = if recover {
        "record_flow, strip_add_addr, recover_add_addr, count"
    } else {
        "record_flow, strip_add_addr, count"
    };
    format!(
        r#"version: 1
settings: {{flow_capacity: 16384}}
interfaces:
  - {{name: cli0, xdp_mode: auto, chains: [mptcp]}}
  - {{name: cli1, xdp_mode: auto, chains: [mptcp]}}
chains:
  - name: mptcp
    match: {{remote: [192.0.2.0/24, 198.51.100.0/24, "2001:db8::/32"], remote_ports: [5201]}}
    thresholds: {{remove_below: 512KiB, recover_at: 1MiB}}
    actions: [{actions}]
"#
    )
}

/// The client's side of the first path as status shows it: the link type
/// read at plan time and the XDP mode it got.
fn check_link(lab: &Lab, tun: bool) {
    let st = status_json(lab.root(), &lab.tb.cli);
    let cli0 = st["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "cli0")
        .unwrap_or_else(|| panic!("no cli0 in status: {st}"))
        .clone();
    assert_eq!(cli0["attached"], true, "{cli0}");
    if tun {
        assert_eq!(cli0["link_type"], "none", "{cli0}");
        assert_eq!(cli0["raw_ip"], true, "{cli0}");
        assert_eq!(cli0["mode"], "skb", "{cli0}");
    } else {
        assert_eq!(cli0["link_type"], "ether", "{cli0}");
        assert!(cli0["raw_ip"].is_null(), "{cli0}");
    }
    assert_eq!(cli0["recovery"]["attached"], true, "{cli0}");
}

/// One cell of the matrix: path A over `link` (veth|tun), IPv6 or not.
fn cell(name: &str, link: &str, ipv6: bool) {
    let lab = Lab::with(
        name,
        &[("LINK_A", link), ("IPV6", if ipv6 { "1" } else { "0" })],
    );
    no_server_add_addr_retransmissions(&lab);
    let tun = link == "tun";
    let server_b = if ipv6 {
        "2001:db8:b::2"
    } else {
        "198.51.100.2"
    };
    let failures = hw_csum_failures();
    // A short flow, and how long its client waits for a join: 2 s is
    // minutes of RTTs here, so a join that did not come is not coming.
    let short = short_download("1");

    // Baseline in the same run: without emptcp, even a short flow joins.
    let srv = lab.tb.counters("srv");
    let (res, d) = run(&lab, &short);
    assert_eq!(
        d(JOIN),
        1,
        "baseline: no join to {server_b} ({}): {res}",
        add_addr_trace(&lab, &srv, &d)
    );
    let remote = res["subflow_addrs"][1]["remote"].as_str().unwrap_or("");
    assert!(remote.contains(server_b), "baseline joined {remote}: {res}");
    // Joined while the connection was idle and open, before the download.
    assert_eq!(res["joined_before"], true, "{res}");

    // Short flow: the address is stripped and stored, nothing joins.
    lab.apply(&policy(true));
    check_link(&lab, tun);
    let (res, d) = run(&lab, &short);
    assert_eq!(d(JOIN_TX), 0, "short flow opened a second subflow: {res}");
    assert_eq!(res["joined_before"], false, "{res}");
    assert_eq!(d(ADD_ADDR), 0, "short flow: ADD_ADDR reached the client");
    no_damage(&d);
    assert!(
        datapath_event(&lab, "add_addr_stored") >= 1,
        "nothing stored"
    );
    assert_eq!(
        datapath_event(&lab, "malformed"),
        0,
        "a segment was refused"
    );

    // Long upload: the client's data ACKs pass recover_at, an incoming
    // pure ACK has room, the stored option is re-inserted into it.
    let long = settled(&long_upload("1", "3"));
    let (res, d) = run(&lab, &long);
    assert!(
        d(ADD_ADDR) >= 1,
        "long upload: ADD_ADDR not delivered: {res}"
    );
    assert_eq!(d(JOIN), 1, "long upload: no second subflow: {res}");
    no_damage(&d);

    // Pure download. The subflow count is read right after the last byte
    // arrived, before the client closes: a join counts only if it came
    // during the download (recover_at = 1 MiB of 100 MB).
    let dl = ["--download", "100M"];
    let subflows = |res: &serde_json::Value| res["mptcp_info"]["subflows"].as_u64().unwrap_or(0);
    // Control: stripped and stored, nothing recovers it.
    lab.apply(&policy(false));
    // The control is about an address held back.
    let (res, d) = run_with_the_address_held(&lab, &dl, "control");
    assert_eq!(subflows(&res), 0, "control joined without recovery: {res}");
    assert_eq!(d(JOIN), 0, "control: {res}");
    no_damage(&d);
    // `apply` only: the in-kernel recovery builds the duplicate ACK.
    lab.apply(&policy(true));
    let kernel = datapath_event(&lab, "add_addr_recovered_kernel");
    let (res, d) = run(&lab, &dl);
    assert_eq!(subflows(&res), 1, "no join during the download: {res}");
    assert!(d(ADD_ADDR) >= 1, "ADD_ADDR not delivered: {res}");
    assert_eq!(d(JOIN), 1, "second subflow not established: {res}");
    no_damage(&d);
    assert!(
        datapath_event(&lab, "add_addr_recovered_kernel") > kernel,
        "the in-kernel recovery delivered nothing"
    );
    assert_eq!(datapath_event(&lab, "kernel_recovery_failed"), 0);

    assert_eq!(
        hw_csum_failures(),
        failures,
        "the kernel log reports hw csum failures"
    );
    lab.destroy();
}

#[test]
fn ipv4_veth_short_single_path_long_and_download_join() {
    if kernel_or_skip("ipv4_veth_short_single_path_long_and_download_join") {
        cell("l4veth", "veth", false);
    }
}

#[test]
fn ipv6_veth_short_single_path_long_and_download_join() {
    if kernel_or_skip("ipv6_veth_short_single_path_long_and_download_join") {
        cell("l6veth", "veth", true);
    }
}

#[test]
fn ipv4_tun_short_single_path_long_and_download_join() {
    if kernel_or_skip("ipv4_tun_short_single_path_long_and_download_join") {
        cell("l4tun", "tun", false);
    }
}

#[test]
fn ipv6_tun_short_single_path_long_and_download_join() {
    if kernel_or_skip("ipv6_tun_short_single_path_long_and_download_join") {
        cell("l6tun", "tun", true);
    }
}

/// The agent delivers on a raw-IP link: the in-kernel recovery's TCX links
/// removed (as on an interface where it cannot run), a pure download gets
/// the stored address from `emptcp agent`'s live frame and joins. The
/// control in the same run (strip, no recovery) stays single-path.
fn agent_cell(name: &str, ipv6: bool) {
    let lab = Lab::with(
        name,
        &[("LINK_A", "tun"), ("IPV6", if ipv6 { "1" } else { "0" })],
    );
    no_server_add_addr_retransmissions(&lab);
    let dl = ["--download", "100M"];
    let subflows = |res: &serde_json::Value| res["mptcp_info"]["subflows"].as_u64().unwrap_or(0);
    lab.apply(&policy(false));
    let (res, d) = run(&lab, &dl);
    assert_eq!(subflows(&res), 0, "control joined without recovery: {res}");
    assert_eq!(d(JOIN), 0, "control: {res}");

    lab.apply(&policy(true));
    agent_recovers_download(&lab, &dl);
    lab.destroy();
}

#[test]
fn ipv4_tun_pure_download_recovers_through_the_agent() {
    if kernel_or_skip("ipv4_tun_pure_download_recovers_through_the_agent") {
        agent_cell("l4agent", false);
    }
}

#[test]
fn ipv6_tun_pure_download_recovers_through_the_agent() {
    if kernel_or_skip("ipv6_tun_pure_download_recovers_through_the_agent") {
        agent_cell("l6agent", true);
    }
}

/// The stall report of a real occurrence of the kernel's receive deadlock
/// (host kernel 6.18, the IPv4 TUN cell's download), which `run` retries.
const DEADLOCK_REPORT: &str = include_str!("mptcp/stall-kernel-receive-deadlock.json");

fn deadlock_report_with(from: &str, to: &str) -> serde_json::Value {
    assert!(DEADLOCK_REPORT.contains(from), "{from} not in the report");
    serde_json::from_str(&DEADLOCK_REPORT.replacen(from, to, 1)).unwrap()
}

/// The recorded `report` is recognised, naming the subflow that holds the
/// byte waited for and that byte's data sequence number.
fn recognised(report: &str, holder: &str, rcv_nxt: &str) {
    let res: serde_json::Value = serde_json::from_str(report).unwrap();
    let why = kernel_receive_deadlock(&res).expect("the recorded deadlock is not recognised");
    assert!(why.contains(holder), "{why}");
    assert!(why.contains(rcv_nxt), "{why}");
}

#[test]
fn the_kernel_receive_deadlock_is_recognised_in_a_stall_report() {
    recognised(DEADLOCK_REPORT, "192.0.2.1:38092", "36215326a84929cd");
}

/// A second occurrence: Ethernet veth, skb-mode XDP, the server's TX
/// checksum offload on (mptcp_e2e's pure download); the byte waited for is
/// the first of the subflow's current mapping.
const DEADLOCK_REPORT_VETH: &str = include_str!("mptcp/stall-kernel-receive-deadlock-veth.json");

#[test]
fn the_kernel_receive_deadlock_is_recognised_on_veth_at_a_mapping_start() {
    recognised(DEADLOCK_REPORT_VETH, "192.0.2.1:47618", "d374cedc4235b3d7");
}

/// A transfer that fails reaches `run`'s deadlock check with its report
/// (testbed.sh exits non-zero then): here a real download that ends with
/// fewer subflows than required (rc 3), with the server's sockets.
#[test]
fn a_failed_transfer_hands_its_report_to_the_deadlock_check() {
    if !kernel_or_skip("a_failed_transfer_hands_its_report_to_the_deadlock_check") {
        return;
    }
    let lab = Lab::new("lreport");
    let (res, server) = lab
        .tb
        .xfer_report(&["--download", "1M", "--require-subflows", "9"]);
    assert_eq!(res["rc"], 3, "{res}");
    assert!(res["mptcp_info"].is_object(), "{res}");
    assert_eq!(kernel_receive_deadlock(&res), None, "{res}");
    assert!(server.contains("rc 3"), "{server}");
}

#[test]
fn a_stall_without_every_sign_of_the_kernel_deadlock_is_not_retried() {
    // The MPTCP socket under its receive limit.
    let under = deadlock_report_with("r3425536,rb3423841", "r3425536,rb3525536");
    assert_eq!(kernel_receive_deadlock(&under), None);
    // The byte it waits for in no subflow's current mapping.
    let elsewhere = deadlock_report_with("rcv_nxt:36215326a84929cd", "rcv_nxt:36215326a9000000");
    assert_eq!(kernel_receive_deadlock(&elsewhere), None);
    // Nothing queued in the subflow that holds it.
    let empty = deadlock_report_with("ESTAB     4988887", "ESTAB     0");
    assert_eq!(kernel_receive_deadlock(&empty), None);
    // Not a stall: failed otherwise (3: data corrupted).
    let corrupt = deadlock_report_with("\"rc\": 4", "\"rc\": 3");
    assert_eq!(kernel_receive_deadlock(&corrupt), None);
}
