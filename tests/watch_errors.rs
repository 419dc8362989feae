//! Last good state: an invalid policy (parse error, semantic error) or a
//! plan error (a foreign program) changes nothing in the kernel, is shown
//! with file/line/column in `emptcp status` and as metrics, and the next
//! valid policy converges.
mod common;
#[path = "watch_support/mod.rs"]
mod watch_support;

use std::time::Duration;

use common::*;
use watch_support::*;

#[test]
fn invalid_policy_keeps_the_datapath_then_a_fix_converges() {
    if !kernel_or_skip("invalid_policy_keeps_the_datapath_then_a_fix_converges") {
        return;
    }
    let lab = WatchLab::with_base("werr");
    let (pair, root, ns, d) = (&lab.pair, &lab.root, lab.ns(), lab.d());
    std::fs::write(d.join("20-b.yaml"), chain("b", 6000)).unwrap();
    let daemon = Daemon::start(&root.path, ns, &["-d", d.to_str().unwrap()]);
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    let good_hash = daemon.state().unwrap()["policy"]["applied_hash"].clone();
    let before = daemon.status();
    let before_entries = export(&root.path, ns)["entries"].clone();
    let link = iface(&before, &pair.dev_b).unwrap()["link_id"].clone();
    let prog = iface(&before, &pair.dev_b).unwrap()["program_id"].clone();

    // A typo in an action name (a parse error) in one drop-in.
    std::fs::write(
        d.join("20-b.yaml"),
        "version: 1\nchains:\n  - name: b\n    match: {local_ports: [6001]}\n    actions: [cuont]\n",
    )
    .unwrap();
    // The status file is written in steps: wait for the reconcile outcome
    // too, by its counter. `last_reconcile` is not the place: the link event
    // of the daemon's own attach may still be pending, and its reconcile
    // (against the last good policy: a noop) may come right after this one
    // and replace it (a clean-checkout CI run under load saw exactly that).
    let st = daemon.wait_state("the policy error", Duration::from_secs(2), |s| {
        s["policy"]["valid"] == false
            && s["counters"]["reconciles"]["policy_error"]
                .as_u64()
                .is_some_and(|n| n >= 1)
    });
    let e = &st["policy"]["error"];
    assert_eq!(e["kind"], "policy", "{e:#}");
    let detail = &e["details"][0];
    assert!(
        detail["file"].as_str().unwrap().ends_with("20-b.yaml"),
        "{e:#}"
    );
    assert_eq!(detail["line"], 5, "{e:#}");
    assert_eq!(detail["column"], 15, "{e:#}");
    assert!(detail["hint"].as_str().unwrap().contains("count"), "{e:#}");
    assert_eq!(
        st["policy"]["target_hash"], good_hash,
        "the last good policy stays the target"
    );
    assert_eq!(st["counters"]["policy_errors"], 1);

    // The datapath is exactly as it was: same link, same program, same entries.
    std::thread::sleep(Duration::from_millis(300));
    let now = daemon.status();
    assert_eq!(iface(&now, &pair.dev_b).unwrap()["link_id"], link);
    assert_eq!(iface(&now, &pair.dev_b).unwrap()["program_id"], prog);
    assert_eq!(export(&root.path, ns)["entries"], before_entries);

    // Shown by `emptcp status` (text: file:line:col) and in the metrics.
    let text = emptcp_ok(
        &root.path,
        Some(ns),
        &[
            "status",
            "--state-dir",
            daemon.state_dir.path().to_str().unwrap(),
        ],
        0,
    );
    assert!(text.contains("20-b.yaml:5:15"), "{text}");
    assert!(text.contains("INVALID"), "{text}");
    let m = daemon.scrape();
    assert_eq!(metric(&m, "emptcp_policy_valid"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "emptcp_policy_errors_total"), Some(1.0), "{m}");
    assert!(metric(&m, r#"emptcp_reconciles_total{outcome="policy_error"}"#).unwrap() >= 1.0);
    // The log names the place too.
    assert!(daemon.log_text().contains("20-b.yaml:5:15"));

    // Reverting to the last good content is valid again at once (same
    // hash as what is applied: nothing to change in the kernel).
    std::fs::write(d.join("20-b.yaml"), chain("b", 6000)).unwrap();
    let st = daemon.wait_state(
        "valid again after the revert",
        Duration::from_secs(2),
        |s| s["policy"]["valid"] == true,
    );
    assert_eq!(st["policy"]["applied_hash"], good_hash);
    assert_eq!(metric(&daemon.scrape(), "emptcp_policy_valid"), Some(1.0));
    assert_eq!(export(&root.path, ns)["entries"], before_entries);

    // A semantic error (a reference that does not resolve) in another file.
    std::fs::write(d.join("20-b.yaml"), chain("b", 6001)).unwrap();
    std::fs::write(
        d.join("30-c.yaml"),
        "version: 1\ninterfaces:\n  - name: dummy9\n    chains: [nope]\n",
    )
    .unwrap();
    let st = daemon.wait_state("the semantic error", Duration::from_secs(2), |s| {
        s["policy"]["valid"] == false
            && s["policy"]["error"]["details"][0]["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("30-c.yaml"))
    });
    assert_eq!(st["policy"]["error"]["details"][0]["line"], 4);
    assert_eq!(export(&root.path, ns)["entries"], before_entries);

    // The fix converges (chain b now on 6001), and the error is gone.
    std::fs::remove_file(d.join("30-c.yaml")).unwrap();
    daemon.wait_state("valid again", Duration::from_secs(2), |s| {
        s["policy"]["valid"] == true && s["last_reconcile"]["converged"] == true
    });
    let st = daemon.status();
    assert_eq!(iface(&st, &pair.dev_b).unwrap()["link_id"], link);
    assert!(st["daemon"]["policy"]["error"].is_null());
    let m = daemon.scrape();
    assert_eq!(metric(&m, "emptcp_policy_valid"), Some(1.0));
    assert_eq!(metric(&m, "emptcp_policy_errors_total"), Some(2.0));
    emptcp_ok(
        &root.path,
        Some(ns),
        &["plan", "--detailed-exitcode", "-d", d.to_str().unwrap()],
        0,
    );
}

#[test]
fn a_foreign_program_is_a_plan_error_until_it_is_gone() {
    if !kernel_or_skip("a_foreign_program_is_a_plan_error_until_it_is_gone") {
        return;
    }
    let t = tag("wfor");
    let pair = Pair::new(&t);
    let root = BpfRoot::new(&t);
    let ns = pair.b.name.as_str();
    must(&format!(
        "ip -n {ns} link add dum1 type veth peer name dum1p && ip -n {ns} link set dum1 up && ip -n {ns} link set dum1p up"
    ));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("10-base.yaml"), base(&pair.dev_b, "native")).unwrap();
    let daemon = Daemon::start(
        &root.path,
        ns,
        &["-d", d.to_str().unwrap(), "--drift-interval", "500ms"],
    );
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    let before_entries = export(&root.path, ns)["entries"].clone();

    // Someone else's program on dum1 (attached by netlink, not ours).
    let entry = root.path.join("progs/entry");
    must(&format!(
        "nsenter --net=/run/netns/{ns} bpftool net attach xdpgeneric pinned {} dev dum1",
        entry.display()
    ));
    // A policy that wants dum1: a plan error; nothing changes.
    std::fs::write(
        d.join("20-dum.yaml"),
        "version: 1\ninterfaces:\n  - name: dum1\n    xdp_mode: skb\n    chains: [a]\n",
    )
    .unwrap();
    let st = daemon.wait_state("the plan error", Duration::from_secs(3), |s| {
        s["last_reconcile"]["outcome"] == "plan_error"
    });
    let msg = st["last_reconcile"]["error"]["details"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        msg.contains("foreign XDP program") && msg.contains("dum1"),
        "{msg}"
    );
    assert!(!root.path.join("links/xdp/dum1").exists(), "half-applied");
    assert_eq!(export(&root.path, ns)["entries"], before_entries);
    let m = daemon.scrape();
    assert!(metric(&m, r#"emptcp_reconciles_total{outcome="plan_error"}"#).unwrap() >= 1.0);
    assert_eq!(metric(&m, "emptcp_converged"), Some(0.0));

    // The owner removes it: the next pass converges.
    must(&format!(
        "nsenter --net=/run/netns/{ns} bpftool net detach xdpgeneric dev dum1"
    ));
    daemon.wait_status(
        "attached after the foreign program left",
        Duration::from_secs(3),
        |s| attached(s, "dum1"),
    );
    daemon.wait_state("converged", Duration::from_secs(3), |s| {
        s["last_reconcile"]["converged"] == true
    });
}

/// A policy with an egress chain on `dev` and a packet_copy rule on it.
fn copy_policy(dev: &str) -> String {
    format!(
        "version: 1
interfaces:
  - {{name: {dev}, chains: [e]}}
chains:
  - name: e
    hook: egress
    match: {{remote_ports: [5201]}}
    actions: [count]
packet_copy:
  - name: revive
    interface: {dev}
    chain: e
    when: {{subflow_idle: 500ms}}
    send: {{mp_prio: {{backup: false}}}}
"
    )
}

/// packet_copy sends through an AF_XDP socket, which needs CAP_NET_RAW. A
/// daemon without it converges the policy but leaves the rule unarmed,
/// saying why and what to change (status, log), instead of arming a rule
/// whose every firing would fail. Control, in the same run: the same
/// policy under a daemon that holds CAP_NET_RAW arms the rule.
#[test]
fn a_copy_rule_the_daemon_cannot_send_for_is_unarmed_and_says_why() {
    if !kernel_or_skip("a_copy_rule_the_daemon_cannot_send_for_is_unarmed_and_says_why") {
        return;
    }
    let lab = WatchLab::with_base("wraw");
    std::fs::remove_file(lab.d().join("10-base.yaml")).unwrap();
    std::fs::write(lab.d().join("10-copy.yaml"), copy_policy(&lab.pair.dev_b)).unwrap();
    let args = ["-d", lab.d().to_str().unwrap()];
    let armed = |s: &serde_json::Value| s["packet_copy"][0]["armed"].clone();
    {
        let daemon = Daemon::start(&lab.root.path, lab.ns(), &args);
        daemon.wait_state("the rule armed (control)", Duration::from_secs(30), |s| {
            s["last_reconcile"]["converged"] == true && armed(s) == true
        });
    }
    let daemon = Daemon::start_under(
        &lab.root.path,
        lab.ns(),
        &args,
        &[],
        &["setpriv", "--bounding-set", "-net_raw"],
    );
    let st = daemon.wait_state("the rule unarmed", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true && armed(s) == false
    });
    assert_eq!(st["packet_copy"][0]["interface"], *lab.pair.dev_b, "{st:#}");
    let reason = st["packet_copy"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("CAP_NET_RAW") && reason.contains("AmbientCapabilities"),
        "{st:#}"
    );
    assert!(
        daemon.log_text().contains("packet_copy rule not armed"),
        "{}",
        daemon.log_text()
    );
}
