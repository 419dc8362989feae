//! The metrics endpoint, scraped: every named series exists and moves as
//! the test acts (a policy change, traffic, drift), and the health
//! endpoints answer.
mod common;
#[path = "watch_support/mod.rs"]
mod watch_support;

use std::{net::SocketAddr, time::Duration};

use common::*;
use watch_support::*;

#[test]
fn metrics_are_served_and_move() {
    if !kernel_or_skip("metrics_are_served_and_move") {
        return;
    }
    let lab = WatchLab::with_base("wmet");
    let (pair, root, ns, d) = (&lab.pair, &lab.root, lab.ns(), lab.d());
    let daemon = Daemon::start(
        &root.path,
        ns,
        &["-d", d.to_str().unwrap(), "--drift-interval", "1s"],
    );
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    let m0 = daemon.scrape();
    for name in [
        "emptcp_reconciles_total{outcome=\"applied\"}",
        "emptcp_last_reconcile_timestamp_seconds",
        "emptcp_last_successful_reconcile_timestamp_seconds",
        "emptcp_converged",
        "emptcp_policy_valid",
        "emptcp_interfaces_missing",
        "emptcp_flows_tracked",
        "emptcp_connection_table_entries{table=\"FLOWS\"}",
        "emptcp_connection_table_entries{table=\"FLOW_ADDRS\"}",
        "emptcp_add_addr_stripped_total",
        "emptcp_add_addr_recovered_total",
        "emptcp_chain_packets_total{chain=\"a\"}",
        "emptcp_chain_bytes_total{chain=\"a\"}",
        "emptcp_datapath_packets_total{program=\"entry\",outcome=\"seen\"}",
        "emptcp_datapath_packets_total{program=\"count\",outcome=\"applied\"}",
        "emptcp_build_info{version=\"0.1.0\"}",
    ] {
        assert!(metric(&m0, name).is_some(), "missing {name}\n{m0}");
    }
    for prefix in [
        "# TYPE emptcp_reconciles_total counter",
        "# TYPE emptcp_drift_corrections_total counter",
        "# TYPE emptcp_policy_errors_total counter",
        "# TYPE emptcp_reconcile_duration_seconds histogram",
        "emptcp_policy_info{hash=\"",
    ] {
        assert!(m0.contains(prefix), "missing {prefix}\n{m0}");
    }
    let hash0 = daemon.state().unwrap()["policy"]["target_hash"]
        .as_str()
        .unwrap()[..12]
        .to_string();
    assert_eq!(
        metric(&m0, &format!("emptcp_policy_info{{hash=\"{hash0}\"}}")),
        Some(1.0)
    );
    assert_eq!(metric(&m0, "emptcp_converged"), Some(1.0));
    // A policy without record_flow keeps the connection tables at 1024
    // entries (docs/datapath.md, "Maps"), and nothing is tracked in them.
    for table in ["FLOWS", "TOKENS", "JOINS", "FLOW_ADDRS"] {
        let capacity = format!("emptcp_connection_table_capacity{{table=\"{table}\"}}");
        assert_eq!(metric(&m0, &capacity), Some(1024.0), "{capacity}\n{m0}");
    }
    assert_eq!(
        metric(&m0, "emptcp_connection_table_entries{table=\"FLOWS\"}"),
        Some(0.0)
    );

    // Traffic moves the datapath counters.
    let seen0 = metric(
        &m0,
        "emptcp_datapath_packets_total{program=\"entry\",outcome=\"seen\"}",
    )
    .unwrap();
    let chain0 = metric(&m0, "emptcp_chain_packets_total{chain=\"a\"}").unwrap();
    in_netns(&pair.a, || {
        for _ in 0..5 {
            let _ = std::net::TcpStream::connect_timeout(
                &SocketAddr::from(([192, 0, 2, 2], 5201)),
                Duration::from_millis(200),
            );
        }
    });
    let m1 = daemon.scrape();
    assert!(
        metric(
            &m1,
            "emptcp_datapath_packets_total{program=\"entry\",outcome=\"seen\"}"
        )
        .unwrap()
            >= seen0 + 5.0,
        "{m1}"
    );
    assert!(
        metric(&m1, "emptcp_chain_packets_total{chain=\"a\"}").unwrap() >= chain0 + 5.0,
        "{m1}"
    );

    // A policy change: applied +1, the info metric follows the hash, the
    // success timestamp moves.
    let applied0 = metric(&m1, "emptcp_reconciles_total{outcome=\"applied\"}").unwrap();
    let ts0 = metric(&m1, "emptcp_last_successful_reconcile_timestamp_seconds").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(d.join("20-b.yaml"), chain("b", 6000)).unwrap();
    daemon.wait_state("the change", Duration::from_secs(2), |s| {
        s["policy"]["applied_hash"]
            .as_str()
            .is_some_and(|h| !h.starts_with(&hash0))
    });
    let m2 = daemon.scrape();
    assert!(
        metric(&m2, "emptcp_reconciles_total{outcome=\"applied\"}").unwrap() >= applied0 + 1.0,
        "{m2}"
    );
    assert!(metric(&m2, "emptcp_last_successful_reconcile_timestamp_seconds").unwrap() > ts0);
    assert_eq!(
        metric(&m2, &format!("emptcp_policy_info{{hash=\"{hash0}\"}}")),
        Some(0.0),
        "{m2}"
    );
    assert!(
        metric(&m2, "emptcp_chain_packets_total{chain=\"b\"}").is_some(),
        "{m2}"
    );

    // Drift moves the drift counter.
    let drift0 = metric(&m2, "emptcp_drift_corrections_total").unwrap_or(0.0);
    must(&format!(
        "bpftool map delete pinned {} key 0 0 0 0",
        root.path.join("maps/SELECTORS").display()
    ));
    daemon.wait_state("drift counted", Duration::from_secs(3), |s| {
        s["counters"]["drift_corrections"].as_f64().unwrap() > drift0
    });
    let m3 = daemon.scrape();
    assert!(
        metric(&m3, "emptcp_drift_corrections_total").unwrap() > drift0,
        "{m3}"
    );

    // Health endpoints.
    assert!(daemon.http_get("/healthz").0.contains("200"));
    assert!(daemon.http_get("/readyz").0.contains("200"));
    assert!(daemon.http_get("/nope").0.contains("404"));
}
