//! The deployment recipes of examples/deploy are checked where they can be:
//! the systemd unit with `systemd-analyze verify`, the Kubernetes manifests
//! parsed and their key fields asserted (and the ConfigMap's policy
//! validated), the CI script run against an example policy and snapshots.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use yaml_serde::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy(p: &str) -> PathBuf {
    repo().join("examples/deploy").join(p)
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy("emptcp.service")).unwrap();
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYS_ADMIN CAP_NET_RAW",
        // packet_copy's AF_XDP socket (tests/watch_errors.rs: without
        // CAP_NET_RAW its rules stay unarmed).
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6 AF_XDP",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf",
        "NoNewPrivileges=yes",
        "RuntimeDirectory=emptcp",
        " watch --dir /etc/emptcp/policy.d",
    ] {
        assert!(unit.contains(want), "the unit lacks {want}");
    }
    let Ok(v) = Command::new("systemd-analyze").arg("--version").output() else {
        skip_or_fail(
            "systemd_unit_verifies",
            "systemd-analyze is not installed (apt-get install systemd)",
        );
        return;
    };
    assert!(v.status.success());
    // verify checks that ExecStart exists: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emptcp.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/emptcp", emptcp_bin())).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // systemd-analyze exits 0 on unknown keys and bad values: only its
    // messages about our file tell.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("emptcp.service"))
        .collect();
    assert!(
        o.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{err}"
    );
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn kubernetes_manifests_have_what_a_node_agent_needs() {
    let all = docs(&deploy("kubernetes/daemonset.yaml"));
    let ds = all
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    let c = &spec["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"watch"), "{args:?}");
    assert!(args.contains(&"--dir=/etc/emptcp/policy.d"), "{args:?}");
    assert!(args.iter().any(|a| a.starts_with("--metrics=")), "{args:?}");
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false, "no privileged mode");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    let add: Vec<&str> = sc["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mut sorted = add.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["BPF", "NET_ADMIN", "NET_RAW", "PERFMON", "SYS_ADMIN"],
        "only the needed capabilities"
    );
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    // bpffs from the host, mounted where emptcp pins.
    let vols = spec["volumes"].as_sequence().unwrap();
    let vol = |name: &str| vols.iter().find(|v| v["name"] == name).unwrap().clone();
    assert_eq!(vol("bpffs")["hostPath"]["path"], "/sys/fs/bpf");
    assert_eq!(vol("policy")["configMap"]["name"], "emptcp-policy");
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let mount = |name: &str| mounts.iter().find(|m| m["name"] == name).unwrap().clone();
    assert_eq!(mount("bpffs")["mountPath"], "/sys/fs/bpf");
    assert_eq!(mount("policy")["mountPath"], "/etc/emptcp/policy.d");
    assert_eq!(mount("policy")["readOnly"], true);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

    // The ConfigMap: its keys are drop-in files of a valid policy.
    let cm = docs(&deploy("kubernetes/configmap.yaml"));
    let cm = cm.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["metadata"]["name"], "emptcp-policy");
    assert_eq!(cm["metadata"]["namespace"], ds["metadata"]["namespace"]);
    let dir = tempfile::tempdir().unwrap();
    let data = cm["data"].as_mapping().unwrap();
    assert!(!data.is_empty());
    for (k, v) in data {
        let k = k.as_str().unwrap();
        assert!(
            k.ends_with(".yaml"),
            "{k}: ConfigMap keys are drop-in files"
        );
        std::fs::write(dir.path().join(k), v.as_str().unwrap()).unwrap();
    }
    let out = emptcp_ok(
        Path::new("/nonexistent"),
        None,
        &["validate", "-d", dir.path().to_str().unwrap()],
        0,
    );
    assert!(out.contains("policy is valid"), "{out}");
}

fn plan_sh(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut c = Command::new("bash");
    c.arg(deploy("ci/plan.sh"))
        .args(args)
        .env("EMPTCP", emptcp_bin());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn ci_script_validates_and_plans_against_a_snapshot() {
    let snap = deploy("ci/snapshot.example.json");
    let policy = deploy("ci/policy.d");
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("plan.md");

    // The example snapshot is of a node without emptcp: everything is new.
    let (rc, out) = plan_sh(
        &[
            policy.to_str().unwrap(),
            snap.to_str().unwrap(),
            md.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("policy is valid"), "{out}");
    assert!(out.contains("Changes:"), "{out}");
    assert!(out.contains("count-web"), "the diff names the chain: {out}");
    let comment = std::fs::read_to_string(&md).unwrap();
    assert!(comment.starts_with("### emptcp plan") && comment.contains("```diff"));
    // As a gate: changes fail the job with 2.
    let (rc, _) = plan_sh(
        &[policy.to_str().unwrap(), snap.to_str().unwrap()],
        &[("EMPTCP_CI_FAIL_ON_CHANGES", "1")],
    );
    assert_eq!(rc, 2);

    // An invalid policy: exit 1, the error located.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "version: 1\nchains:\n  - name: x\n    actions: [cuont]\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.yaml");
    let (rc, out) = plan_sh(&[bad.to_str().unwrap(), snap.to_str().unwrap()], &[]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("bad.yaml:4:15"), "{out}");
    // A file that is not a snapshot: exit 1.
    let (rc, out) = plan_sh(&[policy.to_str().unwrap(), bad.to_str().unwrap()], &[]);
    assert_eq!(rc, 1, "{out}");

    // A snapshot of a node that runs the policy: no changes (needs root).
    if !kernel_or_skip("ci_script_validates_and_plans_against_a_snapshot (in-sync part)") {
        return;
    }
    let t = tag("wci");
    let ns = Netns::new(&format!("ec-{t}"));
    must(&format!(
        "ip -n {} link add eth0 type veth peer name eth1",
        ns.name
    ));
    must(&format!(
        "ip -n {n} link set eth0 up && ip -n {n} link set eth1 up",
        n = ns.name
    ));
    let root = BpfRoot::new(&t);
    emptcp_ok(
        &root.path,
        Some(&ns.name),
        &["apply", "-d", policy.to_str().unwrap()],
        0,
    );
    let live = dir.path().join("live.json");
    let snapshot = emptcp_ok(&root.path, Some(&ns.name), &["state", "export"], 0);
    std::fs::write(&live, snapshot).unwrap();
    let (rc, out) = plan_sh(
        &[policy.to_str().unwrap(), live.to_str().unwrap()],
        &[("EMPTCP_CI_FAIL_ON_CHANGES", "1")],
    );
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("No changes"), "{out}");
}
