//! When a packet-copy rule fires: a pure decision over snapshots of the
//! subflows the datapath captured, so every rule of firing ("once per
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
    /// No data for this long on every OTHER subflow of the connection (the
    /// path that carries it went quiet or failed); once per such period.
    OtherSubflowsIdle { idle_ns: u64 },
}

impl When {
    /// The idle time a rule waits for, if it is an idle rule.
    pub fn idle_ns(self) -> Option<u64> {
        match self {
            When::SubflowIdle { idle_ns } | When::OtherSubflowsIdle { idle_ns } => Some(idle_ns),
            When::FlowBytesAt { .. } => None,
        }
    }
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
    /// life, the same on all its subflows), 0 when unknown: such a subflow
    /// is nobody's "other subflow" and `other_subflows_idle` never fires
    /// for it.
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

/// The newest activity of each connection's subflows, to answer "when did
/// any other subflow of this one's connection last carry data" without a
/// pass over all subflows per subflow.
struct Others {
    /// conn -> the newest activity and its subflow, the second newest, and
    /// how many subflows the connection has.
    by_conn: BTreeMap<u64, (u64, FlowKey, u64, usize)>,
}

impl Others {
    fn of(subflows: &[SubflowView]) -> Others {
        let mut by_conn: BTreeMap<u64, (u64, FlowKey, u64, usize)> = BTreeMap::new();
        for s in subflows.iter().filter(|s| s.conn != 0) {
            let e = by_conn.entry(s.conn).or_insert((0, s.key, 0, 0));
            if e.3 == 0 || s.last_activity_ns > e.0 {
                e.2 = if e.3 == 0 { 0 } else { e.0 };
                e.0 = s.last_activity_ns;
                e.1 = s.key;
            } else {
                e.2 = e.2.max(s.last_activity_ns);
            }
            e.3 += 1;
        }
        Others { by_conn }
    }

    /// The newest activity of the other subflows of `s`'s connection; `None`
    /// when its connection is unknown or `s` is its only subflow.
    fn newest(&self, s: &SubflowView) -> Option<u64> {
        let &(best, best_key, second, n) = self.by_conn.get(&s.conn).filter(|_| s.conn != 0)?;
        (n >= 2).then_some(if best_key == s.key { second } else { best })
    }
}

/// The period a rule's condition is judged in for subflow `s` (the activity
/// time it started from: a rule fires once per period) and whether the
/// condition holds at `now_ns`.
fn condition(when: When, s: &SubflowView, others: &Others, now_ns: u64) -> (Option<u64>, bool) {
    match when {
        When::SubflowIdle { idle_ns } => (
            Some(s.last_activity_ns),
            now_ns.saturating_sub(s.last_activity_ns) >= idle_ns,
        ),
        When::FlowBytesAt { bytes } => (Some(0), s.conn_bytes.is_some_and(|b| b >= bytes)),
        When::OtherSubflowsIdle { idle_ns } => match others.newest(s) {
            Some(t) => (Some(t), now_ns.saturating_sub(t) >= idle_ns),
            None => (None, false),
        },
    }
}

/// Sends per rule per second, at most. A control packet per subflow is
/// enough; this only bounds a pathological case (thousands of idle
/// subflows) so the daemon never floods an interface.
pub const MAX_SENDS_PER_RULE_PER_SEC: u32 = 1000;

/// The memory of what has fired.
#[derive(Debug, Default)]
pub struct Engine {
    /// (rule, subflow) -> the period it fired in (`condition`): for the
    /// idle rules the activity time the idleness counts from, so a later
    /// activity re-arms the pair (a new idle period); flow_bytes_at has a
    /// single period and never re-arms.
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

        let others = Others::of(subflows);
        let mut out = Vec::new();
        for r in rules {
            for s in subflows
                .iter()
                .filter(|s| s.chain == r.chain && s.ifindex == r.ifindex)
            {
                let id = (r.name.clone(), s.key);
                let (period, holds) = condition(r.when, s, &others, now_ns);
                // Fired in this period already: for the idle rules a later
                // activity starts a new period; flow_bytes_at has one.
                let fired_here = period.is_some() && self.fired.get(&id) == period.as_ref();
                if !holds || fired_here {
                    if !fired_here {
                        self.pending.insert(id);
                    }
                    continue;
                }
                if !self.spend(&r.name, now_ns) {
                    *self.held.entry(r.name.clone()).or_default() += 1;
                    self.pending.insert(id);
                    continue;
                }
                self.fired.insert(id, period.unwrap_or_default());
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

    /// Subflow `port` of connection `conn` on interface `ifindex`.
    fn member(port: u16, conn: u64, ifindex: u32, last: u64) -> SubflowView {
        SubflowView {
            conn,
            ifindex,
            ..sub(port, last)
        }
    }

    fn others_rule(ms: u64) -> Rule {
        Rule {
            when: When::OtherSubflowsIdle { idle_ns: ms * MS },
            ..idle_rule(0)
        }
    }

    #[test]
    fn other_subflows_idle_waits_for_the_connections_other_paths() {
        let mut e = Engine::new();
        let r = [others_rule(300)];
        // The backup (port 2, interface 7, in scope) has been idle for long;
        // the regular subflow (port 1, interface 9) carried data 100 ms ago.
        let subs = |a_last| [member(1, 5, 9, a_last), member(2, 5, 7, 0)];
        assert!(e.decide(&r, &subs(900 * MS), 1000 * MS).is_empty());
        // 300 ms without data on the regular one: the backup's rule fires,
        // for the backup only (the regular one is out of the rule's scope).
        let f = e.decide(&r, &subs(900 * MS), 1200 * MS);
        assert_eq!(
            f,
            vec![Fire {
                rule: "revive".into(),
                key: key(2)
            }]
        );
        assert!(e.decide(&r, &subs(900 * MS), 5000 * MS).is_empty());
        // The regular path carries data again, then goes quiet again: once more.
        assert!(e.decide(&r, &subs(5100 * MS), 5200 * MS).is_empty());
        assert_eq!(e.decide(&r, &subs(5100 * MS), 5400 * MS).len(), 1);
    }

    #[test]
    fn other_subflows_idle_counts_only_the_same_known_connection() {
        let mut e = Engine::new();
        let r = [others_rule(1)];
        // Alone in its connection: no other path to watch.
        assert!(e.decide(&r, &[member(2, 5, 7, 0)], 10 * MS).is_empty());
        // An idle subflow of another connection is not its other path.
        let foreign = [member(1, 6, 9, 0), member(2, 5, 7, 0)];
        assert!(e.decide(&r, &foreign, 10 * MS).is_empty());
        // Connection unknown (0): never grouped, never fires.
        let unknown = [member(1, 0, 9, 0), member(2, 0, 7, 0)];
        assert!(e.decide(&r, &unknown, 10 * MS).is_empty());
        // Two others: the newest activity of either counts.
        let three = |b| [member(1, 5, 9, 0), member(3, 5, 9, b), member(2, 5, 7, 0)];
        assert!(e.decide(&r, &three(10 * MS), 10 * MS).is_empty());
        assert_eq!(e.decide(&r, &three(10 * MS), 11 * MS).len(), 1);
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
