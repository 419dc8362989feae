//! End to end on a two-path MPTCP testbed (namespaces made by the test):
//! the kernel's own MPTCP counters prove what the datapath does.
//!
//! * baseline: without emptcp every flow opens the second subflow;
//! * short flow (< remove_below): no join, no fallback, no checksum error;
//! * long flows (>= recover_at): the stored ADD_ADDR reaches the client, the
//!   second subflow is established, data verified byte for byte;
//! * a threshold change applied while a flow is live takes effect on it;
//! * in native and generic (skb) XDP mode, and at the TC ingress hook
//!   (`ingress_hook: tc`) with GRO on, where the chain meets merged skbs;
//! * with the server's TX checksum offload on (the veth default): segments
//!   arrive with only the pseudo-header sum in their checksum field, and a
//!   short flow still stays single-path while a long one joins; also in
//!   skb mode, where recover's insert and the in-kernel duplicate ACK
//!   deliver into CHECKSUM_PARTIAL skbs.
mod common;
mod mptcp_common;

use std::collections::BTreeMap;

use common::*;
use mptcp_common::*;

/// The data chain on both client interfaces; `mode` is an XDP mode
/// (`native`, `skb`) or `tc` (`ingress_hook: tc`).
fn policy(mode: &str, remove_below: &str, recover_at: &str) -> String {
    let hook = match mode {
        "tc" => "ingress_hook: tc".to_string(),
        m => format!("xdp_mode: {m}"),
    };
    format!(
        r#"version: 1
settings: {{flow_capacity: 16384}}
interfaces:
  - {{name: cli0, {hook}, chains: [mptcp]}}
  - {{name: cli1, {hook}, chains: [mptcp]}}
chains:
  - name: mptcp
    match: {{remote: [192.0.2.0/24, 198.51.100.0/24], remote_ports: [5201]}}
    thresholds: {{remove_below: {remove_below}, recover_at: {recover_at}}}
    actions: [record_flow, strip_add_addr, recover_add_addr, count]
"#
    )
}

const JOIN: &str = "MPTcpExtMPJoinSynAckRx";
const JOIN_TX: &str = "MPTcpExtMPJoinSynTx";
const ADD_ADDR: &str = "MPTcpExtAddAddr";

