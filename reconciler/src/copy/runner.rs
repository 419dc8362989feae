//! One round of packet copy: decide what fires, build its frame, send it
//! through the interface's AF_XDP socket (any [`Transmit`] in tests), and
//! keep the counters status and metrics show. The packet-copy task calls [`Runner::round`] whenever something
//! may fire, with the subflows it read from the capture maps.
use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    forge::{Captured, frame},
    rules::{Armed, Unarmed},
    trigger::{Engine, SubflowView},
};
use crate::packet::{AfXdp, Transmit};

/// The AF_XDP queue control packets go out on. One queue is enough for a
/// few control packets per second, and veth has one.
pub const QUEUE: u32 = 0;

/// Per-rule report for `emptcp status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStatus {
    pub name: String,
    pub interface: String,
    pub armed: bool,
    /// Why the rule is not armed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub fired: u64,
    pub sent: u64,
    pub send_failures: u64,
    pub rate_limited: u64,
    /// Subflows in the rule's scope whose connection closed before the
    /// rule fired for them (nothing was sent for them).
    #[serde(default)]
    pub closed_before_firing: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Sockets, trigger memory and counters, kept across rounds.
pub struct Runner<T = AfXdp> {
    engine: Engine,
    transmit: T,
    status: BTreeMap<String, RuleStatus>,
    closed_log: BTreeMap<String, LogThrottle>,
}

/// "Closed before the trigger fired" is normal for short connections: one
/// log line per rule per [`LogThrottle::EVERY`], with the count of the
/// ones not logged since.
#[derive(Default)]
struct LogThrottle {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogThrottle {
    const EVERY: Duration = Duration::from_secs(10);

