//! The packet-copy task of `emptcp watch`: an async tokio task that waits
//! on the capture's ring buffer (`SUBFLOW_EVENTS`, through `AsyncFd`), on
//! the next idle deadline and on policy changes, then runs a [`Runner`]
//! round. It sleeps as long as nothing can fire: no wake-up at all without
//! rules, none between deadlines with only `subflow_idle` rules.
//!
//! It runs on its own current-thread runtime, in its own thread: a round
//! makes blocking syscalls (map reads, the AF_XDP send and its completion
//! wait) that must delay neither the reconcile loop (whose `apply` can
//! take hundreds of milliseconds of verifier time on the other runtime),
//! nor a trigger by the reconcile loop's work. The daemon talks to it
//! through two `watch` channels: rules in, per-rule status out.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, Map, MapData, RingBuf};
use emptcp_common::{ChainDef, IFACE_RAW_IP, IfaceChains, SUBFLOW_EV_CLOSED, SubflowEvent};
use tokio::{io::unix::AsyncFd, sync::watch};

use super::{
    capture::{Capture, monotonic_ns},
    forge::Captured,
    rules::{self, Armed, Unarmed, resolve_with},
    runner::{RuleStatus, Runner},
    trigger::{SubflowView, When},
};
use crate::{codec, layout::Layout, policy::PacketCopy};

/// How often the rules are resolved again (chain ids from the applied
/// `CHAINS` map, interfaces by name): a rule whose interface or chain
/// vanished is disarmed within this time, and re-armed when it is back.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);

/// A subflow whose SYN woke a round (its `NEW` event) has no view until
/// the handshake completes: rounds follow every `HANDSHAKE_RECHECK` while
/// one seen within `HANDSHAKE_WINDOW` is still in its handshake (one that
/// never completes stops the re-checks after the window). On a fast host
/// the handshake is over before the first round; an emulated guest took
/// longer than a whole short connection's life until the next resolve.
const HANDSHAKE_RECHECK: Duration = Duration::from_millis(20);
const HANDSHAKE_WINDOW: Duration = Duration::from_secs(3);

/// How often the connection sizes are read while a `flow_bytes_at` rule is
/// armed (sizes move without a ring event).
const BYTES_TICK: Duration = Duration::from_millis(100);

/// While the capture or the applied chains cannot be read (an apply is
/// replacing the maps, or the root is being rebuilt), the next attempt.
const UNREADABLE_RETRY: Duration = Duration::from_millis(100);

/// The rules resolved against what is applied now; `None` when the applied
/// chains cannot be read (which is not "no chain applied").
fn resolve(layout: &Layout, rules: &[PacketCopy]) -> Option<(Vec<Armed>, Vec<Unarmed>)> {
    Some(resolve_against(layout, rules, &applied_chains(layout)?))
}

/// The chain names of the applied `CHAINS` map, with their ids.
fn applied_chains(layout: &Layout) -> Option<BTreeMap<String, u32>> {
    let m = MapData::from_pin(layout.map("CHAINS")).ok()?;
    let a = Array::<MapData, ChainDef>::try_from(Map::from_map_data(m).ok()?).ok()?;
    let chains = codec::chains_in(&a).ok()?;
    Some(
        chains
            .into_iter()
            .map(|(id, d)| (codec::chain_from_kernel(&d).name, id))
            .collect(),
    )
}

fn resolve_against(
    layout: &Layout,
    rules: &[PacketCopy],
    chains: &BTreeMap<String, u32>,
) -> (Vec<Armed>, Vec<Unarmed>) {
    let (armed, unarmed) = resolve_with(rules, chains, &|name| {
        let ifindex = nix::net::if_::if_nametoindex(name).ok()?;
        Some((ifindex, raw_ip(layout, ifindex)))
    });
    // A rule that could never send is not armed, and says why (status, the
    // log), instead of counting a failure per firing.
    match (armed.is_empty(), crate::xsk::unavailable()) {
        (false, Some(reason)) => rules::unarm(armed, unarmed, &reason),
        _ => (armed, unarmed),
    }
}

/// What a round decides on: the captured subflows (and whether one is in
/// its handshake), or `None` when armed rules cannot see them. A round on
/// an empty list instead would take every watched subflow for closed
/// (counted "closed before firing") and forget what fired (sent again once
/// the capture reads again).
fn round_view(
    capture: Option<&mut Capture>,
    armed: &[Armed],
    now: u64,
) -> Option<(Vec<(SubflowView, Captured)>, bool)> {
    if armed.is_empty() {
        return Some((Vec::new(), false));
    }
    let since = now.saturating_sub(HANDSHAKE_WINDOW.as_nanos() as u64);
    // Only a rule on the connection's size needs it from FLOWS.
    let sized: Vec<u32> = armed
        .iter()
        .filter(|a| matches!(a.rule.when, When::FlowBytesAt { .. }))
        .map(|a| a.rule.chain)
        .collect();
    match capture?.read_at(since, now, |chain| sized.contains(&chain)) {
        Ok(view) => Some(view),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the capture; next round in {UNREADABLE_RETRY:?}");
            None
        }
    }
}

