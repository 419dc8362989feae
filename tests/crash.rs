//! Crash safety: an apply SIGKILLed right after any step leaves a state the
//! next apply converges from, and the plan after that is empty. Covers a
//! first apply, a change that adds/removes chains and an interface, and
//! an object upgrade.
mod common;

use common::*;

fn policy(ifaces: &[&str], chains: &[(&str, u16)]) -> String {
    let names: Vec<&str> = chains.iter().map(|c| c.0).collect();
    let mut p = String::from("version: 1\nsettings: {flow_capacity: 16384}\ninterfaces:\n");
    for i in ifaces {
        p.push_str(&format!(
            "  - name: {i}\n    chains: [{}]\n",
            names.join(", ")
        ));
    }
    p.push_str("chains:\n");
    for (name, port) in chains {
        p.push_str(&format!(
            "  - name: {name}\n    match: {{local_ports: [{port}], remote: [198.51.100.0/24]}}\n    thresholds: {{remove_below: 1MiB, recover_at: 2MiB}}\n    actions: [record_flow, strip_add_addr, recover_add_addr, count]\n"
        ));
    }
    p
}

fn steps_of(root: &std::path::Path, ns: &str, f: &str, env: &[(&str, &str)]) -> usize {
    let o = emptcp_env(root, Some(ns), &["-o", "json", "plan", "-f", f], env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["steps"].as_array().unwrap().len()
}

/// For every step boundary N of the transition `from` -> `to`: set up
/// `from`, apply `to` killed after step N, then apply `to` again and check
/// that the next plan is empty.
fn kill_at_every_step(name: &str, from: Option<&str>, to: &str, env: &[(&str, &str)]) {
    let t = tag(name);
    let pair = Pair::new(&t);
    let ns = pair.b.name.as_str();
    pair.b.exec("ip link add vx0 type veth peer name vx1");
    pair.b.exec("ip link set vx0 up");
    pair.b.exec("ip link set vx1 up");
    let dir = tempfile::tempdir().unwrap();
    let to_f = policy_file(&dir, "to.yaml", &to.replace("IFACE", &pair.dev_b));
    let to_s = to_f.to_str().unwrap();
    let from_f = from.map(|p| policy_file(&dir, "from.yaml", &p.replace("IFACE", &pair.dev_b)));

    let mut n = 1;
    loop {
        let root = BpfRoot::new(&format!("{t}s{n}"));
        if let Some(f) = &from_f {
            emptcp_ok(
                &root.path,
                Some(ns),
                &["apply", "-f", f.to_str().unwrap()],
                0,
            );
        }
        let total = steps_of(&root.path, ns, to_s, env);
        assert!(total > 0);
        if n > total {
            break;
        }
        let mut envk: Vec<(&str, &str)> = env.to_vec();
        let ns_str = n.to_string();
        envk.push(("EMPTCP_TEST_KILL_AFTER_STEP", &ns_str));
        let o = emptcp_env(&root.path, Some(ns), &["apply", "-f", to_s], &envk);
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            o.status.signal(),
            Some(9),
            "apply was not killed after step {n}/{total}"
        );
        let o = emptcp_env(&root.path, Some(ns), &["apply", "-f", to_s], env);
        assert!(
            o.status.success(),
            "apply after a kill at step {n}/{total} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let o = emptcp_env(
            &root.path,
            Some(ns),
            &["plan", "--detailed-exitcode", "-f", to_s],
            env,
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "plan not empty after recovering from a kill at step {n}/{total}:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let st = status_json(&root.path, ns);
        assert!(
            st["interfaces"]
                .as_array()
                .unwrap()
                .iter()
                // XDP attached, or an egress-only interface with its TCX link.
                .all(|i| i["attached"] == true
                    || (i["chains"].as_array().is_some_and(|c| c.is_empty())
                        && i["egress"]["attached"] == true)),
            "{st}"
        );
        n += 1;
    }
}

#[test]
fn killed_first_apply_converges() {
    if !kernel_or_skip("killed_first_apply_converges") {
        return;
    }
    kill_at_every_step(
        "kfirst",
        None,
        &policy(&["IFACE", "vx0"], &[("a", 80), ("b", 443)]),
        &[],
    );
}

#[test]
fn killed_change_apply_converges() {
    if !kernel_or_skip("killed_change_apply_converges") {
        return;
    }
    let from = policy(&["IFACE", "vx0"], &[("a", 80), ("b", 443)]);
    let to = policy(&["IFACE"], &[("b", 8443), ("c", 22)]);
    kill_at_every_step("kchange", Some(&from), &to, &[]);
}

#[test]
fn killed_upgrade_converges() {
    if !kernel_or_skip("killed_upgrade_converges") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = emptcp::object::embedded().to_vec();
    let marker = b"emptcp-build-000";
    let at = bytes.windows(16).position(|w| w == marker).unwrap();
    bytes[at + 15] = b'2';
    let obj = dir.path().join("rebuilt.o");
    std::fs::write(&obj, bytes).unwrap();
    let p = policy(&["IFACE"], &[("a", 80)]);
    // `from` is applied with the embedded object; `to` with the rebuilt one.
    kill_at_every_step(
        "kupgr",
        Some(&p),
        &p,
        &[("EMPTCP_OBJECT", obj.to_str().unwrap())],
    );
}

/// Egress chains: killed while adding them (TCX attach, EGRESS_IFACES,
/// EGRESS_PROGS) and while removing them (detach, unpin): both converge.
#[test]
fn killed_egress_apply_converges() {
    if !kernel_or_skip("killed_egress_apply_converges") {
        return;
    }
    let ingress = policy(&["IFACE"], &[("a", 80)]);
    let egress = ingress.replace(
        "    chains: [a]\n",
        "    chains: [a, out]\n  - name: vx0\n    chains: [out]\n",
    ) + "  - name: out\n    hook: egress\n    match: {remote_ports: [5201]}\n    actions: [count, set_backup: {backup: true}]\n";
    kill_at_every_step("egradd", Some(&ingress), &egress, &[]);
    kill_at_every_step("egrdel", Some(&egress), &ingress, &[]);
}
