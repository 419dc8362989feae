//! `emptcp-bench`: the numbers of docs/benchmarks.md, measured in one run on
//! this machine (root, real kernel, own namespace and bpffs root).
//!
//! * reconcile: no-op observe + plan with 16 interfaces and 64 chains, and
//!   apply-to-converged of the quickstart policy (cold and warm).
//!
//! * watch (`--watch`): the `emptcp watch` daemon: file change -> converged
//!   latency (p50/p99 of 100 changes, debounce included) and idle CPU and
//!   RSS with a 64-chain policy.
//!
//! Prints a markdown table; `scripts/bench.sh` runs it (`scripts/bench.sh
//! --watch` for the daemon's numbers).
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use emptcp::{
    apply::{self, Applier},
    desired::Desired,
    layout::Layout,
    netns,
    object::Object,
    observe,
    plan::{self, PlanOptions},
    policy,
};

fn sh(cmd: &str) -> anyhow::Result<()> {
    let st = Command::new("sh").arg("-c").arg(cmd).status()?;
    if !st.success() {
        bail!("`{cmd}` failed");
    }
    Ok(())
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

struct Bed {
    ns: String,
    root: PathBuf,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = sh(&format!("ip netns del {} 2>/dev/null", self.ns));
    }
}

impl Bed {
    /// A namespace `name` with 16 interfaces (8 veth pairs bench0..bench15)
    /// and a bpffs root of the same name; both removed on drop.
    fn sixteen_veths(name: &str) -> anyhow::Result<Bed> {
        let bed = Bed {
            ns: name.to_string(),
            root: PathBuf::from(format!("/sys/fs/bpf/{name}")),
        };
        sh(&format!("ip netns add {}", bed.ns))?;
        for i in 0..8 {
            sh(&format!(
                "ip -n {ns} link add bench{a} type veth peer name bench{b} && ip -n {ns} link set bench{a} up && ip -n {ns} link set bench{b} up",
                ns = bed.ns,
                a = 2 * i,
                b = 2 * i + 1
            ))?;
        }
        Ok(bed)
    }
}

fn big_policy(ifaces: usize, chains: usize) -> String {
    let mut p = String::from("version: 1\ninterfaces:\n");
    for i in 0..ifaces {
        let list: Vec<String> = (0..8)
            .map(|k| format!("c{}", (i * 4 + k) % chains))
            .collect();
        p.push_str(&format!(
            "  - name: bench{i}\n    xdp_mode: skb\n    chains: [{}]\n",
            list.join(", ")
        ));
    }
    p.push_str("chains:\n");
    for c in 0..chains {
        p.push_str(&format!(
            "  - name: c{c}\n    match:\n      remote: [203.0.113.{c}/32, \"2001:db8:{c:x}::/48\"]\n      local_ports: [{}, {}]\n    actions: [count]\n",
            1000 + c,
            2000 + c
        ));
    }
    p
}

fn converge(layout: &Layout, object: &Object, p: &policy::Policy) -> anyhow::Result<usize> {
    let _lock = apply::lock(&layout.root)?;
    let d = Desired::new(p, object).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let o = observe::observe(layout)?;
    let plan = plan::plan(&d, &o, PlanOptions::default()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(Applier::new(layout, object).apply(&plan)?)
}

fn main() -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("emptcp-bench needs root (namespaces, bpffs, XDP)");
    }
    if std::env::args().any(|a| a == "--watch") {
        return bench_watch();
    }
    let id = std::process::id();
    let bed = Bed::sixteen_veths(&format!("emptcp-bench{id}"))?;
    for (n, peer) in [("cli0", "srv0"), ("cli1", "srv1")] {
        sh(&format!(
            "ip -n {ns} link add {n} type veth peer name {peer} && ip -n {ns} link set {n} up && ip -n {ns} link set {peer} up",
            ns = bed.ns
        ))?;
    }
    netns::enter(&bed.ns)?;
    let object = Object::load()?;
    let layout = Layout::new(&bed.root);

    // --- no-op reconcile, 16 interfaces x 64 chains ---------------------------
    let text = big_policy(16, 64);
    let big = policy::load_str("bench.yaml", &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    let steps = converge(&layout, &object, &big)?;
    let cold = t.elapsed();
    let d = Desired::new(&big, &object).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut samples = Vec::new();
    let mut observe_only = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        let o = observe::observe(&layout)?;
        observe_only.push(t.elapsed());
        let p = plan::plan(&d, &o, PlanOptions::default()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        samples.push(t.elapsed());
        if !p.is_empty() {
            bail!("no-op plan is not empty: {:?}", p.steps);
        }
    }
    let _ = std::fs::remove_dir_all(&bed.root);

    // --- quickstart apply to converged ------------------------------------------
    let qs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/quickstart.yaml");
    let quick = policy::load_file(&qs).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut first = None;
    let mut warm = Vec::new();
    for i in 0..11 {
        let _ = std::fs::remove_dir_all(&bed.root);
        let t = Instant::now();
        converge(&layout, &object, &quick).context("quickstart apply")?;
        let e = t.elapsed();
        if i == 0 {
            first = Some(e);
        } else {
            warm.push(e);
        }
    }
    let first = first.unwrap_or_default();
    println!("| measurement | result | target |");
    println!("|---|---|---|");
    println!(
        "| no-op reconcile (observe + plan), 16 interfaces, 64 chains, p50 / p99 of 100 | {:.2} ms / {:.2} ms | < 20 ms |",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99)
    );
    println!(
        "| of which observe (bpffs + maps + `ip -json link`), p50 | {:.2} ms | |",
        percentile(&mut observe_only, 0.5)
    );
    println!(
        "| first apply of that policy ({steps} steps) | {:.1} ms | |",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "| quickstart apply -> converged, first in this process / warm p50 of 10 | {:.1} ms / {:.1} ms | < 300 ms warm |",
        first.as_secs_f64() * 1e3,
        percentile(&mut warm, 0.5)
    );
    Ok(())
}

