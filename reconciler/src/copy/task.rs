//! The packet-copy thread of `emptcp watch`: reads the egress capture,
//! runs a [`Runner`] round, and sleeps until the next round or the next
//! moment a subflow becomes due, whichever is first (so a trigger fires
//! within a wake-up of its due time, not a polling interval later).
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use emptcp_common::{ChainDef, SUBFLOW_EV_CLOSED, SubflowEvent};

use super::{
    capture,
    rules::{Armed, Unarmed, resolve_with},
    runner::{RuleStatus, Runner},
    trigger::When,
};
use crate::{codec, layout::Layout, policy::PacketCopy};

/// The rules as last resolved.
#[derive(Debug, Clone, Default)]
struct Resolved {
    armed: Vec<Armed>,
    unarmed: Vec<Unarmed>,
}

/// How often the rules are resolved again (chain ids from the applied
/// `CHAINS` map, interfaces by name): a rule whose interface or chain
/// vanished is disarmed within this time, and re-armed when it is back.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);

/// The rules resolved against what is applied now.
fn resolve(layout: &Layout, rules: &[PacketCopy]) -> (Vec<Armed>, Vec<Unarmed>) {
    let chains: BTreeMap<String, u32> = MapData::from_pin(layout.map("CHAINS"))
        .ok()
        .and_then(|m| Map::from_map_data(m).ok())
        .and_then(|m| Array::<MapData, ChainDef>::try_from(m).ok())
        .and_then(|a| codec::chains_in(&a).ok())
        .map(|m| {
            m.into_iter()
                .map(|(id, d)| (codec::chain_from_kernel(&d).name, id))
                .collect()
        })
        .unwrap_or_default();
    resolve_with(rules, &chains, &|name| {
        nix::net::if_::if_nametoindex(name).ok()
    })
}

/// Longest sleep between two reads of the capture: new subflows and new
/// activity are seen at least this often.
const MAX_TICK: Duration = Duration::from_millis(100);
/// Shortest sleep: a deadline that has just passed is handled by the next
/// round at once, without spinning.
const MIN_SLEEP: Duration = Duration::from_micros(100);

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Starts the thread. `policy_rules` holds the `packet_copy` rules of the
/// policy in force (the daemon replaces them on every valid policy);
/// `status` receives every rule's counters after each round (the daemon
/// writes them to its state file).
pub fn spawn(
    layout: Layout,
    policy_rules: Arc<Mutex<Vec<PacketCopy>>>,
    status: Arc<Mutex<Vec<RuleStatus>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("packet-copy".into())
        .spawn(move || {
            let mut runner = Runner::new();
            let mut events = Events::default();
            let mut last: Vec<PacketCopy> = Vec::new();
            let mut r = Resolved::default();
            let mut resolved_at: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                let now_rules = policy_rules.lock().map(|r| r.clone()).unwrap_or_default();
                if now_rules.is_empty() {
                    if !last.is_empty() {
                        last.clear();
                        r = Resolved::default();
                        runner.round(&[], &[], &[], monotonic_ns());
                        if let Ok(mut s) = status.lock() {
                            *s = runner.status();
                        }
                    }
                    std::thread::sleep(MAX_TICK);
                    continue;
                }
                if now_rules != last || resolved_at.is_none_or(|t| t.elapsed() >= RESOLVE_EVERY) {
                    let (armed, unarmed) = resolve(&layout, &now_rules);
                    r = Resolved { armed, unarmed };
                    last = now_rules;
                    resolved_at = Some(Instant::now());
                }
                let subs = if r.armed.is_empty() {
                    Vec::new()
                } else {
                    capture::read(&layout)
                };
                let now = monotonic_ns();
                runner.round(&r.armed, &r.unarmed, &subs, now);
                if let Ok(mut s) = status.lock() {
                    *s = runner.status();
                }
                // Sleep to the earliest idle deadline still ahead.
                let mut sleep = MAX_TICK;
                for a in &r.armed {
                    if let When::SubflowIdle { idle_ns } = a.rule.when {
                        for (v, _) in subs
                            .iter()
                            .filter(|(v, _)| v.chain == a.rule.chain && v.ifindex == a.rule.ifindex)
                        {
                            let due = v.last_activity_ns.saturating_add(idle_ns);
                            if due > now {
                                sleep = sleep.min(Duration::from_nanos(due - now));
                            }
                        }
                    }
                }
                events.wait(&layout, sleep.max(MIN_SLEEP));
            }
        })
        .expect("spawning the packet-copy thread")
}

/// The capture's ring buffer (`SUBFLOW_EVENTS`: a subflow seen for the first
/// time, a subflow closed). The thread sleeps on it, so a new or closed
/// subflow starts a round at once instead of at the next tick; the events
/// only wake the thread (their content is in `SUBFLOWS`, read every round;
/// events the ring could not take are counted by the datapath as
/// `events_lost`).
#[derive(Default)]
struct Events {
    ring: Option<aya::maps::RingBuf<MapData>>,
}

impl Events {
    /// Waits up to `timeout` for an event, then drains the ring.
    fn wait(&mut self, layout: &Layout, timeout: Duration) {
        if self.ring.is_none() {
            // Opened lazily: the map exists once a policy with an egress
            // chain was applied.
            self.ring = MapData::from_pin(layout.map("SUBFLOW_EVENTS"))
                .ok()
                .and_then(|m| Map::from_map_data(m).ok())
                .and_then(|m| aya::maps::RingBuf::try_from(m).ok());
        }
        let Some(ring) = self.ring.as_mut() else {
            std::thread::sleep(timeout);
            return;
        };
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(ring),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(0, i32::MAX as u128) as i32;
        if ms == 0 {
            std::thread::sleep(timeout);
        } else {
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms) };
        }
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<SubflowEvent>() {
                // SAFETY: the datapath writes whole SubflowEvent records.
                let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SubflowEvent>()) };
                tracing::debug!(
                    kind = if ev.kind == SUBFLOW_EV_CLOSED {
                        "closed"
                    } else {
                        "new"
                    },
                    local_port = ev.key.local_port,
                    remote_port = ev.key.remote_port,
                    "subflow event"
                );
            }
        }
    }
}