fn short_and_long(mode: &str) {
    let lab = Lab::new(&format!("sl{mode}"));
    if mode == "tc" {
        gro_on(&lab);
    }
    // Baseline in the same run: without emptcp, even a short flow joins.
    let short = short_download("1");
    let (_, d) = run(&lab, &short);
    assert_eq!(
        d(JOIN),
        1,
        "baseline: the second subflow should open at once"
    );

    lab.apply(&policy(mode, "1MiB", "4MiB"));
    let (_, d) = run(&lab, &short);
    assert_eq!(d(JOIN_TX), 0, "short flow opened a second subflow");
    assert_eq!(d(ADD_ADDR), 0, "short flow: ADD_ADDR reached the client");
    no_damage(&d);
    let st = status_json(lab.root(), &lab.tb.cli);
    assert!(
        st["programs"]["strip_add_addr"]["applied"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{st}"
    );

    // `emptcp flows` shows a live short flow with the ADD_ADDR it holds back.
    let held = lab
        .tb
        .xfer_in_background(&["--download", "100K", "--linger", "2"]);
    let mut stored = serde_json::Value::Null;
    let mut tables = serde_json::Value::Null;
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let out = emptcp_ok(lab.root(), Some(&lab.tb.cli), &["-o", "json", "flows"], 0);
        let flows: serde_json::Value = serde_json::from_str(&out).unwrap();
        if let Some(f) = flows
            .as_array()
            .unwrap()
            .iter()
            .find(|f| !f["add_addrs"].as_array().unwrap().is_empty())
        {
            stored = f.clone();
            // Read while the connection lingers: status counts it.
            tables = status_json(lab.root(), &lab.tb.cli)["connection_tables"].clone();
            break;
        }
    }
    assert_eq!(
        stored["add_addrs"][0]["address"], "198.51.100.2",
        "no stored ADD_ADDR in `emptcp flows`"
    );
    assert_eq!(stored["add_addrs"][0]["recovered"], false);
    assert!(
        stored["remote"].as_str().unwrap().ends_with(":5201"),
        "{stored}"
    );
    // `emptcp status` counts the live connection in the tables, at the
    // capacities the policy's flow_capacity set (FLOW_ADDRS a quarter of
    // it). Its one stored address is kept in its FLOWS entry: FLOW_ADDRS
    // holds a connection's second and later ones, and this server
    // announces one per connection.
    let table = |name: &str| {
        tables
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in status' connection_tables: {tables}"))
    };
    let (flows, addrs) = (table("FLOWS"), table("FLOW_ADDRS"));
    assert_eq!(flows["capacity"], 16384, "{tables}");
    assert_eq!(addrs["capacity"], 4096, "{tables}");
    assert!(flows["entries"].as_u64().unwrap() >= 1, "{tables}");
    assert_eq!(addrs["entries"], 0, "{tables}");
    assert!(held.join().unwrap().status.success());

    // Long upload: the stored ADD_ADDR is re-inserted and the join happens.
    let (_, d) = run(&lab, &long_upload("1", "3"));
    assert!(d(ADD_ADDR) >= 1, "long upload: ADD_ADDR not delivered");
    assert_eq!(d(JOIN), 1, "long upload: second subflow not established");
    no_damage(&d);

    // Request/response on one connection (5 MiB each way).
    let (_, d) = run(
        &lab,
        &[
            "--reqresp",
            "80",
            "--rr-size",
            "64K",
            "--wait-subflows",
            "1",
            "--wait-timeout",
            "3",
        ],
    );
    assert!(d(ADD_ADDR) >= 1, "request/response: ADD_ADDR not delivered");
    assert_eq!(
        d(JOIN),
        1,
        "request/response: second subflow not established"
    );
    no_damage(&d);
    lab.destroy();
}

#[test]
fn short_flow_single_path_long_flow_joins_native() {
    if kernel_or_skip("short_flow_single_path_long_flow_joins_native") {
        short_and_long("native");
    }
}

/// GRO on the client's veths: their NAPI poll merges the segments of a
/// flow before TC ingress sees them.
fn gro_on(lab: &Lab) {
    for dev in ["cli0", "cli1"] {
        must(&format!(
            "ip netns exec {} ethtool -K {dev} gro on",
            lab.tb.cli
        ));
    }
}

#[test]
fn short_flow_single_path_long_flow_joins_tc() {
    if kernel_or_skip("short_flow_single_path_long_flow_joins_tc") {
        short_and_long("tc");
    }
}

#[test]
fn short_flow_single_path_long_flow_joins_skb() {
    if kernel_or_skip("short_flow_single_path_long_flow_joins_skb") {
        short_and_long("skb");
    }
}

#[test]
fn live_threshold_change_takes_effect_on_a_live_flow() {
    if !kernel_or_skip("live_threshold_change_takes_effect_on_a_live_flow") {
        return;
    }
    let lab = Lab::new("live");
    // Everything the flow announces is stripped (it stays far below
    // remove_below) and nothing is recovered (recover_at is out of reach)...
    lab.apply(&policy("native", "64MiB", "1GiB"));
    // A paced request/response flow: 40 rounds of 64 KiB each way, 50 ms apart.
    let before = lab.tb.counters("cli");
    let handle = lab.tb.xfer_in_background(&paced(
        "40",
        &["--wait-subflows", "1", "--wait-timeout", "3"],
    ));
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let mid = lab.tb.counters("cli");
    assert_eq!(
        delta(&before, &mid, JOIN_TX),
        0,
        "joined before the threshold change"
    );
    // ...until recover_at drops below the live flow's size.
    lab.apply(&policy("native", "2MiB", "2MiB"));
    let out = handle.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = lab.tb.counters("cli");
    assert_eq!(
        delta(&before, &after, JOIN),
        1,
        "the live flow did not pick up the new recover_at"
    );
    assert_eq!(delta(&before, &after, FALLBACK), 0);
    assert_eq!(delta(&before, &after, CSUM), 0);
    lab.destroy();
}

