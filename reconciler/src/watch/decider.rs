//! Threshold deciders (`thresholds.decider` of a chain).
//!
//! `constant` needs nothing. `cpu_usage: {interval, busy_above,
//! busy_recover_at}` samples /proc/stat every `interval`; when the node's
//! CPU usage over the interval rises above `busy_above`, the chain's
//! `recover_at` becomes `busy_recover_at`; it returns to `recover_at` once
//! usage falls below `busy_above - margin` (hysteresis, see
//! [`calm_below`]). A decision is not written to the kernel here: it
//! adjusts the desired state ([`Deciders::apply`]) before the normal plan /
//! apply, so it is one `put_thresholds` step and never counted as drift.
use std::{collections::BTreeMap, time::Duration};

use tokio::{sync::mpsc, task::JoinHandle};

use super::state_file::{DeciderState, now_unix};
use crate::{
    desired::Desired,
    observe::Observed,
    policy::{Decider, Policy},
};

/// Hysteresis: busy ends below `busy_above` minus this many percentage
/// points (or minus half of `busy_above`, when that is smaller).
pub const HYSTERESIS_POINTS: f64 = 10.0;

/// The usage below which a busy chain becomes calm again.
pub fn calm_below(busy_above: f64) -> f64 {
    busy_above - HYSTERESIS_POINTS.min(busy_above / 2.0)
}

/// The next busy state from the current one and a usage sample (percent).
pub fn next_busy(busy: bool, usage: f64, busy_above: f64) -> bool {
    if busy {
        usage >= calm_below(busy_above)
    } else {
        usage > busy_above
    }
}

/// Cumulative CPU time from the first line of /proc/stat, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Parses the aggregate `cpu` line: user nice system idle iowait irq
/// softirq steal (guest time is already inside user/nice). Idle and iowait
/// are not busy.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// Usage in percent of all cores between two samples (None when no time
/// passed).
pub fn usage_between(prev: CpuTimes, cur: CpuTimes) -> Option<f64> {
    let dt = cur.total.checked_sub(prev.total)?;
    if dt == 0 {
        return None;
    }
    let db = cur.busy.saturating_sub(prev.busy);
    Some((db as f64 * 100.0 / dt as f64).clamp(0.0, 100.0))
}

/// Names a file to sample instead of /proc/stat (same format). The
/// end-to-end test drives the node's "load" through it, so what it checks
/// (the decision reaching the kernel map and back) does not depend on what
/// else the machine runs.
pub const PROC_STAT_ENV: &str = "EMPTCP_PROC_STAT";

fn read_cpu() -> Option<CpuTimes> {
    let path = std::env::var_os(PROC_STAT_ENV).unwrap_or_else(|| "/proc/stat".into());
    parse_proc_stat(&std::fs::read_to_string(path).ok()?)
}

/// One chain's cpu_usage configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuSpec {
    pub interval: Duration,
    pub busy_above: f64,
    pub recover_at: u64,
    pub busy_recover_at: u64,
}

/// A usage sample of one chain's sampler.
#[derive(Debug)]
pub struct Sample {
    pub chain: String,
    pub generation: u64,
    pub usage: f64,
}

struct Chain {
    spec: CpuSpec,
    generation: u64,
    busy: bool,
    usage: Option<f64>,
    since: Option<f64>,
    task: JoinHandle<()>,
}

/// The cpu_usage deciders of the current policy, their samplers and states.
pub struct Deciders {
    chains: BTreeMap<String, Chain>,
    tx: mpsc::Sender<Sample>,
    next_generation: u64,
}

impl Drop for Deciders {
    fn drop(&mut self) {
        for c in self.chains.values() {
            c.task.abort();
        }
    }
}

/// The cpu_usage specs of a policy, by chain.
pub fn specs(policy: &Policy) -> BTreeMap<String, CpuSpec> {
    policy
        .chains
        .iter()
        .filter_map(|c| {
            let t = c.thresholds.as_ref()?;
            match t.decider {
                Decider::Constant => None,
                Decider::CpuUsage {
                    interval,
                    busy_above,
                    busy_recover_at,
                } => Some((
                    c.name.clone(),
                    CpuSpec {
                        interval: interval.get(),
                        busy_above: f64::from(busy_above.get()),
                        recover_at: t.recover_at.0,
                        busy_recover_at: busy_recover_at.0,
                    },
                )),
            }
        })
        .collect()
}

