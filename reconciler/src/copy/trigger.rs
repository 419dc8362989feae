//! When a packet-copy rule fires: a pure decision over snapshots of the
//! subflows the datapath captured, so every rule of the issue ("once per
//! subflow per condition, rate-limited, stops when the connection ends") is
//! a unit test, not a kernel experiment.
//!
//! The caller (the daemon) reads the capture maps, builds one
//! [`SubflowView`] per live subflow, calls [`Engine::decide`] with the time
//! of the read, and sends what comes back. Times are the kernel's monotonic
//! clock (`bpf_ktime_get_ns`, i.e. CLOCK_MONOTONIC), so no conversion is
//! needed between what the datapath stamped and `now`.
use std::collections::{BTreeMap, BTreeSet};

use emptcp_common::FlowKey;

/// What makes a rule fire (`packet_copy[].when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// No data on the subflow, in either direction, for this long.
    SubflowIdle { idle_ns: u64 },
    /// The connection reached this many bytes (once).
    FlowBytesAt { bytes: u64 },
}

/// One rule, resolved against the applied state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    /// Interface index the rule sends on.
    pub ifindex: u32,
    /// Chain id whose subflows the rule watches.
    pub chain: u32,
    pub when: When,
}

/// A subflow as the datapath last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubflowView {
    pub key: FlowKey,
    /// The connection it belongs to (any id stable for the connection's
    /// life, e.g. the initial subflow's key hash).
    pub conn: u64,
    pub chain: u32,
    pub ifindex: u32,
    /// Last time data went out on it, or its acknowledgment number moved
    /// (data came in), in ns of CLOCK_MONOTONIC.
    pub last_activity_ns: u64,
    /// The connection's size (MPTCP data acked), when known.
    pub conn_bytes: Option<u64>,
}

/// A packet to send now: rule `rule` for subflow `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    pub rule: String,
    pub key: FlowKey,
}

/// Why a due firing was not sent this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The rule spent its send budget for this second.
    RateLimited,
}

/// Sends per rule per second, at most. A control packet per subflow is
/// enough; this only bounds a pathological case (thousands of idle
/// subflows) so the daemon never floods an interface.
pub const MAX_SENDS_PER_RULE_PER_SEC: u32 = 1000;

/// The memory of what has fired.
#[derive(Debug, Default)]
pub struct Engine {
    /// (rule, subflow) -> the activity time it fired at. For subflow_idle a
    /// later activity re-arms the pair (a new idle period); flow_bytes_at
    /// never re-arms.
    fired: BTreeMap<(String, FlowKey), u64>,
    /// Rate limiter per rule: (second it counts, sends in it).
    budget: BTreeMap<String, (u64, u32)>,
    /// Firings held back by the rate limit, counted per rule.
    pub held: BTreeMap<String, u64>,
    /// Pairs in a rule's scope that have not fired in their current
    /// period: if the subflow disappears, its connection closed before the
    /// trigger fired.
    pending: BTreeSet<(String, FlowKey)>,
    /// Such pairs found by the last [`Engine::decide`].
    closed: Vec<(String, FlowKey)>,
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Everything due at `now_ns`. Subflows that are gone (the connection
    /// ended) are forgotten, so nothing is ever sent for them; rules that
    /// are gone (a reconcile removed them) are forgotten too.
    pub fn decide(&mut self, rules: &[Rule], subflows: &[SubflowView], now_ns: u64) -> Vec<Fire> {
        let live: BTreeSet<FlowKey> = subflows.iter().map(|s| s.key).collect();
        let names: BTreeSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        self.closed = std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|(rule, key)| !live.contains(key) && names.contains(rule.as_str()))
            .collect();
        self.fired
            .retain(|(rule, key), _| live.contains(key) && names.contains(rule.as_str()));
        self.budget.retain(|rule, _| names.contains(rule.as_str()));
        self.held.retain(|rule, _| names.contains(rule.as_str()));

        let mut out = Vec::new();
        for r in rules {
            for s in subflows
                .iter()
                .filter(|s| s.chain == r.chain && s.ifindex == r.ifindex)
            {
                let id = (r.name.clone(), s.key);
                let due = match r.when {
                    When::SubflowIdle { idle_ns } => {
                        let idle = now_ns.saturating_sub(s.last_activity_ns) >= idle_ns;
                        // Fired in this idle period already: activity since
                        // then starts a new period.
                        let fired_here = self
                            .fired
                            .get(&id)
                            .is_some_and(|at| *at == s.last_activity_ns);
                        idle && !fired_here
                    }
                    When::FlowBytesAt { bytes } => {
                        s.conn_bytes.is_some_and(|b| b >= bytes) && !self.fired.contains_key(&id)
                    }
                };
                if !due {
                    let fired = match r.when {
                        When::SubflowIdle { .. } => self
                            .fired
                            .get(&id)
                            .is_some_and(|at| *at == s.last_activity_ns),
                        When::FlowBytesAt { .. } => self.fired.contains_key(&id),
                    };
                    if !fired {
                        self.pending.insert(id);
                    }
                    continue;
                }
                if !self.spend(&r.name, now_ns) {
                    *self.held.entry(r.name.clone()).or_default() += 1;
                    self.pending.insert(id);
                    continue;
                }
                self.fired.insert(id, s.last_activity_ns);
                out.push(Fire {
                    rule: r.name.clone(),
                    key: s.key,
                });
            }
        }
        out
    }

