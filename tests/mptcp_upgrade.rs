//! An object upgrade interrupted under live MPTCP traffic, then rolled
//! back: the transfer completes with every byte verified, the XDP links
//! are never detached (same link ids), and afterwards the kernel runs the
//! rolled-back object's programs behind every link and in every slot (read
//! from the programs themselves), as status says.
mod common;
mod mptcp_common;

use std::time::Duration;

use common::*;
use mptcp_common::*;

const POLICY: &str = r#"version: 1
settings: {flow_capacity: 16384}
interfaces:
  - {name: cli0, xdp_mode: native, chains: [mptcp]}
  - {name: cli1, xdp_mode: native, chains: [mptcp]}
chains:
  - name: mptcp
    match: {remote: [192.0.2.0/24, 198.51.100.0/24], remote_ports: [5201]}
    thresholds: {remove_below: 1MiB, recover_at: 2MiB}
    actions: [record_flow, strip_add_addr, recover_add_addr, count]
"#;

fn link_ids(st: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    st["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["link_id"].clone(),
            )
        })
        .collect()
}

#[test]
fn interrupted_upgrade_and_rollback_under_traffic() {
    if !kernel_or_skip("interrupted_upgrade_and_rollback_under_traffic") {
        return;
    }
    let lab = Lab::new("upgrb");
    let ns = lab.tb.cli.clone();
    lab.apply(POLICY);
    let f = policy_file(&lab.dir, "p.yaml", POLICY);
    let f = f.to_str().unwrap();
    let before = status_json(lab.root(), &ns);
    let links_before = link_ids(&before);
    assert_eq!(links_before.len(), 2, "{before}");
    let b = rebuilt_object(&lab.dir, b'2');
    let env_b = [("EMPTCP_OBJECT", b.to_str().unwrap())];

    // A paced request/response connection (about 3 s, both directions
    // verified byte for byte by mptcp_xfer.py) across the whole sequence.
    let counters_before = lab.tb.counters("cli");
    let handle = lab.tb.xfer_in_background(&paced("60", &[]));
    std::thread::sleep(Duration::from_millis(500));
    // The upgrade to B is killed right after its load step (B's programs
    // are pinned under A's names, META still records A)...
    let o = emptcp_env(
        lab.root(),
        Some(&ns),
        &["apply", "-f", f],
        &[
            ("EMPTCP_OBJECT", b.to_str().unwrap()),
            ("EMPTCP_TEST_KILL_AFTER_STEP", "1"),
        ],
    );
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(o.status.signal(), Some(9), "the upgrade was not killed");
    // Control: what the pins hold is not what META records, and status says so.
    let mid = status_json(lab.root(), &ns);
    assert_eq!(mid["consistent"], false, "{mid}");
    // ...and A is applied again (the rollback a DaemonSet does).
    emptcp_ok(lab.root(), Some(&ns), &["apply", "-f", f], 0);
    let out = handle.join().unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let res: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("xfer output {line:?}: {e}"));
    assert_eq!(res["rc"], 0, "transfer failed or data corrupted: {res}");
    assert_eq!(res["mptcp_info"]["fallback"], false, "{res}");
    let d = {
        let after = lab.tb.counters("cli");
        move |n: &str| delta(&counters_before, &after, n)
    };
    no_damage(&d);

    let after = status_json(lab.root(), &ns);
    assert_eq!(
        link_ids(&after),
        links_before,
        "a link was re-created: {after}"
    );
    assert_eq!(after["consistent"], true, "{after}");
    for (place, build) in running_builds(lab.root()) {
        assert_eq!(build, Some(b'0'), "{place} runs another object");
    }
    emptcp_ok(
        lab.root(),
        Some(&ns),
        &["plan", "--detailed-exitcode", "-f", f],
        0,
    );
    // With B, the plan is an upgrade again (B is not what runs).
    let o = emptcp_env(
        lab.root(),
        Some(&ns),
        &["plan", "--detailed-exitcode", "-f", f],
        &env_b,
    );
    assert_eq!(o.status.code(), Some(2));
    lab.destroy();
}