    /// `Some(suppressed since the last line)` when a line is due now.
    fn due(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Default for Runner {
    fn default() -> Runner {
        Runner::new()
    }
}

impl Runner {
    /// Sends through an AF_XDP socket per interface, on [`QUEUE`].
    pub fn new() -> Runner {
        Runner::with_transmit(AfXdp::new(QUEUE))
    }
}

impl<T: Transmit> Runner<T> {
    pub fn with_transmit(transmit: T) -> Runner<T> {
        Runner {
            engine: Engine::default(),
            transmit,
            status: BTreeMap::new(),
            closed_log: BTreeMap::new(),
        }
    }

    /// The sender the frames went to.
    pub fn transmit(&self) -> &T {
        &self.transmit
    }

    /// One round at `now_ns` (CLOCK_MONOTONIC, the datapath's clock) over
    /// the subflows read from the capture. `fresh` reads one subflow's
    /// capture again just before its packet is forged: `None` means the
    /// connection closed since the read (nothing is sent), and the packet
    /// carries the newest seq/ack. Returns the frames sent.
    pub fn round(
        &mut self,
        armed: &[Armed],
        unarmed: &[Unarmed],
        subflows: &[(SubflowView, Captured)],
        fresh: &mut dyn FnMut(&emptcp_common::FlowKey) -> Option<Captured>,
        now_ns: u64,
    ) -> usize {
        self.refresh_status(armed, unarmed);
        let rules: Vec<_> = armed.iter().map(|a| a.rule.clone()).collect();
        let views: Vec<SubflowView> = subflows.iter().map(|(v, _)| *v).collect();
        let fires = self.engine.decide(&rules, &views, now_ns);
        for (name, held) in &self.engine.held {
            if let Some(s) = self.status.get_mut(name) {
                s.rate_limited = *held;
            }
        }
        for (rule, key) in self.engine.closed_before_firing().to_vec() {
            self.closed_before_firing(
                &rule,
                &key,
                "the subflow ended before the rule's condition was met",
            );
        }
        self.closed_log
            .retain(|rule, _| armed.iter().any(|a| &a.rule.name == rule));
        let mut sent = 0;
        for f in fires {
            let Some(a) = armed.iter().find(|a| a.rule.name == f.rule) else {
                continue;
            };
            let st = self.status.entry(f.rule.clone()).or_default();
            st.fired += 1;
            // The decision was taken on the read at the start of the round;
            // the connection may have closed since (a FIN or RST seen by
            // either hook removes its capture).
            if fresh(&f.key).is_none() {
                self.closed_before_firing(
                    &f.rule,
                    &f.key,
                    "the connection closed between the capture read and the send",
                );
                continue;
            }
            // The socket is opened before the packet is forged: opening it
            // takes milliseconds (26 ms seen under emulation) while the
            // connection moves on, and a packet forged before that carries
            // a seq and tsval the peer drops as old (PAWS).
            let cap = match self
                .transmit
                .prepare(a.rule.ifindex)
                .map(|()| fresh(&f.key))
            {
                Ok(Some(cap)) => cap,
                Ok(None) => {
                    self.closed_before_firing(
                        &f.rule,
                        &f.key,
                        "the connection closed between the capture read and the send",
                    );
                    continue;
                }
                Err(e) => {
                    self.send_failed(&f.rule, &a.interface, e.to_string());
                    continue;
                }
            };
            let result = frame(&cap, &a.payload, a.raw_ip)
                .map_err(|e| e.to_string())
                .and_then(|fr| {
                    self.transmit
                        .transmit(a.rule.ifindex, &fr)
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok(()) => {
                    let st = self.status.entry(f.rule.clone()).or_default();
                    st.sent += 1;
                    sent += 1;
                    tracing::info!(rule = %f.rule, interface = %a.interface, port = f.key.local_port, "packet copy sent");
                }
                Err(e) => self.send_failed(&f.rule, &a.interface, e),
            }
        }
        // Sockets of interfaces no rule uses any more are closed.
        self.transmit
            .retain(&|ifindex| armed.iter().any(|a| a.rule.ifindex == ifindex));
        sent
    }

    /// Counts and logs a frame of `rule` that could not be sent.
    fn send_failed(&mut self, rule: &str, interface: &str, e: String) {
        let st = self.status.entry(rule.to_string()).or_default();
        st.send_failures += 1;
        tracing::warn!(rule = %rule, interface = %interface, error = %e, "packet copy not sent");
        st.last_error = Some(e);
    }

    /// Counts and logs (throttled) a subflow of `rule` that closed before
    /// anything was sent for it.
    fn closed_before_firing(&mut self, rule: &str, key: &emptcp_common::FlowKey, why: &str) {
        if let Some(s) = self.status.get_mut(rule) {
            s.closed_before_firing += 1;
        }
        if let Some(suppressed) = self.closed_log.entry(rule.to_string()).or_default().due() {
            tracing::info!(
                rule,
                local_port = key.local_port,
                remote_port = key.remote_port,
                suppressed,
                "packet copy: connection closed before the trigger fired, nothing sent ({why})"
            );
        }
    }

    fn refresh_status(&mut self, armed: &[Armed], unarmed: &[Unarmed]) {
        let mut next = BTreeMap::new();
        for a in armed {
            let mut s = self.status.remove(&a.rule.name).unwrap_or_default();
            s.name = a.rule.name.clone();
            s.interface = a.interface.clone();
            s.armed = true;
            s.reason = None;
            next.insert(s.name.clone(), s);
        }
        for u in unarmed {
            let mut s = self.status.remove(&u.name).unwrap_or_default();
            if s.reason.as_deref() != Some(u.reason.as_str()) {
                tracing::warn!(rule = %u.name, reason = %u.reason, "packet_copy rule not armed");
            }
            s.name = u.name.clone();
            s.interface = u.interface.clone();
            s.armed = false;
            s.reason = Some(u.reason.clone());
            next.insert(s.name.clone(), s);
        }
        self.status = next;
    }

    /// Every rule's counters, by name.
    pub fn status(&self) -> Vec<RuleStatus> {
        self.status.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use emptcp_common::FlowKey;

    use super::*;
    use crate::{
        copy::{
            rules::Payload,
            trigger::{Rule, When},
        },
        packet::Recorder,
    };

    fn armed() -> Armed {
        Armed {
            rule: Rule {
                name: "revive".into(),
                ifindex: 7,
                chain: 3,
                when: When::SubflowIdle { idle_ns: 1_000 },
            },
            interface: "cli1".into(),
            raw_ip: false,
            payload: Payload::MpPrio { backup: false },
        }
    }

    fn subflow(port: u16) -> (SubflowView, Captured) {
        let key = FlowKey {
            family: 4,
            local_port: port,
            remote_port: 5201,
            ..FlowKey::default()
        };
        let view = SubflowView {
            key,
            conn: 0,
            chain: 3,
            ifindex: 7,
            last_activity_ns: 0,
            conn_bytes: None,
        };
        let cap = Captured {
            key,
            mac: [0; 12],
            vlan_tci: 0,
            snd_nxt: 1,
            ack: 1,
            window: 1,
            timestamps: None,
            data_ack: None,
            keys: None,
        };
        (view, cap)
    }

    #[test]
    fn a_connection_closed_after_the_read_gets_nothing_and_is_counted() {
        let mut r = Runner::new();
        // Due at the read, gone when the send would start: no socket is
        // opened (ifindex 7 may not exist here) and nothing is sent.
        let sent = r.round(&[armed()], &[], &[subflow(1)], &mut |_| None, 10_000);
        assert_eq!(sent, 0);
        let st = &r.status()[0];
        assert_eq!((st.fired, st.sent, st.send_failures), (1, 0, 0));
        assert_eq!(st.closed_before_firing, 1);
        assert_eq!(r.transmit().open_interfaces().count(), 0);
    }

    #[test]
    fn a_due_rule_sends_its_frame_through_the_transmit_on_the_rule_interface() {
        let mut r = Runner::with_transmit(Recorder::default());
        let (view, cap) = subflow(40000);
        let sent = r.round(&[armed()], &[], &[(view, cap)], &mut |_| Some(cap), 10_000);
        assert_eq!(sent, 1);
        let st = &r.status()[0];
        assert_eq!((st.fired, st.sent, st.send_failures), (1, 1, 0));
        let [(ifindex, f)] = &r.transmit().frames[..] else {
            panic!("one frame expected: {:?}", r.transmit().frames)
        };
        assert_eq!(*ifindex, 7);
        assert_eq!(
            f,
            &frame(&cap, &Payload::MpPrio { backup: false }, false).unwrap()
        );
    }

    /// What a round did, in order.
    #[derive(Default, Clone)]
    struct Steps(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Steps {
        fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
    }

    impl Transmit for Steps {
        fn prepare(&mut self, ifindex: u32) -> Result<(), crate::packet::TransmitError> {
            self.push(format!("prepare {ifindex}"));
            Ok(())
        }
        fn transmit(&mut self, ifindex: u32, _: &[u8]) -> Result<(), crate::packet::TransmitError> {
            self.push(format!("transmit {ifindex}"));
            Ok(())
        }
    }

    #[test]
    fn the_frame_is_forged_from_a_read_taken_after_the_socket_is_ready() {
        let steps = Steps::default();
        let mut r = Runner::with_transmit(steps.clone());
        let (view, cap) = subflow(40000);
        let read = steps.clone();
        let sent = r.round(
            &[armed()],
            &[],
            &[(view, cap)],
            &mut |_| {
                read.push("read".into());
                Some(cap)
            },
            10_000,
        );
        assert_eq!(sent, 1);
        // The first read only asks whether the connection is still open.
        assert_eq!(
            *steps.0.lock().unwrap(),
            ["read", "prepare 7", "read", "transmit 7"]
        );
    }

    #[test]
    fn a_subflow_gone_before_its_deadline_is_counted_once() {
        let mut r = Runner::new();
        let rules = [armed()];
        // Not idle long enough yet (deadline at 1_000 ns of idleness).
        r.round(&rules, &[], &[subflow(1)], &mut |_| None, 500);
        r.round(&rules, &[], &[], &mut |_| None, 600);
        r.round(&rules, &[], &[], &mut |_| None, 5_000);
        let st = &r.status()[0];
        assert_eq!((st.fired, st.closed_before_firing), (0, 1));
    }
}
