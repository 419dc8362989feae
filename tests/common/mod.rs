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
pub use gate::{kernel_or_skip, record_retry, record_stand_in, skip_or_fail};

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

/// How many times slower than the development machine this one runs, for
/// the time limits of tests whose limit is a product promise ("converged
/// within 1 s"): 1 unless EMPTCP_TIME_SCALE says otherwise. `scripts/vm.sh`
/// sets it for its guest, whose CPU QEMU emulates in software (TCG), where
/// loading and verifying the eBPF object alone takes seconds.
pub fn time_scale() -> u32 {
    std::env::var("EMPTCP_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// `d` on this machine: [`time_scale`] times `d`.
pub fn scaled(d: std::time::Duration) -> std::time::Duration {
    d * time_scale()
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

/// `emptcp apply -f FILE` in `netns`, which must exit 0; returns stdout.
pub fn apply_ok(root: &Path, netns: &str, file: &str) -> String {
    emptcp_ok(root, Some(netns), &["apply", "-f", file], 0)
}

/// `emptcp plan --detailed-exitcode -f FILE` in `netns` exits `code`:
/// 0 when the kernel already holds the policy, 2 when changes are pending;
/// returns the plan it printed.
pub fn expect_plan_exit(root: &Path, netns: &str, file: &str, code: i32) -> String {
    emptcp_ok(
        root,
        Some(netns),
        &["plan", "--detailed-exitcode", "-f", file],
        code,
    )
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
    in_netns_at(&ns.path(), f)
}

/// [`in_netns`] for a namespace known by its bind mount (`/run/netns/NAME`
/// of a testbed's namespaces).
pub fn in_netns_at<T>(path: &Path, f: impl FnOnce() -> T + Send) -> T
where
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(path).expect("open netns");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// An object like the embedded one whose build id ends in `build` (a
/// "rebuilt" object: another sha256, the same code), written to `dir`.
pub fn rebuilt_object(dir: &tempfile::TempDir, build: u8) -> PathBuf {
    let mut bytes = emptcp::object::embedded().to_vec();
    let marker = b"emptcp-build-000";
    let at = bytes
        .windows(16)
        .position(|w| w == marker)
        .expect("build id in the object");
    bytes[at + 15] = build;
    let p = dir.path().join(format!("rebuilt-{}.o", build as char));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn json_of(cmd: &str) -> serde_json::Value {
    serde_json::from_str(&must(cmd)).unwrap_or_else(|e| panic!("`{cmd}`: {e}"))
}

/// The last byte of the build id in a program's own `.rodata` (read with
/// bpftool, independently of emptcp's observe), `None` without one.
pub fn program_build(prog_id: u64) -> Option<u8> {
    let info = json_of(&format!("bpftool prog show id {prog_id} -j"));
    for m in info["map_ids"].as_array()? {
        let map = json_of(&format!("bpftool map show id {m} -j"));
        if map["name"] != ".rodata" {
            continue;
        }
        let dump = json_of(&format!("bpftool map dump id {m} -j"));
        let bytes: Vec<u8> = dump[0]["value"]
            .as_array()?
            .iter()
            .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
            .collect();
        let marker = b"emptcp-build-00";
        let at = bytes.windows(15).position(|w| w == marker)?;
        return bytes.get(at + 15).copied();
    }
    None
}

/// Every program that runs under `root`: behind each pinned link and in
/// each tail-call slot, with the build id it carries.
pub fn running_builds(root: &Path) -> Vec<(String, Option<u8>)> {
    let mut out = Vec::new();
    for hook in ["xdp", "tc"] {
        let dir = root.join("links").join(hook);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let l = json_of(&format!(
                "bpftool link show pinned {} -j",
                e.path().display()
            ));
            let id = l["prog_id"].as_u64().unwrap();
            out.push((
                format!("links/{hook}/{}", e.file_name().to_string_lossy()),
                program_build(id),
            ));
        }
    }
    for map in ["PROGS", "EGRESS_PROGS"] {
        let p = root.join("maps").join(map);
        if !p.exists() {
            continue;
        }
        let dump = json_of(&format!("bpftool map dump pinned {} -j", p.display()));
        for e in dump.as_array().unwrap() {
            let b = |v: &serde_json::Value| -> Vec<u8> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|b| {
                        u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16)
                            .unwrap()
                    })
                    .collect()
            };
            let k = b(&e["key"]);
            let v = b(&e["value"]);
            let id = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
            let slot = u32::from_ne_bytes([k[0], k[1], k[2], k[3]]);
            out.push((format!("{map}[{slot}]"), program_build(id as u64)));
        }
    }
    out
}