    /// Takes one send from `rule`'s budget for the second of `now_ns`.
    fn spend(&mut self, rule: &str, now_ns: u64) -> bool {
        let sec = now_ns / 1_000_000_000;
        let b = self.budget.entry(rule.to_string()).or_insert((sec, 0));
        if b.0 != sec {
            *b = (sec, 0);
        }
        if b.1 >= MAX_SENDS_PER_RULE_PER_SEC {
            return false;
        }
        b.1 += 1;
        true
    }

    /// The (rule, subflow) pairs whose subflow disappeared (its connection
    /// closed, or the capture dropped it) before the rule fired for it, as
    /// found by the last [`Engine::decide`]. Nothing is ever sent for them.
    pub fn closed_before_firing(&self) -> &[(String, FlowKey)] {
        &self.closed
    }

    /// How many (rule, subflow) pairs have fired and are still remembered.
    pub fn fired_count(&self, rule: &str) -> usize {
        self.fired.keys().filter(|(r, _)| r == rule).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            family: 4,
            local_port: port,
            remote_port: 5201,
            ..FlowKey::default()
        }
    }

    fn sub(port: u16, last: u64) -> SubflowView {
        SubflowView {
            key: key(port),
            conn: 1,
            chain: 3,
            ifindex: 7,
            last_activity_ns: last,
            conn_bytes: None,
        }
    }

    fn idle_rule(ms: u64) -> Rule {
        Rule {
            name: "revive".into(),
            ifindex: 7,
            chain: 3,
            when: When::SubflowIdle { idle_ns: ms * MS },
        }
    }

    #[test]
    fn idle_fires_once_per_idle_period() {
        let mut e = Engine::new();
        let r = [idle_rule(500)];
        // Active 100 ms ago: not idle.
        assert!(e.decide(&r, &[sub(1, 900 * MS)], 1000 * MS).is_empty());
        // 500 ms without data: fires, once.
        let f = e.decide(&r, &[sub(1, 900 * MS)], 1400 * MS);
        assert_eq!(
            f,
            vec![Fire {
                rule: "revive".into(),
                key: key(1)
            }]
        );
        assert!(e.decide(&r, &[sub(1, 900 * MS)], 2000 * MS).is_empty());
        assert!(e.decide(&r, &[sub(1, 900 * MS)], 9000 * MS).is_empty());
        // Data again, then idle again: a new period fires again.
        assert!(e.decide(&r, &[sub(1, 9100 * MS)], 9200 * MS).is_empty());
        assert_eq!(e.decide(&r, &[sub(1, 9100 * MS)], 9700 * MS).len(), 1);
    }

    #[test]
    fn only_the_rules_chain_and_interface() {
        let mut e = Engine::new();
        let r = [idle_rule(1)];
        let mut other_chain = sub(1, 0);
        other_chain.chain = 4;
        let mut other_if = sub(2, 0);
        other_if.ifindex = 8;
        assert!(e.decide(&r, &[other_chain, other_if], 10 * MS).is_empty());
        assert_eq!(e.decide(&r, &[sub(3, 0)], 10 * MS).len(), 1);
    }

    #[test]
    fn a_closed_subflow_is_forgotten_and_never_sent_for() {
        let mut e = Engine::new();
        let r = [idle_rule(1)];
        assert_eq!(e.decide(&r, &[sub(1, 0)], 10 * MS).len(), 1);
        assert_eq!(e.fired_count("revive"), 1);
        // The connection ended: its subflow is no longer captured.
        assert!(e.decide(&r, &[], 20 * MS).is_empty());
        assert_eq!(e.fired_count("revive"), 0);
    }

    #[test]
    fn a_subflow_closed_before_its_rule_fired_is_reported_once() {
        let mut e = Engine::new();
        let r = [idle_rule(500)];
        // Two subflows, neither idle long enough yet.
        assert!(
            e.decide(&r, &[sub(1, 900 * MS), sub(2, 900 * MS)], 1000 * MS)
                .is_empty()
        );
        assert!(e.closed_before_firing().is_empty());
        // Subflow 1 closes before its idle deadline: reported, not sent.
        assert!(e.decide(&r, &[sub(2, 900 * MS)], 1100 * MS).is_empty());
        assert_eq!(e.closed_before_firing(), &[("revive".into(), key(1))]);
        // Reported once only.
        assert_eq!(e.decide(&r, &[sub(2, 900 * MS)], 1400 * MS).len(), 1);
        assert!(e.closed_before_firing().is_empty());
        // Subflow 2 fired in this period: its close is not "before firing".
        assert!(e.decide(&r, &[], 1500 * MS).is_empty());
        assert!(e.closed_before_firing().is_empty());
    }

    #[test]
    fn a_removed_rule_reports_no_closed_subflows() {
        let mut e = Engine::new();
        assert!(e.decide(&[idle_rule(500)], &[sub(1, 0)], MS).is_empty());
        assert!(e.decide(&[], &[], 2 * MS).is_empty());
        assert!(e.closed_before_firing().is_empty());
    }

    #[test]
    fn flow_bytes_at_fires_once_when_reached() {
        let mut e = Engine::new();
        let r = [Rule {
            name: "announce".into(),
            ifindex: 7,
            chain: 3,
            when: When::FlowBytesAt { bytes: 1 << 20 },
        }];
        let mut s = sub(1, 0);
        s.conn_bytes = Some(1000);
        assert!(e.decide(&r, &[s], MS).is_empty());
        s.conn_bytes = None;
        assert!(
            e.decide(&r, &[s], MS).is_empty(),
            "unknown size never fires"
        );
        s.conn_bytes = Some(2 << 20);
        assert_eq!(e.decide(&r, &[s], 2 * MS).len(), 1);
        s.last_activity_ns = 5 * MS;
        assert!(e.decide(&r, &[s], 6 * MS).is_empty(), "never re-armed");
    }

    #[test]
    fn sends_are_rate_limited_per_rule_and_second() {
        let mut e = Engine::new();
        let r = [idle_rule(1)];
        let subs: Vec<_> = (0..(MAX_SENDS_PER_RULE_PER_SEC as u16 + 10))
            .map(|p| sub(p, 0))
            .collect();
        let first = e.decide(&r, &subs, 1000 * MS);
        assert_eq!(first.len(), MAX_SENDS_PER_RULE_PER_SEC as usize);
        assert_eq!(e.held["revive"], 10);
        // The next second sends the rest, and nothing twice.
        let second = e.decide(&r, &subs, 2000 * MS);
        assert_eq!(second.len(), 10);
        assert!(second.iter().all(|f| !first.contains(f)));
    }

    #[test]
    fn a_removed_rule_is_forgotten() {
        let mut e = Engine::new();
        assert_eq!(e.decide(&[idle_rule(1)], &[sub(1, 0)], 10 * MS).len(), 1);
        assert!(e.decide(&[], &[sub(1, 0)], 20 * MS).is_empty());
        assert_eq!(e.fired_count("revive"), 0);
        // Added back: it fires again for the same idle period.
        assert_eq!(e.decide(&[idle_rule(1)], &[sub(1, 0)], 30 * MS).len(), 1);
    }
}
