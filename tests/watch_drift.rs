//! Drift self-heal: a detached link, a removed link pin, deleted map entries
//! are restored within one (short) drift interval and counted; an interface
//! that does not exist yet is reported and attached when it appears (the
//! netlink trigger: well before the drift pass).
mod common;
#[path = "watch_support/mod.rs"]
mod watch_support;

use std::time::{Duration, Instant};

use common::*;
use watch_support::*;

fn drift_count(d: &Daemon) -> u64 {
    d.state().unwrap()["counters"]["drift_corrections"]
        .as_u64()
        .unwrap()
}

fn link_id(d: &Daemon, dev: &str) -> u64 {
    iface(&d.status(), dev).unwrap()["link_id"]
        .as_u64()
        .unwrap()
}

#[test]
fn drift_is_restored_within_one_interval_and_counted() {
    if !kernel_or_skip("drift_is_restored_within_one_interval_and_counted") {
        return;
    }
    let t = tag("wdrift");
    let pair = Pair::new(&t);
    let root = BpfRoot::new(&t);
    let ns = pair.b.name.as_str();
    let dev = pair.dev_b.clone();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("10-base.yaml"), base(&dev, "native")).unwrap();
    std::fs::write(d.join("20-b.yaml"), chain("b", 6000)).unwrap();
    let interval = Duration::from_millis(1000);
    let daemon = Daemon::start(
        &root.path,
        ns,
        &["-d", d.to_str().unwrap(), "--drift-interval", "1s"],
    );
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    let want = export(&root.path, ns)["entries"].clone();
    // One drift interval, plus the converge itself and polling slack.
    let limit = interval + Duration::from_millis(1500);

    // 1. `ip link set dev X xdp off`: the kernel refuses to remove a
    //    program attached through a bpf_link, so nothing drifts.
    let o = sh(&format!("ip -n {ns} link set dev {dev} xdp off"));
    assert!(
        !o.status.success(),
        "ip link xdp off removed a bpf_link program"
    );
    assert!(attached(&daemon.status(), &dev));

    // 2. The link is detached behind our back (bpftool link detach).
    let n0 = drift_count(&daemon);
    let old_link = link_id(&daemon, &dev);
    must(&format!("bpftool link detach id {old_link}"));
    let t0 = Instant::now();
    daemon.wait_status("re-attached after link detach", limit, |s| {
        attached(s, &dev)
    });
    eprintln!("link detach healed in {:?}", t0.elapsed());
    assert_ne!(link_id(&daemon, &dev), old_link, "a new link");
    daemon.wait_state("drift counted", limit, |s| {
        s["counters"]["drift_corrections"].as_u64().unwrap() > n0
    });

    // 3. The link pin is removed (that detaches the program).
    let n1 = drift_count(&daemon);
    std::fs::remove_file(root.path.join("links/xdp").join(&dev)).unwrap();
    let t0 = Instant::now();
    daemon.wait_status("re-attached after unpin", limit, |s| attached(s, &dev));
    eprintln!("link unpin healed in {:?}", t0.elapsed());
    daemon.wait_state("drift counted", limit, |s| {
        s["counters"]["drift_corrections"].as_u64().unwrap() > n1
    });

    // 4. Map entries deleted with bpftool: a selector and a port.
    let n2 = drift_count(&daemon);
    let maps = root.path.join("maps");
    must(&format!(
        "bpftool map delete pinned {} key 0 0 0 0",
        maps.join("SELECTORS").display()
    ));
    must(&format!(
        "bpftool map delete pinned {} key hex 00 00 00 00 51 14 01 00",
        maps.join("PORTS").display()
    ));
    let t0 = Instant::now();
    daemon.wait_state("drift counted", limit, |s| {
        s["counters"]["drift_corrections"].as_u64().unwrap() > n2
    });
    eprintln!("map entries healed in {:?}", t0.elapsed());
    let start = Instant::now();
    while export(&root.path, ns)["entries"] != want {
        assert!(start.elapsed() < limit, "entries not restored");
        std::thread::sleep(Duration::from_millis(50));
    }

    // 5. A map pin removed by hand: the map is re-created and refilled.
    let n3 = drift_count(&daemon);
    std::fs::remove_file(maps.join("SELECTORS")).unwrap();
    daemon.wait_state("drift counted", limit * 2, |s| {
        s["counters"]["drift_corrections"].as_u64().unwrap() > n3
    });
    let start = Instant::now();
    while export(&root.path, ns)["entries"] != want {
        assert!(
            start.elapsed() < limit * 2,
            "entries not restored after unpin"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The metric counts the same corrections.
    let m = daemon.scrape();
    let n = metric(&m, "emptcp_drift_corrections_total").unwrap();
    assert_eq!(n as u64, drift_count(&daemon), "{m}");
    assert!(n >= 4.0, "{m}");
    emptcp_ok(
        &root.path,
        Some(ns),
        &["plan", "--detailed-exitcode", "-d", d.to_str().unwrap()],
        0,
    );
}

#[test]
fn a_missing_interface_is_attached_when_it_appears() {
    if !kernel_or_skip("a_missing_interface_is_attached_when_it_appears") {
        return;
    }
    let t = tag("wmiss");
    let pair = Pair::new(&t);
    let root = BpfRoot::new(&t);
    let ns = pair.b.name.as_str();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dev = pair.dev_b.clone();
    std::fs::write(
        d.join("10-base.yaml"),
        format!(
            "version: 1\ninterfaces:\n  - name: {dev}\n    xdp_mode: native\n    chains: [a]\n  - name: late0\n    xdp_mode: skb\n    chains: [a]\nchains:\n  - name: a\n    match: {{local_ports: [5201]}}\n    actions: [count]\n"
        ),
    )
    .unwrap();
    // A long drift interval: only the link event can attach it quickly.
    let daemon = Daemon::start(
        &root.path,
        ns,
        &["-d", d.to_str().unwrap(), "--drift-interval", "60s"],
    );
    let st = daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    assert_eq!(
        st["missing_interfaces"],
        serde_json::json!(["late0"]),
        "{st:#}"
    );
    assert!(attached(&daemon.status(), &pair.dev_b));
    let m = daemon.scrape();
    assert_eq!(metric(&m, "emptcp_interfaces_missing"), Some(1.0));

    let t0 = Instant::now();
    must(&format!(
        "ip -n {ns} link add late0 type veth peer name late0p && ip -n {ns} link set late0 up && ip -n {ns} link set late0p up"
    ));
    let took = daemon.wait_status("late0 attached", Duration::from_secs(3), |s| {
        attached(s, "late0")
    });
    eprintln!(
        "late interface attached {:?} after it appeared",
        t0.elapsed()
    );
    assert!(took < Duration::from_secs(3));
    let st = daemon.wait_state("no interface missing", Duration::from_secs(2), |s| {
        s["missing_interfaces"].as_array().unwrap().is_empty()
    });
    assert_eq!(st["last_reconcile"]["trigger"], "link", "{st:#}");
    // An interface that appears is not drift (the set of missing
    // interfaces changed); deleting it again detaches cleanly.
    assert_eq!(st["counters"]["drift_corrections"], 0, "{st:#}");
    must(&format!("ip -n {ns} link del late0"));
    daemon.wait_state("missing again", Duration::from_secs(3), |s| {
        s["missing_interfaces"] == serde_json::json!(["late0"])
    });
    assert!(!root.path.join("links/xdp/late0").exists());
}

/// The kernel name of the program in slot `slot` of the pinned PROGS.
fn slot_program_name(root: &std::path::Path, slot: u32) -> String {
    let dump = must(&format!(
        "bpftool map lookup pinned {} key {} 0 0 0 -j",
        root.join("maps/PROGS").display(),
        slot
    ));
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let b: Vec<u8> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect();
    let id = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let p: serde_json::Value =
        serde_json::from_str(&must(&format!("bpftool prog show id {id} -j"))).unwrap();
    p["name"].as_str().unwrap().to_string()
}

/// A tail-call slot and a program pin replaced by hand with another
/// program of the right type: `plan` reports both, status shows what
/// runs, and the daemon's drift pass puts the object's programs back.
#[test]
fn a_program_replaced_by_hand_is_reported_and_healed() {
    if !kernel_or_skip("a_program_replaced_by_hand_is_reported_and_healed") {
        return;
    }
    let t = tag("wprog");
    let pair = Pair::new(&t);
    let root = BpfRoot::new(&t);
    let ns = pair.b.name.as_str();
    let dev = pair.dev_b.clone();
    let dir = tempfile::tempdir().unwrap();
    // `count` and `drop` in use: only the programs a policy uses are
    // loaded (and pinned, and in their slots).
    let policy = base(&dev, "native").replace("chains: [a]", "chains: [a, z]")
        + "  - name: z\n    match: {local_ports: [5999]}\n    actions: [drop]\n";
    let f = policy_file(&dir, "p.yaml", &policy);
    let f = f.to_str().unwrap();
    apply_ok(&root.path, ns, f);
    let drop_slot = emptcp_common::Action::Drop as u32;
    assert_eq!(slot_program_name(&root.path, drop_slot), "drop");

    // 1. The `drop` slot gets the `count` program (same object, same type).
    must(&format!(
        "bpftool map update pinned {} key {drop_slot} 0 0 0 value pinned {}",
        root.path.join("maps/PROGS").display(),
        root.path.join("progs/count").display()
    ));
    assert_eq!(slot_program_name(&root.path, drop_slot), "count");
    let out = expect_plan_exit(&root.path, ns, f, 2);
    assert!(out.contains("tail-call slot 2 (drop)"), "{out}");

    // 2. The pin of `drop` now holds an unstamped program (bpftool
    //    loads one from no object: use the `drop` program of another
    //    load instead, made here with aya, unstamped).
    let mut other = aya::Ebpf::load(emptcp::object::embedded()).unwrap();
    let prog: &mut aya::programs::Xdp = other.program_mut("drop").unwrap().try_into().unwrap();
    prog.load().unwrap();
    let pin = root.path.join("progs/drop");
    std::fs::remove_file(&pin).unwrap();
    prog.pin(&pin).unwrap();
    let out = expect_plan_exit(&root.path, ns, f, 2);
    assert!(out.contains("load eBPF object"), "{out}");
    assert!(
        out.contains("no emptcp object") && out.contains("drop"),
        "{out}"
    );
    let st = status_json(&root.path, ns);
    assert_eq!(st["consistent"], false, "{st}");
    let why = st["inconsistencies"].to_string();
    assert!(why.contains("progs/drop"), "{st}");
    drop(other);

    // 3. The daemon's drift pass heals both.
    let daemon = Daemon::start(&root.path, ns, &["-f", f, "--drift-interval", "1s"]);
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    daemon.wait_status("consistent", Duration::from_secs(10), |s| {
        s["consistent"] == true
    });
    assert!(attached(&daemon.status(), &dev));
    assert_eq!(slot_program_name(&root.path, drop_slot), "drop");
    assert!(
        running_builds(&root.path)
            .iter()
            .all(|(_, b)| *b == Some(b'0'))
    );
    expect_plan_exit(&root.path, ns, f, 0);
}