/// Subflows the client's MPTCP connection had when the last byte arrived.
fn subflows(res: &serde_json::Value) -> u64 {
    res["mptcp_info"]["subflows"].as_u64().unwrap_or(0)
}

/// The control of the pure-download tests: `full` without
/// recover_add_addr stores the held-back address and recovers nothing, so
/// the download stays single-path.
fn strip_only_stays_single_path(lab: &Lab, full: &str, args: &[&str]) {
    lab.apply(&full.replace(", recover_add_addr", ""));
    let (res, d) = run_with_the_address_held(lab, args, "control, strip only");
    assert_eq!(subflows(&res), 0, "control joined without recovery: {res}");
    assert_eq!(d(JOIN), 0, "control: {res}");
    assert!(
        datapath_event(lab, "add_addr_stored") >= 1,
        "control stored nothing"
    );
    no_damage(&d);
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a counter: {v}"))
}

/// A pure download recovers with `emptcp apply` alone (the in-kernel
/// duplicate ACK); where that path is not attached, the agent does it. The
/// control in the same run strips the address and recovers nothing: the
/// connection stays single-path. The subflow count is read right after the
/// last byte arrived, before the client closes: a join counts only if it
/// came during the download (recover_at = 1 MiB of 100 MB).
#[test]
fn pure_download_recovers_in_the_kernel_or_through_the_agent() {
    if !kernel_or_skip("pure_download_recovers_in_the_kernel_or_through_the_agent") {
        return;
    }
    let lab = Lab::new("dl");
    no_server_add_addr_retransmissions(&lab);
    let args = ["--download", "100M"];

    // 1. Control: the address is stripped and stored, nothing recovers it.
    let full = policy("native", "512KiB", "1MiB");
    strip_only_stays_single_path(&lab, &full, &args);

    // 2. `apply` only, no daemon: the kernel path delivers and the stack
    //    confirms (its echo, or the join to the address).
    lab.apply(&full);
    let status = status_json(lab.root(), &lab.tb.cli);
    for i in status["interfaces"].as_array().unwrap() {
        assert_eq!(
            i["recovery"]["attached"], true,
            "in-kernel recovery not attached: {i}"
        );
    }
    let inserted = datapath_event(&lab, "add_addr_recovered");
    let (res, d) = run_with_the_address_held(&lab, &args, "kernel path");
    eprintln!(
        "kernel: {}",
        status_json(lab.root(), &lab.tb.cli)["datapath_events"]
    );
    assert_eq!(
        subflows(&res),
        1,
        "kernel path: no join during the download: {res}"
    );
    assert!(d(ADD_ADDR) >= 1, "ADD_ADDR not delivered: {res}");
    assert_eq!(d(JOIN), 1, "second subflow not established: {res}");
    no_damage(&d);
    let kernel = datapath_event(&lab, "add_addr_recovered_kernel");
    assert!(kernel >= 1, "status shows no in-kernel delivery");
    assert_eq!(
        datapath_event(&lab, "add_addr_recovered"),
        inserted,
        "delivered by an insert, not by the kernel path"
    );
    assert!(datapath_event(&lab, "add_addr_confirmed") >= 1);
    assert_eq!(datapath_event(&lab, "kernel_recovery_failed"), 0);

    // 3. The kernel path taken away (its TCX links removed, as on an
    //    interface where it cannot run): the datapath reports the pending
    //    connection to user space, and the agent delivers.
    agent_recovers_download(&lab, &args);
    lab.destroy();
}

