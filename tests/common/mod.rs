//! Shared fixtures of the real-kernel tests: the capability gate
//! (gate.rs: fail, or skip counted), namespaces and veth pairs that remove themselves, a private
//! bpffs root per test, and a runner for the `emptcp` binary.
//!
//! Every fixture cleans up in Drop, so a failing assertion (a panic) still
//! removes namespaces, pins and links.
#![allow(dead_code)] // each test binary uses a different subset

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

mod gate;
#[allow(unused_imports)] // skip_or_fail: only some binaries have non-kernel skips
pub use gate::{kernel_or_skip, skip_or_fail};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short unique tag: test name + pid + counter (namespaces, pins).
pub fn tag(name: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let short: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(6)
        .collect();
    format!("{short}{}{n}", std::process::id() % 100000)
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("sh")
}

/// Runs a shell command and panics with its output on failure.
pub fn must(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A network namespace, deleted (with its interfaces) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        must(&format!("ip netns add {name}"));
        must(&format!("ip -n {name} link set lo up"));
        Netns {
            name: name.to_string(),
        }
    }
    pub fn exec(&self, cmd: &str) -> String {
        must(&format!("ip netns exec {} {cmd}", self.name))
    }
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes we started inside are killed first (only ours live there).
        let _ = sh(&format!(
            "for p in $(ip netns pids {n} 2>/dev/null); do kill -9 $p; done; ip netns del {n}",
            n = self.name
        ));
    }
}

/// Two namespaces joined by a veth pair: `a`/`dev_a` 192.0.2.1 and
/// `b`/`dev_b` 192.0.2.2 (+ 2001:db8::1/2). XDP goes on `dev_b`.
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
    pub dev_a: String,
    pub dev_b: String,
}

impl Pair {
    pub fn new(tag: &str) -> Pair {
        let a = Netns::new(&format!("ea-{tag}"));
        let b = Netns::new(&format!("eb-{tag}"));
        let (dev_a, dev_b) = ("va0".to_string(), "vb0".to_string());
        must(&format!(
            "ip link add {dev_a} netns {} type veth peer name {dev_b} netns {}",
            a.name, b.name
        ));
        must(&format!(
            "ip -n {} addr add 192.0.2.1/24 dev {dev_a}",
            a.name
        ));
        must(&format!(
            "ip -n {} addr add 192.0.2.2/24 dev {dev_b}",
            b.name
        ));
        must(&format!("ip -n {} link set {dev_a} up", a.name));
        must(&format!("ip -n {} link set {dev_b} up", b.name));
        Pair { a, b, dev_a, dev_b }
    }
}

/// A private bpffs root; on drop every link pinned under it is detached and
/// the whole tree removed.
pub struct BpfRoot {
    pub path: PathBuf,
}

impl BpfRoot {
    pub fn new(tag: &str) -> BpfRoot {
        let path = PathBuf::from(format!("/sys/fs/bpf/emptcp-test-{tag}"));
        let _ = std::fs::remove_dir_all(&path);
        BpfRoot { path }
    }
}

impl Drop for BpfRoot {
    fn drop(&mut self) {
        // Detach every link explicitly: removing the pin alone leaves the
        // program attached while any other reference lives on (the kernel
        // closes a dead process's fds asynchronously, a few ms later).
        for dir in ["links/xdp", "links/tc"] {
            if let Ok(links) = std::fs::read_dir(self.path.join(dir)) {
                for l in links.flatten() {
                    if let Ok(fd) = emptcp::sys::obj_get(&l.path()) {
                        let _ = emptcp::sys::link_detach(&fd);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn emptcp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_emptcp")
}

/// Runs `emptcp --bpffs-root ROOT [--netns NS] ARGS`.
pub fn emptcp(root: &Path, netns: Option<&str>, args: &[&str]) -> Output {
    emptcp_env(root, netns, args, &[])
}

pub fn emptcp_env(root: &Path, netns: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(emptcp_bin());
    c.arg("--bpffs-root").arg(root);
    if let Some(ns) = netns {
        c.arg("--netns").arg(ns);
    }
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.env("NO_COLOR", "1");
    c.output().expect("run emptcp")
}

/// Like `emptcp` but asserts the exit code and returns stdout.
pub fn emptcp_ok(root: &Path, netns: Option<&str>, args: &[&str], code: i32) -> String {
    let o = emptcp(root, netns, args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(code),
        "emptcp {args:?} exited {:?}\nstdout:\n{out}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

pub fn status_json(root: &Path, netns: &str) -> serde_json::Value {
    let out = emptcp_ok(root, Some(netns), &["-o", "json", "status"], 0);
    serde_json::from_str(&out).expect("status json")
}

/// Writes a policy file into a temp dir and returns its path.
pub fn policy_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `f` with the calling thread inside the network namespace `ns`
/// (setns on this thread only; used for in-test traffic).
pub fn in_netns<T>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T
where
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(ns.path()).expect("open netns");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}
