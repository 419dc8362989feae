//! Who may change the kernel, and into whose bpffs root emptcp pins
//! (reconciler/src/privilege.rs), on the real kernel:
//! - without CAP_BPF/CAP_NET_ADMIN/CAP_SYS_ADMIN (another user, or root
//!   with CAP_BPF dropped) every mutating command fails with the missing
//!   capabilities named, and nothing is created or attached;
//! - a root or layout directory writable by others, or owned by another
//!   user, is refused before any change, with path, owner, mode and fix;
//! - what apply creates is 0700 and owned by the applying user;
//! - read-only commands still read such a root, with a warning.
//!
//! Each case has its control in the same test: the same apply, privileged
//! and on a private root, attaches.
mod common;

use std::{os::unix::fs::MetadataExt as _, path::Path, process::Command};

use common::*;

const POLICY: &str = "version: 1
interfaces:
  - {name: vb0, xdp_mode: skb, chains: [count-all]}
chains:
  - {name: count-all, actions: [count]}
";

/// `emptcp --bpffs-root ROOT --netns NS ARGS` run under `prefix` (setpriv).
fn emptcp_as(prefix: &[&str], root: &Path, ns: &str, args: &[&str]) -> (i32, String) {
    let o = Command::new(prefix[0])
        .args(&prefix[1..])
        .arg(emptcp_bin())
        .arg("--bpffs-root")
        .arg(root)
        .args(["--netns", ns])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run emptcp");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Whether any XDP program is attached to `dev` in `ns`.
fn has_xdp(ns: &Netns, dev: &str) -> bool {
    ns.exec(&format!("ip link show {dev}")).contains("xdp")
}

fn mode_owner(p: &Path) -> (u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid())
}

/// The control of every case: privileged, on a private root, apply
/// attaches, and everything it made is 0700 and ours.
fn apply_attaches(pair: &Pair, root: &Path, policy: &Path) {
    let (code, err) = emptcp_as(
        &["env"],
        root,
        &pair.b.name,
        &["apply", "-f", policy.to_str().unwrap()],
    );
    assert_eq!(code, 0, "control apply failed: {err}");
    assert!(
        has_xdp(&pair.b, &pair.dev_b),
        "control apply attached nothing"
    );
    for d in [
        "",
        "maps",
        "layouts",
        "progs",
        "links",
        "links/xdp",
        "links/tc",
    ] {
        assert_eq!(
            mode_owner(&root.join(d)),
            (0o700, 0),
            "{}: not 0700 root",
            root.join(d).display()
        );
    }
}

#[test]
fn without_capabilities_nothing_is_created_or_attached() {
    if !kernel_or_skip("without_capabilities_nothing_is_created_or_attached") {
        return;
    }
    let t = tag("nocap");
    let pair = Pair::new(&t);
    let root = BpfRoot::new(&t);
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, "p.yaml", POLICY);
    let p = policy.to_str().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    // euid 0 is not enough: root without CAP_BPF is refused too.
    let root_without_bpf = ["setpriv", "--bounding-set=-bpf"];
    let commands: [&[&str]; 4] = [
        &["apply", "-f", p],
        &["destroy"],
        &["agent"],
        &["watch", "-f", p, "--state-dir", s],
    ];
    for (prefix, lacks) in [
        (&nobody[..], "lacks CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN"),
        (&root_without_bpf[..], "lacks CAP_BPF,"),
    ] {
        for args in commands {
            let (code, err) = emptcp_as(prefix, &root.path, &pair.b.name, args);
            assert_eq!(code, 1, "{prefix:?} {args:?}: {err}");
            assert!(
                err.contains(&format!("`emptcp {}` needs CAP_BPF", args[0]))
                    && err.contains(lacks)
                    && err.contains("nothing was changed"),
                "{prefix:?} {args:?}: {err}"
            );
            assert!(
                !root.path.exists(),
                "{prefix:?} {args:?} created {}",
                root.path.display()
            );
            assert!(!state.exists(), "{prefix:?} {args:?} created {s}");
            assert!(!has_xdp(&pair.b, &pair.dev_b), "{prefix:?} {args:?}");
        }
    }
    apply_attaches(&pair, &root.path, &policy);
}

/// Applies on a root prepared by `spoil`, expects a refusal that says
/// `problem` and changes nothing, then `repair`s it and applies (control).
fn refused_then_repaired(name: &str, spoil: &str, problem: &str, repair: &str) {
    let t = tag(name);
    let pair = Pair::new(&t);
    let root = BpfRoot::new(&t);
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, "p.yaml", POLICY);
    let r = root.path.display().to_string();
    must(&spoil.replace("ROOT", &r));
    let before = mode_owner(&root.path);
    let (code, err) = emptcp_as(
        &["env"],
        &root.path,
        &pair.b.name,
        &["apply", "-f", policy.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    for want in [
        &format!("refusing to use {r}"),
        problem,
        &format!("chmod 0700 {r}"),
    ] {
        assert!(err.contains(want), "the error lacks {want:?}: {err}");
    }
    assert_eq!(
        layout_entries(&root.path),
        Vec::<String>::new(),
        "something was created"
    );
    assert_eq!(mode_owner(&root.path), before, "the root was changed");
    assert!(
        !has_xdp(&pair.b, &pair.dev_b),
        "attached despite the refusal"
    );
    must(&repair.replace("ROOT", &r));
    apply_attaches(&pair, &root.path, &policy);
}

fn layout_entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_root_writable_by_others_is_refused_before_any_change() {
    if !kernel_or_skip("a_root_writable_by_others_is_refused_before_any_change") {
        return;
    }
    refused_then_repaired(
        "rw777",
        "mkdir ROOT && chmod 0777 ROOT",
        "writable by group or others (owner uid 0, mode 0777",
        "chmod 0700 ROOT",
    );
}

#[test]
fn a_root_owned_by_another_user_is_refused_before_any_change() {
    if !kernel_or_skip("a_root_owned_by_another_user_is_refused_before_any_change") {
        return;
    }
    refused_then_repaired(
        "rwown",
        "mkdir -m 0700 ROOT && chown 65534:65534 ROOT",
        "owned by another user (owner uid 65534, mode 0700",
        "chown 0:0 ROOT",
    );
}

#[test]
fn an_open_layout_directory_is_refused_and_read_only_commands_warn() {
    if !kernel_or_skip("an_open_layout_directory_is_refused_and_read_only_commands_warn") {
        return;
    }
    let t = tag("rwmap");
    let pair = Pair::new(&t);
    let root = BpfRoot::new(&t);
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, "p.yaml", POLICY);
    apply_attaches(&pair, &root.path, &policy);
    let maps = root.path.join("maps");
    must(&format!("chmod 0777 {}", maps.display()));
    // Status reads it, and says what apply would do.
    let (code, err) = emptcp_as(&["env"], &root.path, &pair.b.name, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("refusing to use {}", maps.display()))
            && err.contains("apply would refuse this root"),
        "status did not warn: {err}"
    );
    // Destroy (which would detach and unpin) is refused: still attached.
    let (code, err) = emptcp_as(&["env"], &root.path, &pair.b.name, &["destroy"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(has_xdp(&pair.b, &pair.dev_b), "destroy changed something");
    // Control: repaired, destroy detaches.
    must(&format!("chmod 0700 {}", maps.display()));
    let (code, err) = emptcp_as(&["env"], &root.path, &pair.b.name, &["destroy"]);
    assert_eq!(code, 0, "{err}");
    assert!(!has_xdp(&pair.b, &pair.dev_b), "destroy left XDP attached");
}