/// A pure download at the TC ingress hook with GRO on: the data segments
/// reach the chain merged (GSO skbs, which recover never grows), so the
/// connection goes pending and the in-kernel duplicate ACK delivers the
/// stored address; the client joins during the download. Control in the
/// same run: strip only, at the same hook, stays single-path.
#[test]
fn pure_download_recovers_at_the_tc_hook_with_gro_on() {
    if !kernel_or_skip("pure_download_recovers_at_the_tc_hook_with_gro_on") {
        return;
    }
    let lab = Lab::new("dltc");
    no_server_add_addr_retransmissions(&lab);
    gro_on(&lab);
    let failures = hw_csum_failures();
    let args = ["--download", "100M"];

    let full = policy("tc", "512KiB", "1MiB");
    strip_only_stays_single_path(&lab, &full, &args);

    lab.apply(&full);
    let st = status_json(lab.root(), &lab.tb.cli);
    for i in st["interfaces"].as_array().unwrap() {
        assert_eq!(i["ingress_hook"], "tc", "{i}");
        assert_eq!(i["attached"], true, "{i}");
    }
    let (res, d) = run_with_the_address_held(&lab, &args, "kernel path");
    assert_eq!(
        subflows(&res),
        1,
        "no join during the download at the tc hook: {res}"
    );
    assert_eq!(d(JOIN), 1, "second subflow not established: {res}");
    no_damage(&d);
    assert!(
        datapath_event(&lab, "add_addr_recovered_kernel")
            + datapath_event(&lab, "add_addr_recovered")
            >= 1,
        "status shows no delivery"
    );
    assert_eq!(datapath_event(&lab, "kernel_recovery_failed"), 0);
    assert_eq!(
        hw_csum_failures(),
        failures,
        "the kernel log reports hw csum failures"
    );
    lab.destroy();
}

/// The in-kernel recovery of a pure download in generic (skb) XDP, with the
/// server's TX checksum offload on: the data segments arrive
/// CHECKSUM_PARTIAL, and the duplicate ACK is rewritten from a clone of one
/// (its TCP checksum computed afresh, `csum_start` still at its TCP
/// header). The stack must accept it: the client joins during the
/// download, from the kernel path's delivery. Control in the same run: the
/// same download with strip only stays single-path.
#[test]
fn pure_download_recovers_in_the_kernel_in_skb_mode_with_the_servers_tx_checksum_offload_on() {
    if !kernel_or_skip(
        "pure_download_recovers_in_the_kernel_in_skb_mode_with_the_servers_tx_checksum_offload_on",
    ) {
        return;
    }
    let lab = Lab::new("dlpart");
    no_server_add_addr_retransmissions(&lab);
    lab.tb.run(&["csum-offload", "on"]);
    let failures = hw_csum_failures();
    let args = ["--download", "100M"];

    let full = policy("skb", "512KiB", "1MiB");
    strip_only_stays_single_path(&lab, &full, &args);

    // The address must be held back (stored) for the kernel path to have
    // anything to deliver: once more, counted, when it came late.
    lab.apply(&full);
    let (res, d) = run_with_the_address_held(&lab, &args, "kernel path");
    assert_eq!(
        subflows(&res),
        1,
        "kernel path: no join during the download: {res}"
    );
    assert_eq!(d(JOIN), 1, "second subflow not established: {res}");
    no_damage(&d);
    assert!(
        datapath_event(&lab, "add_addr_recovered_kernel") >= 1,
        "status shows no in-kernel delivery"
    );
    assert_eq!(datapath_event(&lab, "kernel_recovery_failed"), 0);
    assert_eq!(
        hw_csum_failures(),
        failures,
        "the kernel log reports hw csum failures"
    );
    lab.destroy();
}