impl Deciders {
    /// Samples are sent to `tx`; call [`Deciders::on_sample`] with them.
    pub fn new(tx: mpsc::Sender<Sample>) -> Deciders {
        Deciders {
            chains: BTreeMap::new(),
            tx,
            next_generation: 1,
        }
    }

    /// Follows a new policy: starts samplers for new or changed cpu_usage
    /// chains, stops those of removed ones. A chain whose spec is unchanged
    /// keeps its sampler and state. Must run inside the tokio runtime.
    pub fn update(&mut self, policy: &Policy) {
        let want = specs(policy);
        self.chains.retain(|name, c| {
            let keep = want.get(name) == Some(&c.spec);
            if !keep {
                c.task.abort();
            }
            keep
        });
        for (name, spec) in want {
            if self.chains.contains_key(&name) {
                continue;
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            let task = tokio::spawn(sample_loop(
                name.clone(),
                generation,
                spec.interval,
                self.tx.clone(),
            ));
            self.chains.insert(
                name,
                Chain {
                    spec,
                    generation,
                    busy: false,
                    usage: None,
                    since: None,
                    task,
                },
            );
        }
    }

    /// Starts busy the chains whose live threshold already is the busy one
    /// (the daemon restarted while the node was busy): a restart does not
    /// flap the threshold back and forth.
    pub fn seed(&mut self, observed: &Observed) {
        let e = &observed.entries;
        for (name, c) in &mut self.chains {
            if c.spec.busy_recover_at == c.spec.recover_at || c.usage.is_some() {
                continue;
            }
            let live = e
                .chains
                .iter()
                .find(|(_, ch)| &ch.name == name)
                .and_then(|(id, _)| e.thresholds.get(id));
            if live.is_some_and(|t| t.recover_at == c.spec.busy_recover_at) {
                c.busy = true;
                c.since = Some(now_unix());
                tracing::info!(chain = %name, "decider starts busy: the live threshold is busy_recover_at");
            }
        }
    }

    /// Takes a sample; true when the chain's busy state flipped (the
    /// desired thresholds changed).
    pub fn on_sample(&mut self, s: Sample) -> bool {
        let Some(c) = self.chains.get_mut(&s.chain) else {
            return false;
        };
        if c.generation != s.generation {
            return false; // from a sampler of an older spec
        }
        c.usage = Some(s.usage);
        let busy = next_busy(c.busy, s.usage, c.spec.busy_above);
        metrics::gauge!(super::metrics::DECIDER_USAGE, "chain" => s.chain.clone()).set(s.usage);
        if busy == c.busy {
            return false;
        }
        c.busy = busy;
        c.since = Some(now_unix());
        tracing::info!(
            chain = %s.chain,
            cpu_usage = format!("{:.1}%", s.usage),
            busy,
            recover_at = if busy { c.spec.busy_recover_at } else { c.spec.recover_at },
            "decider: CPU is {}",
            if busy { "busy" } else { "calm again" }
        );
        true
    }

    /// The desired state with each decider's decision in force.
    pub fn apply(&self, base: &Desired) -> Desired {
        let mut d = base.clone();
        for (name, c) in &self.chains {
            if let Some(t) = d.chains.get_mut(name).and_then(|ch| ch.thresholds.as_mut()) {
                t.recover_at = if c.busy {
                    c.spec.busy_recover_at
                } else {
                    c.spec.recover_at
                };
            }
        }
        d
    }

    /// The decisions, to tell a decider change from drift.
    pub fn fingerprint(&self) -> Vec<(String, bool)> {
        self.chains
            .iter()
            .map(|(n, c)| (n.clone(), c.busy))
            .collect()
    }

    pub fn states(&self) -> Vec<DeciderState> {
        self.chains
            .iter()
            .map(|(name, c)| DeciderState {
                chain: name.clone(),
                kind: "cpu_usage".into(),
                busy: c.busy,
                cpu_usage_percent: c.usage.map(|u| (u * 10.0).round() / 10.0),
                interval_ms: c.spec.interval.as_millis() as u64,
                busy_above_percent: c.spec.busy_above,
                calm_below_percent: calm_below(c.spec.busy_above),
                recover_at: c.spec.recover_at,
                busy_recover_at: c.spec.busy_recover_at,
                recover_at_in_force: if c.busy {
                    c.spec.busy_recover_at
                } else {
                    c.spec.recover_at
                },
                since: c.since,
            })
            .collect()
    }
}

async fn sample_loop(chain: String, generation: u64, every: Duration, tx: mpsc::Sender<Sample>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    let mut prev = read_cpu();
    loop {
        tick.tick().await;
        let cur = read_cpu();
        if let (Some(p), Some(c)) = (prev, cur)
            && let Some(usage) = usage_between(p, c)
            && tx
                .send(Sample {
                    chain: chain.clone(),
                    generation,
                    usage,
                })
                .await
                .is_err()
        {
            return;
        }
        prev = cur;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parsing() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        assert_eq!(
            parse_proc_stat(text),
            Some(CpuTimes {
                busy: 150,
                total: 1000
            })
        );
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        let a = CpuTimes {
            busy: 150,
            total: 1000,
        };
        let b = CpuTimes {
            busy: 250,
            total: 1200,
        };
        assert_eq!(usage_between(a, b), Some(50.0));
        assert_eq!(usage_between(a, a), None);
    }

    #[test]
    fn hysteresis() {
        assert_eq!(calm_below(80.0), 70.0);
        assert_eq!(calm_below(10.0), 5.0);
        // Calm: busy only strictly above.
        assert!(!next_busy(false, 80.0, 80.0));
        assert!(next_busy(false, 80.5, 80.0));
        // Busy: stays busy down to the margin.
        assert!(next_busy(true, 75.0, 80.0));
        assert!(next_busy(true, 70.0, 80.0));
        assert!(!next_busy(true, 69.9, 80.0));
    }

    #[tokio::test]
    async fn decisions_adjust_the_desired_thresholds() {
        let p = crate::policy::load_str(
            "p",
            "version: 1\nchains:\n  - name: c\n    thresholds: {remove_below: 1MiB, recover_at: 4MiB, decider: {cpu_usage: {interval: 1h, busy_above: 80%, busy_recover_at: 64MiB}}}\n    actions: [record_flow, strip_add_addr, recover_add_addr]\n",
        )
        .unwrap();
        let progs: Vec<String> = ["entry", "record_flow", "strip_add_addr", "recover_add_addr"]
            .map(String::from)
            .to_vec();
        let base = Desired::build(&p, "00", &progs, &BTreeMap::new()).unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let mut d = Deciders::new(tx);
        d.update(&p);
        let g = d.chains["c"].generation;
        let calm = d.apply(&base);
        assert_eq!(calm.chains["c"].thresholds.unwrap().recover_at, 4 << 20);
        assert!(!d.on_sample(Sample {
            chain: "c".into(),
            generation: g + 99,
            usage: 99.0
        }));
        assert!(d.on_sample(Sample {
            chain: "c".into(),
            generation: g,
            usage: 95.0
        }));
        let busy = d.apply(&base);
        assert_eq!(busy.chains["c"].thresholds.unwrap().recover_at, 64 << 20);
        assert_eq!(busy.chains["c"].thresholds.unwrap().remove_below, 1 << 20);
        assert_eq!(d.fingerprint(), [("c".to_string(), true)]);
        // The same policy again keeps the state; a changed spec resets it.
        d.update(&p);
        assert!(d.states()[0].busy);
        assert!(!d.on_sample(Sample {
            chain: "c".into(),
            generation: g,
            usage: 72.0
        }));
        assert!(d.on_sample(Sample {
            chain: "c".into(),
            generation: g,
            usage: 10.0
        }));
        assert_eq!(d.apply(&base), base);
    }
}
