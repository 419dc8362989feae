//! Fixtures of the `emptcp watch` tests: a daemon process that is killed
//! (SIGKILL) in Drop, even when the test panics, with its own status
//! directory, a metrics listener on an ephemeral port, and its log kept for
//! the failure message.
#![allow(dead_code)] // each test binary uses a different subset

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::common::{BpfRoot, Pair, emptcp, emptcp_bin, tag};

pub struct Daemon {
    pub child: Option<Child>,
    pub root: PathBuf,
    pub ns: String,
    pub state_dir: tempfile::TempDir,
    pub log: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A command the daemon runs under (`setpriv ...`, which then execs
    /// it: the same pid), empty for none.
    pub wrapper: Vec<String>,
}

impl Daemon {
    /// Starts `emptcp --bpffs-root ROOT --netns NS watch ARGS --metrics
    /// 127.0.0.1:0 --state-dir TMP` and waits until its first converge
    /// attempt is recorded in the status file.
    pub fn start(root: &Path, ns: &str, args: &[&str]) -> Daemon {
        Daemon::start_env(root, ns, args, &[])
    }

    pub fn start_env(root: &Path, ns: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_under(root, ns, args, env, &[])
    }

    /// [`Daemon::start_env`] with the daemon run by `wrapper`, a command
    /// that execs its arguments (e.g. `setpriv --bounding-set -net_raw`).
    pub fn start_under(
        root: &Path,
        ns: &str,
        args: &[&str],
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Daemon {
        let state_dir = tempfile::tempdir().unwrap();
        let log = state_dir.path().join("daemon.log");
        let mut d = Daemon {
            child: None,
            root: root.to_path_buf(),
            ns: ns.to_string(),
            state_dir,
            log,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d.wait_ready();
        d
    }

    /// (Re)starts the process with the same arguments and status directory.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(emptcp_bin());
                c
            }
            None => Command::new(emptcp_bin()),
        };
        c.arg("--bpffs-root")
            .arg(&self.root)
            .arg("--netns")
            .arg(&self.ns)
            .arg("watch")
            .args(&self.args)
            .args(["--metrics", "127.0.0.1:0", "--state-dir"])
            .arg(self.state_dir.path())
            .env("NO_COLOR", "1")
            .env("EMPTCP_LOG", "info,emptcp=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.child = Some(c.spawn().expect("start emptcp watch"));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status_file(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.state_dir.path())
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("watch-") && n.ends_with(".json"))
            })
    }

    /// The daemon's status file (None before the first write).
    pub fn state(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.status_file()?).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Waits for `pred` on the status file; panics with the log on timeout.
    pub fn wait_state(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.state()
                && s["pid"] == self.pid()
                && pred(&s)
            {
                return s;
            }
            if t0.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nstate: {:#}\nlog:\n{}",
                    self.state().unwrap_or_default(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_ready(&self) -> Value {
        self.wait_state("the first reconcile", Duration::from_secs(60), |s| {
            !s["last_reconcile"].is_null()
        })
    }

    /// `emptcp status -o json` with this daemon's status directory.
    pub fn status(&self) -> Value {
        let o = emptcp(
            &self.root,
            Some(&self.ns),
            &[
                "-o",
                "json",
                "status",
                "--state-dir",
                self.state_dir.path().to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Polls `emptcp status -o json` until `pred` holds; returns the time
    /// it took.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            let s = self.status();
            if pred(&s) {
                return t0.elapsed();
            }
            if t0.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nstatus: {s:#}\nlog:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics_addr(&self) -> String {
        self.state().expect("status file")["metrics_addr"]
            .as_str()
            .expect("metrics_addr")
            .to_string()
    }

    /// GET `path` from the metrics listener: (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(self.metrics_addr()).expect("connect metrics");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        )
    }

    pub fn scrape(&self) -> String {
        let (status, body) = self.http_get("/metrics");
        assert!(status.contains("200"), "{status}");
        body
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    /// Waits for the process to exit (panics after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let t0 = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(t0.elapsed() < timeout, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
            wait_for_the_lock(&self.root);
        }
        if std::thread::panicking() {
            eprintln!("--- emptcp watch log ---\n{}", self.log_text());
        }
    }
}

/// Waits (at most 10 s) until nothing holds the apply lock of `root` (an
/// flock on the directory). The daemon's death does not free it at once
/// when it was killed inside a reconcile: a child it had just forked (the
/// `ip` that observe runs), still between fork and exec on a loaded
/// machine, holds a copy of the locked file until its exec closes it. A
/// clean-checkout CI run met that window: the `destroy` right after the
/// drop failed with "another emptcp apply holds the lock". (systemd and
/// container runtimes stop the daemon's whole cgroup, children included.)
fn wait_for_the_lock(root: &Path) {
    let Ok(dir) = std::fs::File::open(root) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if dir.try_lock().is_ok() {
            let _ = dir.unlock();
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "the apply lock of {} is still held 10 s after the daemon died",
        root.display()
    );
}

/// The value of one series in Prometheus text (`name{labels}` exactly as
/// rendered, or a bare name).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok()).flatten()
    })
}

