//! Packet copy on the capture's clock: the policy's `packet_copy` rules,
//! decided by the daemon's own trigger engine (`copy::trigger::Engine`)
//! over what the datapath captured (`SUBFLOWS`, filled by the replayed
//! packets), at the times the daemon decides, and forged by the daemon's
//! own code (`copy::forge::frame`). Nothing is sent: the frames go to the
//! report and to `--write`.
//!
//! When the daemon decides (`copy/task.rs`), here on the capture's clock:
//! at once when the datapath reports a subflow new or closed
//! (`SUBFLOW_EVENTS`, drained after each packet), at each `subflow_idle`
//! deadline, and while a `flow_bytes_at` rule exists, [`BYTES_TICK_NS`]
//! after the previous round (a tick in which no packet moved a size
//! decides nothing new, so only the first tick after such a packet is
//! run). The daemon's once-a-second resolve round is not modelled: with the
//! rules fixed it decides nothing the rounds above do not.
//!
//! The datapath stamps `SUBFLOWS` with `bpf_ktime_get_ns` of the replay,
//! not the capture. The translation is exact without a table per packet:
//! after each replayed packet of a subflow its entry is read, and when its
//! activity stamp moved, the packet just replayed moved it, so the
//! activity's capture time is that packet's. Memory grows with live
//! subflows, not packets.
use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap as StdMap},
};

use aya::maps::{HashMap, Map, MapData, RingBuf};
use emptcp_common::{FlowKey, FlowState, SF_CLOSED, SF_JOIN, SubflowState};

use super::{SimError, sandbox::Sandbox};
use crate::{
    copy::{
        capture::{last_activity_ns, view},
        forge::frame,
        rules::{Armed, resolve_with},
        runner::RuleStatus,
        trigger::{Engine, Rule, SubflowView, When},
    },
    policy::PacketCopy,
};

/// The daemon's size poll while a `flow_bytes_at` rule is armed
/// (`copy/task.rs` BYTES_TICK).
pub const BYTES_TICK_NS: u64 = 100_000_000;

/// One frame packet copy would have sent.
pub struct Forged {
    /// Capture time of the decision.
    pub ts_ns: u64,
    /// The subflow, oriented from the simulated host.
    pub key: FlowKey,
    pub frame: Vec<u8>,
}

/// A live subflow of the capture, with its activity on both clocks.
struct Tracked {
    state: SubflowState,
    /// `last_activity_ns` of the entry, on the replay's clock.
    kernel_activity: u64,
    /// The same moment on the capture's clock.
    activity: u64,
}

pub struct Copier {
    armed: Vec<Armed>,
    rules: Vec<Rule>,
    bytes_rules: bool,
    subflows: HashMap<MapData, FlowKey, SubflowState>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    events: RingBuf<MapData>,
    engine: Engine,
    live: StdMap<FlowKey, Tracked>,
    /// Idle deadlines on the capture clock: (deadline, subflow, activity
    /// it counts from). Stale ones (the subflow moved or closed) are
    /// skipped when they come up.
    deadlines: BinaryHeap<Reverse<(u64, FlowKey, u64)>>,
    /// Capture time of the last round (the size tick counts from it).
    last_round: Option<u64>,
    /// A packet moved a size since the last tick: the next tick decides.
    sizes_moved_at: Option<u64>,
    status: BTreeMap<String, RuleStatus>,
}

fn err(name: &str, e: impl std::fmt::Display) -> SimError {
    SimError::Apply(format!("opening map {name}: {e}"))
}

fn map(sb: &Sandbox, name: &str) -> Result<Map, SimError> {
    let md = MapData::from_pin(sb.layout.map(name)).map_err(|e| err(name, e))?;
    Map::from_map_data(md).map_err(|e| err(name, e))
}

fn open<V: aya::Pod>(sb: &Sandbox, name: &str) -> Result<HashMap<MapData, FlowKey, V>, SimError> {
    HashMap::try_from(map(sb, name)?).map_err(|e| err(name, e))
}