/// A server address withdrawn (REMOVE_ADDR) before the connection reaches
/// recover_at is forgotten, never re-inserted: the client does not join
/// it. The control in the same run, without the withdrawal, joins.
#[test]
fn an_address_withdrawn_before_recover_at_is_not_reinserted() {
    if !kernel_or_skip("an_address_withdrawn_before_recover_at_is_not_reinserted") {
        return;
    }
    let lab = Lab::new("rmaddr");
    no_server_add_addr_retransmissions(&lab);
    // 40 paced rounds of 64 KiB each way: 5 MiB in about 2 s, so 3 MiB is
    // reached after about 1.2 s (later on a busy machine); the withdrawal
    // goes out as soon as the address is stored.
    lab.apply(&policy("native", "256KiB", "3MiB"));
    let rounds = paced("40", &["--wait-subflows", "1", "--wait-timeout", "2"]);
    let cleared = || datapath_event(&lab, "remove_addr_cleared");

    // Control: the stored address comes back past recover_at.
    let (res, d) = run(&lab, &rounds);
    assert_eq!(d(JOIN), 1, "control: no join past recover_at: {res}");
    assert_eq!(cleared(), 0);

    let before = lab.tb.counters("cli");
    let stored = || datapath_event(&lab, "add_addr_stored");
    let recovered = || datapath_event(&lab, "add_addr_recovered");
    let (stored_before, recovered_before) = (stored(), recovered());
    let handle = lab.tb.xfer_in_background(&rounds);
    // The withdrawal follows the server's ADD_ADDR (emptcp stored it) and
    // precedes recover_at. Waiting for the store, not a fixed time: a busy
    // machine starts the connection late, and an endpoint deleted before
    // the connection exists is never announced (nothing stored, nothing
    // to withdraw). Polled every 10 ms; 3 MiB is about 1 s later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stored() == stored_before {
        assert!(
            std::time::Instant::now() < deadline,
            "the server's ADD_ADDR was never stored"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    must(&format!(
        "ip netns exec {} ip mptcp endpoint delete id 2",
        lab.tb.srv
    ));
    assert_eq!(
        recovered(),
        recovered_before,
        "recover_at was reached before the withdrawal went out: the test proves nothing"
    );
    let out = handle.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = lab.tb.counters("cli");
    assert_eq!(
        cleared(),
        1,
        "the REMOVE_ADDR did not clear the stored address"
    );
    assert_eq!(
        delta(&before, &after, JOIN_TX),
        0,
        "a withdrawn address was re-inserted and joined"
    );
    assert_eq!(delta(&before, &after, FALLBACK), 0);
    lab.destroy();
}

/// Drops, at the client's TC ingress after emptcp's programs, every
/// in-kernel recovery carrier of an IPv4 ADD_ADDR: NOP NOP TS, then the
/// option (kind 30, subtype 3) at byte 66 of the frame. A test-made loss
/// of exactly the packets emptcp builds; detached when the link fd closes
/// (on drop).
struct CarrierDrop {
    _link: std::os::fd::OwnedFd,
}

impl CarrierDrop {
    fn attach(lab: &Lab, dev: &str) -> CarrierDrop {
        #[rustfmt::skip]
        let insns: [u8; 112] = [
            0x61, 0x12, 0x4c, 0x00, 0, 0, 0, 0, // r2 = skb->data
            0x61, 0x13, 0x50, 0x00, 0, 0, 0, 0, // r3 = skb->data_end
            0xbf, 0x24, 0x00, 0x00, 0, 0, 0, 0, // r4 = r2
            0x07, 0x04, 0x00, 0x00, 72, 0, 0, 0, // r4 += 72
            0x2d, 0x34, 0x07, 0x00, 0, 0, 0, 0, // if r4 > r3 goto pass
            0x71, 0x25, 0x42, 0x00, 0, 0, 0, 0, // r5 = byte 66 (kind)
            0x55, 0x05, 0x05, 0x00, 30, 0, 0, 0, // if r5 != 30 goto pass
            0x71, 0x25, 0x44, 0x00, 0, 0, 0, 0, // r5 = byte 68 (subtype)
            0x57, 0x05, 0x00, 0x00, 0xf0, 0, 0, 0, // r5 &= 0xf0
            0x55, 0x05, 0x02, 0x00, 0x30, 0, 0, 0, // if r5 != ADD_ADDR goto pass
            0xb7, 0x00, 0x00, 0x00, 2, 0, 0, 0, // r0 = TCX_DROP
            0x95, 0x00, 0x00, 0x00, 0, 0, 0, 0, // exit
            0xb7, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, // pass: r0 = TCX_NEXT
            0x95, 0x00, 0x00, 0x00, 0, 0, 0, 0, // exit
        ];
        let ns = std::path::Path::new("/run/netns").join(&lab.tb.cli);
        let dev = dev.to_string();
        let link = in_netns_at(&ns, || {
            use std::os::fd::AsFd as _;
            let ifindex = nix::net::if_::if_nametoindex(dev.as_str()).expect("ifindex");
            let prog = emptcp::sys::load_tc_insns("test_carrier_drop", &insns)
                .expect("load the carrier drop");
            emptcp::sys::tcx_link_create(prog.as_fd(), ifindex, emptcp::sys::BPF_TCX_INGRESS)
                .expect("attach the carrier drop")
        });
        CarrierDrop { _link: link }
    }
}

/// `FLOW_STATS[e]` summed over CPUs, read from the pinned map (fast enough
/// to poll every millisecond).
fn flow_stat(lab: &Lab, e: emptcp_common::FlowStat) -> u64 {
    let md = aya::maps::MapData::from_pin(lab.root().join("maps/FLOW_STATS")).unwrap();
    let m: aya::maps::PerCpuArray<_, u64> =
        aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(md)).unwrap();
    m.get(&(e as u32), 0).unwrap().iter().sum()
}