/// Whether the datapath parses `ifindex` as raw IP: the `IFACE_RAW_IP`
/// flag plan wrote into its IFACES or EGRESS_IFACES entry (a rule's chain
/// runs on the interface, so one of them holds it).
fn raw_ip(layout: &Layout, ifindex: u32) -> bool {
    ["IFACES", "EGRESS_IFACES"].iter().any(|name| {
        MapData::from_pin(layout.map(name))
            .ok()
            .and_then(|m| Map::from_map_data(m).ok())
            .and_then(|m| HashMap::<MapData, u32, IfaceChains>::try_from(m).ok())
            .and_then(|h| h.get(&ifindex, 0).ok())
            .is_some_and(|v| v.flags & IFACE_RAW_IP != 0)
    })
}

/// The daemon's end of the task: set the rules, read the status. Dropping
/// it stops the task and joins its thread.
pub struct CopyTask {
    rules: Option<watch::Sender<Vec<PacketCopy>>>,
    /// Every rule's counters, updated after each round that changed them.
    pub status: watch::Receiver<Vec<RuleStatus>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CopyTask {
    /// Starts the task for the datapath pinned under `layout`. The caller
    /// must already be in the daemon's network namespace (the thread
    /// inherits it).
    pub fn spawn(layout: Layout) -> std::io::Result<CopyTask> {
        let (rules_tx, rules_rx) = watch::channel(Vec::new());
        let (status_tx, status_rx) = watch::channel(Vec::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("packet-copy".into())
            .spawn(move || rt.block_on(run(layout, rules_rx, status_tx)))?;
        Ok(CopyTask {
            rules: Some(rules_tx),
            status: status_rx,
            thread: Some(thread),
        })
    }

    /// The `packet_copy` rules of the policy now in force.
    pub fn set_rules(&self, rules: &[PacketCopy]) {
        if let Some(tx) = &self.rules {
            tx.send_if_modified(|r| {
                if r.as_slice() == rules {
                    return false;
                }
                *r = rules.to_vec();
                true
            });
        }
    }
}

impl CopyTask {
    /// Resolves the rules again at once (after a reconcile changed what is
    /// applied), instead of at the next periodic resolve.
    pub fn resolve_now(&self) {
        if let Some(tx) = &self.rules {
            // Marks the value changed without changing it: the task wakes
            // and resolves.
            tx.send_modify(|_| {});
        }
    }
}

impl Drop for CopyTask {
    fn drop(&mut self) {
        // A closed rules channel is the task's signal to return.
        drop(self.rules.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The task: until the rules channel closes.
async fn run(
    layout: Layout,
    mut rules_rx: watch::Receiver<Vec<PacketCopy>>,
    status_tx: watch::Sender<Vec<RuleStatus>>,
) {
    let mut runner = Runner::new();
    let mut ring: Option<Ring> = None;
    let mut capture: Option<Capture> = None;
    let mut armed: Vec<Armed> = Vec::new();
    let mut unarmed: Vec<Unarmed> = Vec::new();
    let mut resolved_at: Option<Instant> = None;
    let mut lost = LostEvents::default();
    let mut resolve_now = true;
    let publish = |runner: &Runner| {
        let now = runner.status();
        status_tx.send_if_modified(|s| {
            if *s == now {
                return false;
            }
            *s = now;
            true
        });
    };
    loop {
        let rules = rules_rx.borrow_and_update().clone();
        if rules.is_empty() {
            // Nothing can fire: forget everything and sleep until rules
            // come (or the daemon stops).
            if !armed.is_empty() || !unarmed.is_empty() {
                (armed, unarmed) = (Vec::new(), Vec::new());
                runner.round(&[], &[], &[], &mut |_| None, monotonic_ns());
                publish(&runner);
            }
            (ring, capture, resolved_at) = (None, None, None);
            if rules_rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let mut chains_unreadable = false;
        if std::mem::take(&mut resolve_now)
            || resolved_at.is_none_or(|t| t.elapsed() >= RESOLVE_EVERY)
        {
            match resolve(&layout, &rules) {
                Some(r) => (armed, unarmed) = r,
                // Nothing armed, nothing to forget: every rule unarmed, with
                // its reason (no chain applied).
                None if armed.is_empty() => {
                    (armed, unarmed) = resolve_against(&layout, &rules, &BTreeMap::new())
                }
                // The rules stay armed as they were; no round until the
                // chains read again.
                None => chains_unreadable = true,
            }
            // The maps may have been replaced by an apply: re-open them.
            capture = Capture::open(&layout);
            ring = pinned_ring(&layout, ring.take());
            resolved_at = Some(Instant::now());
            lost.check(&layout);
        }
        let now = monotonic_ns();
        let view = round_view(capture.as_mut(), &armed, now).filter(|_| !chains_unreadable);
        let Some((subs, handshaking)) = view else {
            resolve_now = true;
            tokio::select! {
                changed = rules_rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(UNREADABLE_RETRY) => {}
            }
            continue;
        };
        runner.round(
            &armed,
            &unarmed,
            &subs,
            &mut |key| capture.as_ref().and_then(|c| c.get(key)),
            now,
        );
        publish(&runner);

        // Sleep until the next thing that can make a rule fire: the
        // earliest idle deadline ahead, a size tick, the next resolve.
        let mut sleep =
            RESOLVE_EVERY.saturating_sub(resolved_at.map_or(Duration::ZERO, |t| t.elapsed()));
        if handshaking {
            sleep = sleep.min(HANDSHAKE_RECHECK);
        }
        for a in &armed {
            let Some(idle_ns) = a.rule.when.idle_ns() else {
                sleep = sleep.min(BYTES_TICK);
                continue;
            };
            // other_subflows_idle watches subflows of any chain and
            // interface (the connection's others): each one's deadline.
            let others = matches!(a.rule.when, When::OtherSubflowsIdle { .. });
            for (v, _) in subs
                .iter()
                .filter(|(v, _)| others || (v.chain == a.rule.chain && v.ifindex == a.rule.ifindex))
            {
                let due = v.last_activity_ns.saturating_add(idle_ns);
                if due > now {
                    sleep = sleep.min(Duration::from_nanos(due - now));
                }
            }
        }
        tokio::select! {
            changed = rules_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                // New rules, or a reconcile changed what is applied.
                resolve_now = true;
            }
            // A subflow appeared or closed: a round at once.
            drained = events(ring.as_mut().map(|(fd, _)| fd)) => {
                if drained.is_err() {
                    // The map was replaced or removed: re-open it at the
                    // next resolve.
                    ring = None;
                }
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Ring events the datapath could not queue (`events_lost`, the ring was
/// full). Nothing is lost for the triggers (they read `SUBFLOWS`, not the
/// events); only the wake-up for a new subflow comes up to a resolve
/// period late. Logged when the count grows, at most once per resolve.
#[derive(Default)]
struct LostEvents {
    seen: Option<u64>,
}

impl LostEvents {
    fn check(&mut self, layout: &Layout) {
        let Some(now) = crate::counters::egress_counters(layout)
            .get("events_lost")
            .copied()
        else {
            return;
        };
        if let Some(before) = self.seen
            && now > before
        {
            tracing::warn!(
                lost = now - before,
                total = now,
                "SUBFLOW_EVENTS ring buffer was full: subflow events lost (triggers still read SUBFLOWS; new subflows are seen up to 1 s late)"
            );
        }
        self.seen = Some(now);
    }
}

/// The capture's ring buffer, watched by the runtime, and its map id.
type Ring = (AsyncFd<RingBuf<MapData>>, u32);

/// The ring pinned now: `current` when it is still that map (an apply that
/// replaced the object pins a new one), else the new one opened. `None`
/// while no policy with an egress chain was applied.
fn pinned_ring(layout: &Layout, current: Option<Ring>) -> Option<Ring> {
    let m = MapData::from_pin(layout.map("SUBFLOW_EVENTS")).ok()?;
    let id = m.info().ok()?.id();
    if let Some(c) = current.filter(|(_, have)| *have == id) {
        return Some(c);
    }
    let ring = RingBuf::try_from(Map::from_map_data(m).ok()?).ok()?;
    // SAFETY: the RingBuf owns its fd (and its mappings) and keeps it open
    // while the AsyncFd owns the RingBuf: nothing else closes or replaces
    // that descriptor.
    unsafe { AsyncFd::register(ring) }
        .map(|fd| (fd, id))
        .inspect_err(|e| tracing::warn!(error = %e, "cannot watch the SUBFLOW_EVENTS ring buffer; packet copy falls back to its deadlines"))
        .ok()
}

/// Waits for ring events and drains them. The events only wake the task:
/// their content is in `SUBFLOWS`, which every round reads (and events the
/// ring could not take are counted by the datapath as `events_lost`).
async fn events(ring: Option<&mut AsyncFd<RingBuf<MapData>>>) -> std::io::Result<()> {
    let Some(ring) = ring else {
        return std::future::pending().await;
    };
    let mut guard = ring.readable_mut().await?;
    let ring = guard.get_inner_mut();
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
    // Drained: wait for the next epoll edge.
    guard.clear_ready();
    Ok(())
}