/// Sum of every series of a metric (all label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            let base = k.split('{').next()?;
            (base == name).then(|| v.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Writes `text` to `dir/name` the way editors save: a temp file in the
/// same directory renamed over the target.
pub fn rename_over(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.swp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// The chain names in `emptcp status -o json`.
pub fn chain_names(status: &Value) -> Vec<String> {
    status["chains"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The interface entry of `name` in `emptcp status -o json`.
pub fn iface<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == name)
}

pub fn attached(status: &Value, name: &str) -> bool {
    iface(status, name).is_some_and(|i| i["attached"] == true)
}

/// `emptcp state export` of the root, as JSON.
pub fn export(root: &Path, ns: &str) -> Value {
    let o = emptcp(root, Some(ns), &["state", "export"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A count-only chain `name` on local port `port`.
pub fn chain(name: &str, port: u16) -> String {
    format!(
        "version: 1\nchains:\n  - name: {name}\n    match: {{local_ports: [{port}]}}\n    actions: [count]\n"
    )
}

/// An interface `dev` with `chains`, plus chain `a` on port 5201.
pub fn base(dev: &str, mode: &str) -> String {
    format!(
        "version: 1\ninterfaces:\n  - name: {dev}\n    xdp_mode: {mode}\n    chains: [a]\nchains:\n  - name: a\n    match: {{local_ports: [5201]}}\n    actions: [count]\n"
    )
}

/// Whether the eBPF object this build (or EMPTCP_OBJECT) carries has all
/// these programs.
pub fn object_has(programs: &[&str]) -> bool {
    let o = emptcp::object::Object::load().expect("eBPF object");
    programs.iter().all(|p| o.programs.iter().any(|q| q == p))
}

/// What most watch tests start from: a veth pair whose B side (in its own
/// namespace) the daemon manages, a bpffs root, and a drop-in directory
/// holding `10-base.yaml` (the B interface, native XDP, no chain). Fields
/// drop in order: the directory, the root, then the namespaces.
pub struct WatchLab {
    pub dir: tempfile::TempDir,
    pub root: BpfRoot,
    pub pair: Pair,
}

impl WatchLab {
    pub fn with_base(prefix: &str) -> WatchLab {
        let t = tag(prefix);
        let pair = Pair::new(&t);
        let root = BpfRoot::new(&t);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-base.yaml"), base(&pair.dev_b, "native")).unwrap();
        WatchLab { dir, root, pair }
    }

    /// The namespace the daemon runs in.
    pub fn ns(&self) -> &str {
        &self.pair.b.name
    }

    /// The drop-in directory.
    pub fn d(&self) -> &Path {
        self.dir.path()
    }
}