/// CPU time (ns) of every thread of `pid` (schedstat: ns precision).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let st = std::fs::read_to_string(t?.path().join("schedstat")).unwrap_or_default();
        total += st
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    st.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

struct Watcher {
    child: std::process::Child,
    state_dir: PathBuf,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

impl Watcher {
    fn state(&self) -> Option<serde_json::Value> {
        let f = std::fs::read_dir(&self.state_dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))?;
        serde_json::from_str(&std::fs::read_to_string(f).ok()?).ok()
    }
}

/// `emptcp watch` numbers: change -> converged latency, idle CPU and RSS.
fn bench_watch() -> anyhow::Result<()> {
    let id = std::process::id();
    let bed = Bed::sixteen_veths(&format!("emptcp-benchw{id}"))?;
    let work = std::env::temp_dir().join(format!("emptcp-benchw{id}"));
    let dir = work.join("policy.d");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("10-big.yaml"), big_policy(16, 64))?;
    let probe = |port: u32| {
        format!(
            "version: 1\nchains:\n  - name: probe\n    match: {{local_ports: [{port}]}}\n    actions: [count]\n"
        )
    };
    let write_probe = |port: u32| -> anyhow::Result<()> {
        let tmp = dir.join(".20-probe.yaml.tmp");
        std::fs::write(&tmp, probe(port))?;
        std::fs::rename(&tmp, dir.join("20-probe.yaml"))?;
        Ok(())
    };
    write_probe(20_000)?;
    let exe = std::env::current_exe()?.with_file_name("emptcp");
    // A drift interval of 10 s puts one full drift pass (observe + plan of
    // 16 interfaces x 64 chains) inside the 10 s idle window: the idle
    // number includes the drift work (the default, 30 s, does a third).
    let child = Command::new(&exe)
        .args(["--bpffs-root", bed.root.to_str().unwrap_or_default()])
        .args(["--netns", &bed.ns, "watch", "-d"])
        .arg(&dir)
        .args(["--drift-interval", "10s", "--debounce", "100ms"])
        .args(["--metrics", "127.0.0.1:0", "--state-dir"])
        .arg(work.join("state"))
        .env("EMPTCP_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let w = Watcher {
        child,
        state_dir: work.join("state"),
    };
    let pid = w.child.id();
    let wait_converged = |hash: &str, timeout: Duration| -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        loop {
            if let Some(s) = w.state()
                && s["policy"]["applied_hash"] == hash
                && s["last_reconcile"]["converged"] == true
            {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "not converged on {hash} within {timeout:?}: {:?}",
                    w.state()
                );
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    };
    let src = emptcp::watch::source::Source::Dir(dir.clone());
    let cold = wait_converged(&src.hash(), Duration::from_secs(60))?;

    let mut lat = Vec::new();
    for i in 1..=100 {
        write_probe(20_000 + i)?;
        let t0 = Instant::now();
        let h = src.hash();
        wait_converged(&h, Duration::from_secs(10))?;
        lat.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(150));
    }
    let reconcile_ms = w
        .state()
        .and_then(|s| s["last_reconcile"]["duration_ms"].as_f64())
        .unwrap_or_default();

    // Idle: settle, then 10 s without changes (one drift pass inside).
    std::thread::sleep(Duration::from_secs(2));
    let c0 = cpu_ns(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let c1 = cpu_ns(pid)?;
    let wall = t0.elapsed();
    let idle_pct = (c1 - c0) as f64 / wall.as_nanos() as f64 * 100.0;
    let rss = status_kib(pid, "VmRSS:")?;
    let hwm = status_kib(pid, "VmHWM:")?;
    let drift_ms = w
        .state()
        .and_then(|s| s["last_reconcile"]["duration_ms"].as_f64())
        .unwrap_or_default();
    drop(w);
    let _ = std::fs::remove_dir_all(&work);

    println!("| measurement (emptcp watch, 16 interfaces, 64 chains) | result | target |");
    println!("|---|---|---|");
    println!(
        "| file change -> converged (rename-over save, debounce 100 ms), p50 / p99 of 100 | {:.0} ms / {:.0} ms | p99 < 500 ms |",
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99)
    );
    println!(
        "| of which one reconcile (read + observe + plan + apply + verify), last | {reconcile_ms:.1} ms | |"
    );
    println!(
        "| first converge at start (cold: load + attach 16 interfaces) | {:.0} ms | |",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "| idle CPU over {:.0} s (one drift pass of {drift_ms:.1} ms inside) | {idle_pct:.2} % of a core | < 1 % |",
        wall.as_secs_f64()
    );
    println!(
        "| RSS idle / peak | {:.1} MiB / {:.1} MiB | < 30 MiB |",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    Ok(())
}
