//! `emptcp watch` follows its policy source: a new drop-in, an editor's
//! rename-over save, a Kubernetes ConfigMap `..data` swap (directory and
//! single-file mode), and a removed file are each converged within a second.
//! Real kernel: own namespaces, veth pair, bpffs root and temp dirs.
mod common;
#[path = "watch_support/mod.rs"]
mod watch_support;

use std::{os::unix::fs::symlink, path::Path, time::Duration};

use common::*;
use watch_support::*;

/// The promise: a change converged within a second (scaled where the
/// machine is emulated, `common::time_scale`). Every daemon here has a drift
/// interval of 30 s, so only the policy watch can meet it.
fn limit() -> Duration {
    scaled(Duration::from_secs(1))
}

fn ports_of(root: &Path, ns: &str, chain: &str) -> Vec<u64> {
    let e = export(root, ns);
    let id = e["entries"]["chains"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, c)| c["name"] == chain)
        .map(|(id, _)| id.parse::<u64>().unwrap());
    let Some(id) = id else { return vec![] };
    e["entries"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["chain"] == id)
        .map(|p| p["port"].as_u64().unwrap())
        .collect()
}

#[test]
fn dropins_are_followed_new_edit_and_removal() {
    if !kernel_or_skip("dropins_are_followed_new_edit_and_removal") {
        return;
    }
    let t = tag("wsrc");
    let pair = Pair::new(&t);
    let root = BpfRoot::new(&t);
    let ns = pair.b.name.as_str();
    must(&format!(
        "ip -n {ns} link add dum0 type veth peer name dum0p && ip -n {ns} link set dum0 up && ip -n {ns} link set dum0p up"
    ));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("10-base.yaml"), base(&pair.dev_b, "native")).unwrap();
    let daemon = Daemon::start(
        &root.path,
        ns,
        &["-d", d.to_str().unwrap(), "--drift-interval", "30s"],
    );
    let st = daemon.wait_state("converged at start", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    assert_eq!(st["last_reconcile"]["trigger"], "startup");
    assert!(attached(&daemon.status(), &pair.dev_b));

    // A new drop-in: converged (its chain is live) within 1 s.
    std::fs::write(d.join("20-b.yaml"), chain("b", 6000)).unwrap();
    let took = daemon.wait_status("new drop-in", limit(), |s| {
        chain_names(s).contains(&"b".to_string())
    });
    eprintln!("new drop-in converged in {took:?}");
    assert_eq!(ports_of(&root.path, ns, "b"), [6000]);

    // An editor's save: a temp file renamed over the drop-in.
    rename_over(d, "20-b.yaml", &chain("b", 6001));
    let took = daemon.wait_status("rename-over edit", limit(), |_| {
        ports_of(&root.path, ns, "b") == [6001]
    });
    eprintln!("rename-over converged in {took:?}");

    // A drop-in that adds an interface; removing the file detaches it.
    std::fs::write(
        d.join("30-dum.yaml"),
        "version: 1\ninterfaces:\n  - name: dum0\n    xdp_mode: skb\n    chains: [b]\n",
    )
    .unwrap();
    daemon.wait_status("interface drop-in", limit(), |s| attached(s, "dum0"));
    std::fs::remove_file(d.join("30-dum.yaml")).unwrap();
    let took = daemon.wait_status("interface removed with its file", limit(), |s| {
        iface(s, "dum0").is_none()
    });
    eprintln!("file removal converged in {took:?}");
    assert!(
        !pair.b.exec("ip -d link show dev dum0").contains("prog/xdp"),
        "dum0 still has a program"
    );
    // Removing the chain's file removes the chain.
    std::fs::remove_file(d.join("20-b.yaml")).unwrap();
    daemon.wait_status("chain removed with its file", limit(), |s| {
        chain_names(s) == ["a"]
    });
    // Editor leftovers and non-yaml files change nothing (no reconcile).
    daemon.wait_state("settled", Duration::from_secs(2), |s| {
        s["policy"]["applied_hash"] == s["policy"]["read_hash"]
            && s["last_reconcile"]["converged"] == true
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = daemon.state().unwrap()["counters"].clone();
    std::fs::write(d.join(".10-base.yaml.swp"), "junk").unwrap();
    std::fs::write(d.join("notes.txt"), "junk").unwrap();
    std::fs::write(d.join("10-base.yaml~"), "junk").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(daemon.state().unwrap()["counters"], before);
    // Every change above was a policy change, never drift.
    assert_eq!(before["drift_corrections"], 0);
    assert_eq!(before["policy_errors"], 0);
    emptcp_ok(
        &root.path,
        Some(ns),
        &["plan", "--detailed-exitcode", "-d", d.to_str().unwrap()],
        0,
    );
}

/// The layout the kubelet makes for a ConfigMap volume: keys are symlinks
/// to `..data/KEY`, `..data` a symlink to a timestamped directory that is
/// replaced by an atomic rename of a new symlink.
fn configmap_swap(dir: &Path, stamp: &str, files: &[(&str, String)]) {
    let real = dir.join(format!("..{stamp}"));
    std::fs::create_dir(&real).unwrap();
    for (k, v) in files {
        std::fs::write(real.join(k), v).unwrap();
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    symlink(format!("..{stamp}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (k, _) in files {
        let link = dir.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(k), &link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

#[test]
fn configmap_data_swap_is_followed_in_dir_and_file_mode() {
    if !kernel_or_skip("configmap_data_swap_is_followed_in_dir_and_file_mode") {
        return;
    }
    let t = tag("wcm");
    let pair = Pair::new(&t);
    let ns = pair.b.name.as_str();
    let dev = pair.dev_b.clone();

    // Directory mode: the ConfigMap is the drop-in directory.
    let root = BpfRoot::new(&t);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configmap_swap(
        d,
        "2024_05_01_12_00_00.000000001",
        &[
            ("10-base.yaml", base(&dev, "native")),
            ("20-b.yaml", chain("b", 7000)),
        ],
    );
    {
        let daemon = Daemon::start(&root.path, ns, &["-d", d.to_str().unwrap()]);
        daemon.wait_state("converged", Duration::from_secs(30), |s| {
            s["last_reconcile"]["converged"] == true
        });
        assert_eq!(ports_of(&root.path, ns, "b"), [7000]);
        configmap_swap(
            d,
            "2024_05_01_12_05_00.000000002",
            &[
                ("10-base.yaml", base(&dev, "native")),
                ("20-b.yaml", chain("b", 7001)),
            ],
        );
        let took = daemon.wait_status("..data swap (dir)", limit(), |_| {
            ports_of(&root.path, ns, "b") == [7001]
        });
        eprintln!("..data swap converged in {took:?}");
        // A key removed from the ConfigMap: its symlink dangles, then goes.
        configmap_swap(
            d,
            "2024_05_01_12_10_00.000000003",
            &[("10-base.yaml", base(&dev, "native"))],
        );
        std::fs::remove_file(d.join("20-b.yaml")).unwrap();
        daemon.wait_status("key removed", limit(), |s| chain_names(s) == ["a"]);
        assert_eq!(daemon.state().unwrap()["counters"]["policy_errors"], 0);
    }
    emptcp_ok(&root.path, Some(ns), &["destroy"], 0);

    // File mode: -f names a ConfigMap key (a symlink through ..data).
    let root = BpfRoot::new(&format!("{t}f"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let one = |port: u16| {
        format!(
            "{}  - name: b\n    match: {{local_ports: [{port}]}}\n    actions: [count]\n",
            base(&dev, "native")
        )
    };
    configmap_swap(
        d,
        "2024_05_01_13_00_00.000000001",
        &[("policy.yaml", one(7100))],
    );
    let f = d.join("policy.yaml");
    let daemon = Daemon::start(&root.path, ns, &["-f", f.to_str().unwrap()]);
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    assert_eq!(ports_of(&root.path, ns, "b"), [7100]);
    configmap_swap(
        d,
        "2024_05_01_13_05_00.000000002",
        &[("policy.yaml", one(7101))],
    );
    let took = daemon.wait_status("..data swap (file)", limit(), |_| {
        ports_of(&root.path, ns, "b") == [7101]
    });
    eprintln!("..data swap (file mode) converged in {took:?}");
    // And an editor's rename-over of a plain file in file mode.
    let plain = tempfile::tempdir().unwrap();
    drop(daemon);
    let root2 = BpfRoot::new(&format!("{t}g"));
    std::fs::write(plain.path().join("p.yaml"), one(7200)).unwrap();
    let f = plain.path().join("p.yaml");
    emptcp_ok(&root.path, Some(ns), &["destroy"], 0);
    let daemon = Daemon::start(&root2.path, ns, &["-f", f.to_str().unwrap()]);
    daemon.wait_state("converged", Duration::from_secs(30), |s| {
        s["last_reconcile"]["converged"] == true
    });
    rename_over(plain.path(), "p.yaml", &one(7201));
    daemon.wait_status("rename-over (file)", limit(), |_| {
        ports_of(&root2.path, ns, "b") == [7201]
    });
}