/// A download's report and the client counters before and after it.
type Run = (
    serde_json::Value,
    BTreeMap<String, u64>,
    BTreeMap<String, u64>,
);

/// One download whose first in-kernel carrier is lost (the drop detached
/// as soon as a carrier was built): its report and the client counters
/// before and after. `None` when the premise failed: the server's path
/// manager (a kernel worker) announced only after the download had passed
/// remove_below on a loaded machine, so the address passed unstripped and
/// nothing was stored to recover (`run_with_the_address_held`).
fn first_carrier_lost(lab: &Lab, args: &[&str]) -> Option<Run> {
    use emptcp_common::FlowStat::{AddAddrRecoveredKernel, AddAddrStored};
    let (sent, stored) = (
        flow_stat(lab, AddAddrRecoveredKernel),
        flow_stat(lab, AddAddrStored),
    );
    let lost = CarrierDrop::attach(lab, "cli0");
    let before = lab.tb.counters("cli");
    let handle = lab.tb.xfer_in_background(args);
    // The retry comes 200 ms after the first carrier: polling every
    // millisecond leaves the path healed long before it, even with every
    // core busy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while flow_stat(lab, AddAddrRecoveredKernel) == sent && !handle.is_finished() {
        assert!(std::time::Instant::now() < deadline, "no carrier was built");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(lost);
    let out = handle.join().unwrap();
    let after = lab.tb.counters("cli");
    let res: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("xfer output: {e}: {out:?}"));
    if flow_stat(lab, AddAddrRecoveredKernel) == sent {
        assert_eq!(
            flow_stat(lab, AddAddrStored),
            stored,
            "the announcement was stored but no carrier was built: {res}"
        );
        return None;
    }
    Some((res, before, after))
}

/// The first in-kernel carrier of the stored address is lost: the stack
/// never echoes it, the datapath sends it again after 0.2 s (counted
/// `add_addr_retried`) and the client joins. The control in the same run
/// loses every carrier and stays single-path.
#[test]
fn a_lost_recovery_carrier_is_sent_again_and_the_client_joins() {
    use emptcp_common::FlowStat::AddAddrRetried;
    if !kernel_or_skip("a_lost_recovery_carrier_is_sent_again_and_the_client_joins") {
        return;
    }
    let lab = Lab::new("loss");
    no_server_add_addr_retransmissions(&lab);
    lab.apply(&policy("native", "512KiB", "1MiB"));
    // 400 MB: a few seconds here, more than the 0.2 + 0.4 + 0.8 s of the
    // retries; the subflow count is read right after the last byte.
    let args = ["--download", "400M"];

    // Control: every carrier lost. Its announcement must have been held
    // back (else the client joins through it and the control proves
    // nothing): once more, counted, when it came after remove_below.
    let lost = CarrierDrop::attach(&lab, "cli0");
    let (res, d) = run_with_the_address_held(&lab, &args, "every carrier lost");
    drop(lost);
    assert_eq!(
        subflows(&res),
        0,
        "control joined although every carrier was lost: {res}"
    );
    assert_eq!(d(JOIN), 0, "control: {res}");
    let retried = flow_stat(&lab, AddAddrRetried);
    assert!(retried >= 1, "control: the lost carrier was not sent again");

    // The first carrier lost, then the path heals; the same premise.
    let (res, before, after) = match first_carrier_lost(&lab, &args) {
        Some(r) => r,
        None => {
            record_retry(
                "first carrier lost",
                &format!("{args:?}: the announcement came after remove_below"),
            );
            first_carrier_lost(&lab, &args).expect("the announcement came late twice")
        }
    };
    assert_eq!(res["rc"], 0, "transfer failed: {res}");
    assert!(
        flow_stat(&lab, AddAddrRetried) > retried,
        "the lost carrier was not sent again"
    );
    assert_eq!(subflows(&res), 1, "no join after the retry: {res}");
    assert_eq!(delta(&before, &after, JOIN), 1, "{res}");
    assert_eq!(delta(&before, &after, FALLBACK), 0);
    lab.destroy();
}

