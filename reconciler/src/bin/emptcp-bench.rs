//! `emptcp-bench`: the numbers of docs/benchmarks.md, measured in one run on
//! this machine (root, real kernel, own namespace and bpffs root).
//!
//! * reconcile: no-op observe + plan with 16 interfaces and 64 chains, and
//!   apply-to-converged of the quickstart policy (cold and warm).
//!
//! Prints a markdown table; `scripts/bench.sh` runs it.
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
    let id = std::process::id();
    let bed = Bed {
        ns: format!("emptcp-bench{id}"),
        root: PathBuf::from(format!("/sys/fs/bpf/emptcp-bench{id}")),
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