impl Copier {
    /// `None` without rules: the replay then pays nothing for packet copy.
    /// Rules are resolved as the daemon resolves them, against the
    /// sandbox's applied chains and stand-in interfaces.
    pub fn new(sb: &Sandbox, rules: &[PacketCopy]) -> Result<Option<Copier>, SimError> {
        if rules.is_empty() {
            return Ok(None);
        }
        let chains: BTreeMap<String, u32> = sb
            .observed
            .entries
            .chains
            .iter()
            .map(|(id, c)| (c.name.clone(), *id))
            .collect();
        let (armed, unarmed) = resolve_with(rules, &chains, &|n| {
            // Frames are recorded, never sent: Ethernet like the capture.
            sb.ifindex.get(n).map(|&i| (i, false))
        });
        let mut status = BTreeMap::new();
        for a in &armed {
            status.insert(
                a.rule.name.clone(),
                RuleStatus {
                    name: a.rule.name.clone(),
                    interface: a.interface.clone(),
                    armed: true,
                    ..RuleStatus::default()
                },
            );
        }
        for u in unarmed {
            status.insert(
                u.name.clone(),
                RuleStatus {
                    name: u.name.clone(),
                    interface: rules
                        .iter()
                        .find(|r| r.name == u.name)
                        .map(|r| r.interface.clone())
                        .unwrap_or_default(),
                    armed: false,
                    reason: Some(u.reason),
                    ..RuleStatus::default()
                },
            );
        }
        Ok(Some(Copier {
            rules: armed.iter().map(|a| a.rule.clone()).collect(),
            bytes_rules: armed
                .iter()
                .any(|a| matches!(a.rule.when, When::FlowBytesAt { .. })),
            armed,
            subflows: open(sb, "SUBFLOWS")?,
            flows: open(sb, "FLOWS")?,
            events: RingBuf::try_from(map(sb, "SUBFLOW_EVENTS")?)
                .map_err(|e| err("SUBFLOW_EVENTS", e))?,
            engine: Engine::new(),
            live: StdMap::new(),
            deadlines: BinaryHeap::new(),
            last_round: None,
            sizes_moved_at: None,
            status,
        }))
    }

    /// After a packet of subflow `key` was replayed at capture time `ts`:
    /// what the datapath captured about the subflow now, and the round the
    /// daemon runs at once when the packet made a subflow new or closed.
    pub fn after_packet(&mut self, key: &FlowKey, ts: u64) -> Vec<Forged> {
        self.last_round.get_or_insert(ts);
        self.track(key, ts);
        let mut event = false;
        while self.events.next().is_some() {
            event = true;
        }
        let mut out = Vec::new();
        if event {
            self.round(ts, &mut out);
        }
        out
    }

    fn track(&mut self, key: &FlowKey, ts: u64) {
        if self.bytes_rules {
            self.sizes_moved_at = Some(ts);
        }
        let Some(state) = self
            .subflows
            .get(key, 0)
            .ok()
            .filter(|s| s.flags & SF_CLOSED == 0)
        else {
            // Not captured (no egress chain matched it), or closed (by this
            // packet's FIN/RST or earlier: a tombstone): the daemon forgets
            // it too.
            self.live.remove(key);
            return;
        };
        let ka = last_activity_ns(&state);
        let activity = match self.live.get(key) {
            Some(t) if t.kernel_activity == ka => t.activity,
            _ => ts,
        };
        let moved = self.live.get(key).is_none_or(|t| t.activity != activity);
        self.live.insert(
            *key,
            Tracked {
                state,
                kernel_activity: ka,
                activity,
            },
        );
        if moved {
            for r in &self.rules {
                // other_subflows_idle: any subflow's deadline can be the
                // moment the others of a watched one have all gone quiet.
                let watched = matches!(r.when, When::OtherSubflowsIdle { .. })
                    || (r.chain == state.chain && r.ifindex == state.ifindex);
                if let Some(idle_ns) = r.when.idle_ns()
                    && watched
                {
                    self.deadlines.push(Reverse((
                        activity.saturating_add(idle_ns),
                        *key,
                        activity,
                    )));
                }
            }
        }
    }