#[test]
fn short_and_long_flows_with_the_servers_tx_checksum_offload_on() {
    if kernel_or_skip("short_and_long_flows_with_the_servers_tx_checksum_offload_on") {
        offload_on("native");
    }
}

/// The same in generic (skb) XDP: the insert moves the headers in front of
/// an skb that stays CHECKSUM_PARTIAL, whose `csum_start` still points at
/// the old TCP header, now `n` bytes into the new one. Local delivery
/// takes such an skb as verified (`skb_csum_unnecessary`: partial with
/// `csum_start` at or after the TCP header), so the inserted segment is
/// accepted; this shows it on the kernel, with the insert counted.
#[test]
fn short_and_long_flows_with_the_servers_tx_checksum_offload_on_in_skb_mode() {
    if kernel_or_skip("short_and_long_flows_with_the_servers_tx_checksum_offload_on_in_skb_mode") {
        offload_on("skb");
    }
}

fn offload_on(mode: &str) {
    let lab = Lab::new(&format!("txcsum{mode}"));
    // What the veth pair does by default: the server's stack leaves the
    // TCP checksum to the device, and the skb crosses to the client
    // CHECKSUM_PARTIAL, its field holding the pseudo-header sum only.
    lab.tb.run(&["csum-offload", "on"]);
    for d in ["srv0", "srv1"] {
        let k = must(&format!("ip netns exec {} ethtool -k {d}", lab.tb.srv));
        assert!(k.contains("tx-checksumming: on"), "{d}: {k}");
    }
    let failures = hw_csum_failures();
    let short = short_download("1");

    // Control in the same run: without emptcp the short flow joins.
    let (_, d) = run(&lab, &short);
    assert_eq!(
        d(JOIN),
        1,
        "baseline: the second subflow should open at once"
    );

    lab.apply(&policy(mode, "1MiB", "4MiB"));
    let (_, d) = run(&lab, &short);
    assert_eq!(d(JOIN_TX), 0, "short flow opened a second subflow");
    assert_eq!(d(ADD_ADDR), 0, "short flow: ADD_ADDR reached the client");
    no_damage(&d);
    let st = status_json(lab.root(), &lab.tb.cli);
    let ev = &st["datapath_events"];
    assert!(n(&ev["add_addr_stored"]) >= 1, "nothing stored: {st}");
    assert_eq!(n(&ev["malformed"]), 0, "a segment was refused: {st}");

    // A long upload gets the stored address back and joins.
    let (_, d) = run(&lab, &long_upload("1", "3"));
    assert!(d(ADD_ADDR) >= 1, "long upload: ADD_ADDR not delivered");
    assert_eq!(d(JOIN), 1, "long upload: second subflow not established");
    no_damage(&d);
    // Delivered by an insert into a received segment of the server (an
    // upload's pure ACKs have room), the path this test is about.
    let st = status_json(lab.root(), &lab.tb.cli);
    assert!(
        n(&st["datapath_events"]["add_addr_recovered"]) >= 1,
        "{mode}: no insert: {st}"
    );
    assert_eq!(
        hw_csum_failures(),
        failures,
        "the kernel log reports hw csum failures"
    );
    lab.destroy();
}
