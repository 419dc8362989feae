//! A burst of 1000 writes to the drop-in directory in about 2 s: the daemon
//! stays up, coalesces the burst into a bounded number of reads and
//! reconciles, and ends converged on the last content.
mod common;
#[path = "watch_support/mod.rs"]
mod watch_support;

use std::time::{Duration, Instant};

use common::*;
use watch_support::*;

#[test]
fn a_thousand_rapid_writes_end_converged_on_the_last_one() {
    if !kernel_or_skip("a_thousand_rapid_writes_end_converged_on_the_last_one") {
        return;
    }
    let lab = WatchLab::with_base("wstorm");
    let (root, ns, d) = (&lab.root, lab.ns(), lab.d());
    std::fs::write(d.join("20-b.yaml"), chain("b", 10_000)).unwrap();
    let mut daemon = Daemon::start(&root.path, ns, &["-d", d.to_str().unwrap()]);
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    let m0 = daemon.scrape();
    let r0 = metric_sum(&m0, "emptcp_reconciles_total");
    let reads0 = metric_sum(&m0, "emptcp_policy_reads_total");

    // 1000 writes in ~2 s: in place (truncate + write, as `echo > f` does)
    // and by rename, alternating, each with a different port.
    let t0 = Instant::now();
    for i in 0..1000u16 {
        let text = chain("b", 10_000 + i);
        if i % 2 == 0 {
            std::fs::write(d.join("20-b.yaml"), text).unwrap();
        } else {
            rename_over(d, "20-b.yaml", &text);
        }
        let due = t0 + Duration::from_millis(2 * u64::from(i + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let burst = t0.elapsed();
    eprintln!("1000 writes in {burst:?}");

    // Converged on the last content (port 10999) soon after the burst.
    let took = daemon.wait_status("the last content", Duration::from_secs(3), |_| {
        let e = export(&root.path, ns);
        let ports: Vec<u64> = e["entries"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .filter(|p| *p >= 10_000)
            .collect();
        ports == [10_999]
    });
    eprintln!("converged on the last write {took:?} after the burst");
    daemon.wait_state("valid and converged", Duration::from_secs(3), |s| {
        s["policy"]["valid"] == true && s["last_reconcile"]["converged"] == true
    });
    assert!(daemon.is_running(), "the daemon died");
    let (h, _) = daemon.http_get("/healthz");
    assert!(h.contains("200"), "{h}");

    let m = daemon.scrape();
    let reconciles = metric_sum(&m, "emptcp_reconciles_total") - r0;
    let reads = metric_sum(&m, "emptcp_policy_reads_total") - reads0;
    eprintln!("burst: {reads} policy reads, {reconciles} reconciles");
    // The debounce fires at most once per second during a burst, plus the
    // final quiet period (and a drift pass, had one been due): a handful.
    assert!(
        (1.0..=10.0).contains(&reconciles),
        "{reconciles} reconciles\n{m}"
    );
    assert!(reads <= 10.0, "{reads} reads\n{m}");
    emptcp_ok(
        &root.path,
        Some(ns),
        &["plan", "--detailed-exitcode", "-d", d.to_str().unwrap()],
        0,
    );
}