    /// The next decision time, if any: the earliest live idle deadline or
    /// the size tick after the last packet.
    fn next_decision(&mut self) -> Option<u64> {
        while let Some(Reverse((_, key, activity))) = self.deadlines.peek() {
            if self.live.get(key).is_some_and(|t| t.activity == *activity) {
                break;
            }
            self.deadlines.pop();
        }
        let idle = self.deadlines.peek().map(|Reverse((t, ..))| *t);
        let tick = self.tick();
        match (idle, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Every decision due before capture time `ts` (at `ts` too when
    /// `inclusive`: the end of the capture), in time order; the frames
    /// they forge.
    pub fn until(&mut self, ts: u64, inclusive: bool) -> Vec<Forged> {
        let mut out = Vec::new();
        while let Some(t) = self.next_decision() {
            if t > ts || (t == ts && !inclusive) {
                break;
            }
            while self
                .deadlines
                .peek()
                .is_some_and(|Reverse((d, ..))| *d <= t)
            {
                self.deadlines.pop();
            }
            self.round(t, &mut out);
        }
        out
    }

    /// The first size tick after the packet that last moved a size.
    fn tick(&self) -> Option<u64> {
        let at = self.sizes_moved_at?;
        let last = self.last_round.unwrap_or(at).min(at);
        Some(last + ((at - last) / BYTES_TICK_NS + 1) * BYTES_TICK_NS)
    }

    /// One round of the daemon at capture time `t`: decide, forge, count.
    fn round(&mut self, t: u64, out: &mut Vec<Forged>) {
        self.last_round = Some(t);
        // This round reads every size: nothing moved since.
        self.sizes_moved_at = None;
        let views: Vec<SubflowView> = self
            .live
            .iter()
            .filter_map(|(k, tr)| {
                let bytes = (self.bytes_rules && tr.state.flags & SF_JOIN == 0)
                    .then(|| self.flows.get(k, 0).ok().map(|f| f.bytes))
                    .flatten();
                let (mut v, _) = view(k, &tr.state, bytes)?;
                v.last_activity_ns = tr.activity;
                Some(v)
            })
            .collect();
        let fires = self.engine.decide(&self.rules, &views, t);
        for (rule, _) in self.engine.closed_before_firing() {
            if let Some(s) = self.status.get_mut(rule) {
                s.closed_before_firing += 1;
            }
        }
        for (rule, held) in &self.engine.held {
            if let Some(s) = self.status.get_mut(rule) {
                s.rate_limited = *held;
            }
        }
        for f in fires {
            let (Some(a), Some(tr)) = (
                self.armed.iter().find(|a| a.rule.name == f.rule),
                self.live.get(&f.key),
            ) else {
                continue;
            };
            let st = self.status.entry(f.rule.clone()).or_default();
            st.fired += 1;
            let Some((_, captured)) = view(&f.key, &tr.state, None) else {
                continue;
            };
            match frame(&captured, &a.payload, a.raw_ip) {
                Ok(fr) => {
                    st.sent += 1;
                    out.push(Forged {
                        ts_ns: t,
                        key: f.key,
                        frame: fr,
                    });
                }
                Err(e) => {
                    st.send_failures += 1;
                    st.last_error = Some(e.to_string());
                }
            }
        }
    }

    /// Every rule's counters (the fields of `emptcp status`; `sent` counts
    /// the frames forged into the simulated traffic).
    pub fn status(&mut self, end: u64) -> (Vec<RuleStatus>, Vec<Forged>) {
        // A last round at the end of the capture counts the subflows that
        // closed before their rule fired since the previous round.
        let mut out = Vec::new();
        self.round(end, &mut out);
        (self.status.values().cloned().collect(), out)
    }
}
