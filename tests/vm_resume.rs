//! scripts/vm.sh boots the guest again after the emulator's known fault (an
//! int3 oops while the guest kernel patches its own code, under QEMU TCG)
//! and runs only the targets that had not finished, listing the re-run;
//! any other death of the guest fails. Driven through
//! tests/vm/resume_harness.sh, which replaces the boot (no QEMU, no root).
use std::process::Command;

/// The harness's output for a guest that dies in target b as `env` says.
fn drive(env: &[(&str, &str)]) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let o = Command::new("bash")
        .arg(format!("{root}/tests/vm/resume_harness.sh"))
        .arg(format!("{root}/scripts/vm.sh"))
        .envs(env.iter().copied())
        .output()
        .expect("bash");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "harness failed: {out}");
    out
}

#[test]
fn an_int3_oops_reboots_for_the_unfinished_targets_and_is_listed() {
    let out = drive(&[]);
    assert!(out.contains("boots 2 rc 0"), "{out}");
    assert!(out.contains("booting again for: b c"), "{out}");
    assert!(
        out.contains("test result: ok. (boot 1)") && out.contains("(boot 2)"),
        "{out}"
    );
    // a ran once (boot 1); b and c in the second boot.
    assert_eq!(out.matches("(boot 1)").count(), 1, "{out}");
    assert!(out.contains("RETRIED vm.sh::b"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("guest 6.12.test vm.sh::b\t")),
        "not in the host's retry log: {out}"
    );
}

#[test]
fn any_other_guest_death_fails_without_a_reboot() {
    let out = drive(&[("OOPS", "BUG: kernel NULL pointer dereference, address: 0")]);
    assert!(out.contains("boots 1 rc 1"), "{out}");
    assert!(out.contains("FAIL  b"), "{out}");
    assert!(!out.contains("RETRIED"), "{out}");
}

#[test]
fn the_reboots_are_bounded() {
    let out = drive(&[("MODE", "always")]);
    assert!(out.contains("boots 3 rc 1"), "{out}");
    assert!(out.contains("FAIL  b"), "{out}");
}
