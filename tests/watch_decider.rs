//! The cpu_usage threshold decider: a synthetic load (the CPU accounting
//! the decider samples, written by the test: 100 % busy for a few seconds)
//! moves the chain's recover_at in the THRESHOLDS map to busy_recover_at,
//! and back once the load stops. The decision goes through plan/apply and
//! is never counted as drift. The real /proc/stat parsing is unit-tested in
//! watch/decider.rs; here the machine's actual load cannot flip the result.
mod common;
#[path = "watch_support/mod.rs"]
mod watch_support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use watch_support::*;

const MIB: u64 = 1 << 20;

fn recover_at(root: &std::path::Path, ns: &str) -> Option<u64> {
    let e = export(root, ns);
    let (id, _) = e["entries"]["chains"]
        .as_object()?
        .iter()
        .find(|(_, c)| c["name"] == "short")?;
    e["entries"]["thresholds"][id.as_str()]["recover_at"].as_u64()
}

fn wait_recover_at(
    root: &std::path::Path,
    ns: &str,
    want: u64,
    timeout: Duration,
    d: &Daemon,
) -> Duration {
    let t0 = Instant::now();
    loop {
        if recover_at(root, ns) == Some(want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "recover_at did not become {want}: {:?}\nstate: {:#}\nlog:\n{}",
            recover_at(root, ns),
            d.state().unwrap_or_default(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cpu_usage_decider_moves_the_threshold_and_back() {
    if !kernel_or_skip("cpu_usage_decider_moves_the_threshold_and_back") {
        return;
    }
    let needed = ["record_flow", "strip_add_addr", "recover_add_addr"];
    // Every build carries them: their absence is a broken build, not a skip.
    assert!(
        object_has(&needed),
        "the eBPF object has no {needed:?} programs (thresholds need them)"
    );
    let t = tag("wdec");
    let pair = Pair::new(&t);
    let root = BpfRoot::new(&t);
    let ns = pair.b.name.as_str();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("10-p.yaml"),
        format!(
            "version: 1
interfaces:
  - name: {}
    chains: [short]
chains:
  - name: short
    match: {{remote_ports: [5201]}}
    thresholds:
      remove_below: 1MiB
      recover_at: 4MiB
      decider: {{cpu_usage: {{interval: 200ms, busy_above: 90%, busy_recover_at: 64MiB}}}}
    actions: [record_flow, strip_add_addr, recover_add_addr]
",
            pair.dev_b
        ),
    )
    .unwrap();
    // The node's CPU accounting, as the decider reads it: a file in
    // /proc/stat's format that a thread here advances every 50 ms, idle or
    // busy as the test says. What the machine really runs (other tests, a
    // CPU hog per core) cannot move the decision.
    let stat = d.join("stat");
    let busy = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (stat, busy, stop) = (stat.clone(), busy.clone(), stop.clone());
        let write = move |user: u64, idle: u64| {
            let tmp = stat.with_extension("new");
            std::fs::write(
                &tmp,
                format!("cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {user} 0 0 {idle} 0 0 0 0 0 0\n"),
            )
            .unwrap();
            std::fs::rename(&tmp, &stat).unwrap();
        };
        write(0, 0);
        std::thread::spawn(move || {
            let (mut user, mut idle) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                if busy.load(Ordering::Relaxed) {
                    user += 5;
                } else {
                    idle += 5;
                }
                write(user, idle);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let daemon = Daemon::start_env(
        &root.path,
        ns,
        &["-d", d.to_str().unwrap()],
        &[("EMPTCP_PROC_STAT", stat.to_str().unwrap())],
    );
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    // Calm (0 %): the policy's recover_at.
    wait_recover_at(&root.path, ns, 4 * MIB, Duration::from_secs(10), &daemon);

    // 100 % busy for about 3 s. The limit is generous (sampling every
    // 200 ms, one reconcile): only a decision that never comes fails it.
    busy.store(true, Ordering::Relaxed);
    let busy_in = wait_recover_at(&root.path, ns, 64 * MIB, Duration::from_secs(10), &daemon);
    eprintln!("busy_recover_at in force {busy_in:?} into the load");
    let st = daemon.status();
    let dec = &st["daemon"]["deciders"][0];
    assert_eq!(dec["chain"], "short");
    assert_eq!(dec["busy"], true, "{dec:#}");
    assert_eq!(dec["recover_at_in_force"], 64 * MIB);
    // Still busy: at or above the calm threshold (90% - 10 points).
    assert!(
        dec["cpu_usage_percent"].as_f64().unwrap() >= 80.0,
        "{dec:#}"
    );
    let m = daemon.scrape();
    assert_eq!(
        metric(&m, "emptcp_decider_busy{chain=\"short\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "emptcp_decider_recover_at_bytes{chain=\"short\"}"),
        Some((64 * MIB) as f64)
    );
    std::thread::sleep(Duration::from_millis(1500));
    // Calm again.
    busy.store(false, Ordering::Relaxed);
    let calm_in = wait_recover_at(&root.path, ns, 4 * MIB, Duration::from_secs(10), &daemon);
    eprintln!("recover_at back {calm_in:?} after the load stopped");
    // The map changes during the apply; the daemon records the reconcile
    // (status file, gauges) just after: wait for that record.
    let s = daemon.wait_state("calm recorded", Duration::from_secs(5), |s| {
        s["deciders"][0]["busy"] == false && s["counters"]["decider_changes"].as_u64() >= Some(2)
    });
    assert!(
        s["counters"]["decider_changes"].as_u64().unwrap() >= 2,
        "{s:#}"
    );
    assert_eq!(
        s["counters"]["drift_corrections"], 0,
        "a decision counted as drift: {s:#}"
    );
    let m = daemon.scrape();
    assert_eq!(
        metric(&m, "emptcp_decider_busy{chain=\"short\"}"),
        Some(0.0)
    );
    assert!(metric(&m, "emptcp_decider_cpu_usage_percent{chain=\"short\"}").is_some());
    // The decision is live state, not drift: a drift pass keeps it.
    emptcp_ok(
        &root.path,
        Some(ns),
        &["plan", "--detailed-exitcode", "-d", d.to_str().unwrap()],
        0,
    );
    stop.store(true, Ordering::Relaxed);
    ticker.join().unwrap();
}
