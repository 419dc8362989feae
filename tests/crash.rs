//! Crash safety: an apply SIGKILLed right after any step leaves a state the
//! next apply converges from, and the plan after that is empty. Covers a
//! first apply, a change that adds/removes chains and an interface, and
//! object upgrades killed at every step followed by a roll-forward or a
//! rollback, where every running program (each link, each tail-call slot)
//! must then carry the applied object's build id, read from the program.
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

type Env<'a> = &'a [(&'a str, &'a str)];

/// A transition to kill at every step: `from` is applied first (policy and
/// environment, e.g. EMPTCP_OBJECT), then `to` is killed after step N, then
/// `then` is applied (the same as `to` for a roll-forward, `from`'s object
/// for a rollback). Afterwards every running program must carry the build
/// id `then_build` (read from the programs), the plan must be empty and
/// status must agree.
struct Transition<'a> {
    from: Option<(&'a str, Env<'a>)>,
    to: (&'a str, Env<'a>),
    then: (&'a str, Env<'a>),
    then_build: u8,
}

/// For every step boundary N of the transition `from` -> `to`: set up
/// `from`, apply `to` killed after step N, then apply `to` again and check
/// that the next plan is empty.
fn kill_at_every_step(name: &str, from: Option<&str>, to: &str, env: Env<'_>) {
    kill_and_recover(
        name,
        Transition {
            from: from.map(|f| (f, &[][..])),
            to: (to, env),
            then: (to, env),
            then_build: b'0',
        },
    );
}

fn kill_and_recover(name: &str, t: Transition<'_>) {
    let tg = tag(name);
    let pair = Pair::new(&tg);
    let ns = pair.b.name.as_str();
    pair.b.exec("ip link add vx0 type veth peer name vx1");
    pair.b.exec("ip link set vx0 up");
    pair.b.exec("ip link set vx1 up");
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str, p: &str| policy_file(&dir, n, &p.replace("IFACE", &pair.dev_b));
    let to_f = file("to.yaml", t.to.0);
    let to_s = to_f.to_str().unwrap();
    let then_f = file("then.yaml", t.then.0);
    let then_s = then_f.to_str().unwrap();
    let from_f = t.from.map(|(p, env)| (file("from.yaml", p), env));

    let mut n = 1;
    loop {
        let root = BpfRoot::new(&format!("{tg}s{n}"));
        if let Some((f, env)) = &from_f {
            let o = emptcp_env(
                &root.path,
                Some(ns),
                &["apply", "-f", f.to_str().unwrap()],
                env,
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let total = steps_of(&root.path, ns, to_s, t.to.1);
        assert!(total > 0);
        if n > total {
            break;
        }
        let mut envk: Vec<(&str, &str)> = t.to.1.to_vec();
        let ns_str = n.to_string();
        envk.push(("EMPTCP_TEST_KILL_AFTER_STEP", &ns_str));
        let o = emptcp_env(&root.path, Some(ns), &["apply", "-f", to_s], &envk);
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            o.status.signal(),
            Some(9),
            "apply was not killed after step {n}/{total}"
        );
        let o = emptcp_env(&root.path, Some(ns), &["apply", "-f", then_s], t.then.1);
        assert!(
            o.status.success(),
            "apply after a kill at step {n}/{total} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let o = emptcp_env(
            &root.path,
            Some(ns),
            &["plan", "--detailed-exitcode", "-f", then_s],
            t.then.1,
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "plan not empty after recovering from a kill at step {n}/{total}:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        // What runs, from the programs themselves: every link and slot.
        let running = running_builds(&root.path);
        assert!(!running.is_empty());
        let wrong: Vec<_> = running
            .iter()
            .filter(|(_, b)| *b != Some(t.then_build))
            .collect();
        assert!(
            wrong.is_empty(),
            "after a kill at step {n}/{total}, not build {}: {wrong:?}",
            t.then_build as char
        );
        let st = status_json(&root.path, ns);
        assert_eq!(st["consistent"], true, "{st}");
        assert!(
            st["interfaces"]
                .as_array()
                .unwrap()
                .iter()
                // XDP attached, or an egress-only interface with its TCX link.
                .all(|i| (i["attached"] == true
                    && i["runs"]["is_applied"] == true
                    && i["runs"]["slots_agree"] == true)
                    || (i["chains"].as_array().is_some_and(|c| c.is_empty())
                        && i["egress"]["attached"] == true
                        && i["egress"]["runs"]["is_applied"] == true)),
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

/// The policy of the upgrade tests: one ingress chain and an egress chain,
/// so links and slots of both hooks are checked.
fn upgrade_policy() -> String {
    policy(&["IFACE"], &[("a", 80)]).replace("    chains: [a]\n", "    chains: [a, out]\n")
        + "  - name: out\n    hook: egress\n    match: {remote_ports: [5201]}\n    actions: [count]\n"
}

#[test]
fn killed_upgrade_converges() {
    if !kernel_or_skip("killed_upgrade_converges") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let b = rebuilt_object(&dir, b'2');
    let env_b = [("EMPTCP_OBJECT", b.to_str().unwrap())];
    let p = upgrade_policy();
    // A -> B killed, then B again (roll-forward).
    kill_and_recover(
        "kupgr",
        Transition {
            from: Some((&p, &[])),
            to: (&p, &env_b),
            then: (&p, &env_b),
            then_build: b'2',
        },
    );
}

/// The interrupted upgrade followed by a rollback: A -> B killed after
/// every step, then A applied again. The kernel must run A everywhere,
/// although B's load may have pinned its programs under A's names.
#[test]
fn killed_upgrade_then_rollback_runs_the_old_object() {
    if !kernel_or_skip("killed_upgrade_then_rollback_runs_the_old_object") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let b = rebuilt_object(&dir, b'2');
    let env_b = [("EMPTCP_OBJECT", b.to_str().unwrap())];
    let p = upgrade_policy();
    kill_and_recover(
        "krollb",
        Transition {
            from: Some((&p, &[])),
            to: (&p, &env_b),
            then: (&p, &[]),
            then_build: b'0',
        },
    );
}

/// The same the other way round (B -> A killed, then B), with two rebuilt
/// objects so neither is the embedded one.
#[test]
fn killed_downgrade_then_rollback_runs_the_newer_object() {
    if !kernel_or_skip("killed_downgrade_then_rollback_runs_the_newer_object") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = rebuilt_object(&dir, b'3');
    let b = rebuilt_object(&dir, b'4');
    let env_a = [("EMPTCP_OBJECT", a.to_str().unwrap())];
    let env_b = [("EMPTCP_OBJECT", b.to_str().unwrap())];
    let p = upgrade_policy();
    kill_and_recover(
        "kdowng",
        Transition {
            from: Some((&p, &env_b)),
            to: (&p, &env_a),
            then: (&p, &env_b),
            then_build: b'4',
        },
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
