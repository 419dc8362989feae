//! `emptcp watch`: the node agent. It converges at start, then again on
//! every relevant change of the policy source, on every drift pass, when a
//! policy interface appears or changes, when a threshold decider flips, and
//! on SIGHUP. See docs/operations.md.
//!
//! # Contract
//! - Reconciles are serialized: one loop owns all state and runs one
//!   converge at a time; triggers that arrive meanwhile are coalesced into
//!   the next one.
//! - The policy is re-read (and hashed: every drop-in file, by name and
//!   content) after a quiet period of `--debounce` following the last
//!   relevant inotify event (at most `max(10 x debounce, 1 s)` after the
//!   first one of a burst); the kernel is touched only when the hash changed
//!   (or on a drift pass, a link event, a decider flip, SIGHUP).
//! - Last good state: a policy that does not parse or validate, or that
//!   this build cannot run, is reported (log with file:line:column, status
//!   file, metrics) and NOTHING is changed in the kernel; the daemon keeps
//!   converging (drift passes) to the newest valid policy. A plan error
//!   (e.g. a foreign program) changes nothing either and is retried.
//! - Drift: a converge that had to change the kernel although the policy
//!   and the decider decisions are those last converged counts as a drift
//!   correction.
//! - Stopping (SIGTERM/SIGINT) never interrupts a converge and never
//!   touches the datapath: the pins keep it running. A new daemon adopts
//!   the pinned state (its first plan is empty: no re-attach).
pub mod converge;
pub mod decider;
pub mod metrics;
pub mod netlink;
pub mod sdnotify;
pub mod source;
pub mod state_file;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use ::metrics::{counter, gauge, histogram};
use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::MissedTickBehavior,
};

use self::{
    converge::{Engine, Outcome, Report},
    decider::Deciders,
    metrics as m,
    netlink::LinkEvent,
    sdnotify::SdNotify,
    source::{FsSignal, FsWatch, Source},
    state_file::{
        Counters, DaemonState, ErrorDetail, ErrorReport, PolicyState, ReconcileState, now_unix,
    },
};
use crate::{
    desired::Desired, layout::Layout, netns, object::Object, observe, plan::PlanOptions,
    policy::PolicyErrors,
};

/// Everything `emptcp watch` is told.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub source: Source,
    pub bpffs_root: PathBuf,
    pub netns: Option<String>,
    pub drift_interval: Duration,
    pub debounce: Duration,
    pub metrics: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub plan: PlanOptions,
}

/// A converge running longer than this counts as hung: the systemd
/// watchdog pings and `/healthz` stop, so the daemon gets restarted. (A
/// cold load of the eBPF object is verified in about a second.)
const MAX_CONVERGE: Duration = Duration::from_secs(120);
/// Longest error text kept in logs and the status file (a verifier log can
/// be megabytes); its head and its tail (where the verifier's verdict is)
/// are kept.
const MAX_ERROR_CHARS: usize = 4096;
/// Retry delays after a failed converge: doubling from the first, capped
/// at the drift interval.
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// Runs the daemon until SIGTERM/SIGINT. Binds the metrics listener, then
/// enters `--netns` (before any thread exists: setns is per thread, and
/// every thread the runtime starts later inherits it), then runs the loop
/// on a current-thread runtime (blocking kernel work on its blocking pool).
pub fn run(opts: WatchOptions) -> anyhow::Result<()> {
    let listener = match opts.metrics {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the metrics listener on {addr}"))?,
        ),
        None => None,
    };
    let status_file = state_file::path_for(&opts.state_dir, &opts.bpffs_root);
    let _daemon_lock = match state_file::lock_daemon(&status_file) {
        Ok(l) => Some(l),
        Err(Some(msg)) => anyhow::bail!(msg),
        Err(None) => None, // reported when the status file cannot be written
    };
    // Before the namespace: an abstract notify socket is the manager's.
    let sd = SdNotify::from_env();
    if let Some(ns) = &opts.netns {
        netns::enter(ns)?;
    }
    let object = Arc::new(Object::load()?);
    // The recovery agent (stored ADD_ADDRs of pure downloads) runs beside
    // the reconcile loop, in the same network namespace (entered above).
    let agent_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let agent = crate::agent::spawn(
        crate::layout::Layout::new(&opts.bpffs_root),
        agent_stop.clone(),
    );
    let _stop_agent = StopOnDrop(agent_stop, Some(agent));
    // Packet copy (docs/packet-copy.md): the policy's packet_copy rules, fired from the
    // capture and sent through AF_XDP, by an async task on its own runtime
    // thread (copy/task.rs says why). Dropped after the daemon: stopped and
    // joined on the way out.
    let copy = crate::copy::task::CopyTask::spawn(crate::layout::Layout::new(&opts.bpffs_root))
        .context("starting the packet-copy task")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_name("emptcp-watch")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let mut d = Daemon::new(
            opts,
            sd,
            object,
            listener.as_ref().and_then(|l| l.local_addr().ok()),
        );
        d.copy = Some(copy);
        d.run(listener).await
    })
}

/// Fastest pace of status-file writes for packet-copy counters.
const COPY_STATUS_EVERY: Duration = Duration::from_millis(250);

/// The next change of the packet-copy status; pending forever without a
/// task.
async fn status_changed(
    rx: &mut Option<tokio::sync::watch::Receiver<Vec<crate::copy::runner::RuleStatus>>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// Stops and joins the recovery agent thread when the daemon returns.
struct StopOnDrop(
    Arc<std::sync::atomic::AtomicBool>,
    Option<std::thread::JoinHandle<()>>,
);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

/// The newest valid policy.
struct Target {
    hash: String,
    desired: Desired,
}

/// What a converge was converging to: policy hash + decider decisions.
type Key = (String, Vec<(String, bool)>);

/// Why the loop reconciles (several may be pending at once).
#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    startup: bool,
    file: bool,
    sighup: bool,
    drift: bool,
    link: bool,
    decider: bool,
    retry: bool,
}

impl Pending {
    fn any(&self) -> bool {
        self.startup
            || self.file
            || self.sighup
            || self.drift
            || self.link
            || self.decider
            || self.retry
    }
    fn reread(&self) -> bool {
        // The drift pass re-reads too: a safety net for lost inotify events
        // (the hash makes it free when nothing changed).
        self.startup || self.file || self.sighup || self.drift
    }
    /// Whether the kernel must be converged even if the policy is unchanged.
    fn kernel(&self) -> bool {
        self.startup || self.sighup || self.drift || self.link || self.decider || self.retry
    }
    fn label(&self) -> &'static str {
        if self.startup {
            "startup"
        } else if self.sighup {
            "sighup"
        } else if self.file {
            "file"
        } else if self.decider {
            "decider"
        } else if self.link {
            "link"
        } else if self.drift {
            "drift"
        } else {
            "retry"
        }
    }
}

/// A trailing-edge debounce: fires `quiet` after the newest event, but at
/// most `max` after the first of a burst.
struct Debounce {
    quiet: Duration,
    max: Duration,
    first: Option<Instant>,
    deadline: Option<Instant>,
}

impl Debounce {
    fn new(quiet: Duration) -> Debounce {
        Debounce {
            quiet,
            max: (quiet * 10).max(Duration::from_secs(1)),
            first: None,
            deadline: None,
        }
    }
    fn event(&mut self, now: Instant) {
        let first = *self.first.get_or_insert(now);
        self.deadline = Some((now + self.quiet).min(first + self.max));
    }
    fn take(&mut self) {
        self.first = None;
        self.deadline = None;
    }
    async fn wait(&self) {
        match self.deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    }
}

struct Daemon {
    opts: WatchOptions,
    engine: Arc<Engine>,
    state_path: PathBuf,
    metrics_addr: Option<SocketAddr>,
    started_at: f64,
    sd: SdNotify,
    health: Arc<m::Health>,
    read_hash: Option<String>,
    target: Option<Target>,
    /// The key of the newest converge that ended converged.
    converged_key: Option<Key>,
    applied_hash: Option<String>,
    policy_error: Option<ErrorReport>,
    last_reconcile: Option<ReconcileState>,
    last_success_at: Option<f64>,
    missing_interfaces: Vec<String>,
    notes: Vec<String>,
    counters: Counters,
    /// The packet-copy task: it gets the packet_copy rules of the policy
    /// in force and reports per rule.
    copy: Option<crate::copy::task::CopyTask>,
    deciders: Deciders,
    decider_rx: Option<mpsc::Receiver<decider::Sample>>,
    seeded: bool,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    info_hash: Option<String>,
    state_write_failed: bool,
}

fn short(hash: &str) -> &str {
    &hash[..12.min(hash.len())]
}

fn policy_details(errs: &PolicyErrors) -> Vec<ErrorDetail> {
    errs.iter()
        .map(|e| ErrorDetail {
            file: Some(e.file.display().to_string()),
            line: e.line,
            column: e.column,
            message: e.message.clone(),
            hint: e.hint.clone(),
        })
        .collect()
}

fn plain_details(msgs: &[String]) -> Vec<ErrorDetail> {
    msgs.iter()
        .map(|m| ErrorDetail {
            file: None,
            line: None,
            column: None,
            message: clip(m, MAX_ERROR_CHARS),
            hint: None,
        })
        .collect()
}

impl Daemon {
    fn new(
        opts: WatchOptions,
        sd: SdNotify,
        object: Arc<Object>,
        metrics_addr: Option<SocketAddr>,
    ) -> Daemon {
        let (dtx, drx) = mpsc::channel(64);
        let layout = Layout::new(&opts.bpffs_root);
        Daemon {
            state_path: state_file::path_for(&opts.state_dir, &opts.bpffs_root),
            engine: Arc::new(Engine {
                layout,
                object,
                plan: opts.plan,
            }),
            opts,
            metrics_addr,
            started_at: now_unix(),
            sd,
            health: Arc::new(m::Health::new(MAX_CONVERGE)),
            read_hash: None,
            target: None,
            converged_key: None,
            applied_hash: None,
            policy_error: None,
            last_reconcile: None,
            last_success_at: None,
            missing_interfaces: Vec::new(),
            notes: Vec::new(),
            counters: Counters::default(),
            copy: None,
            deciders: Deciders::new(dtx),
            decider_rx: Some(drx),
            seeded: false,
            retry_at: None,
            retry_delay: RETRY_FIRST,
            info_hash: None,
            state_write_failed: false,
        }
    }

    async fn run(&mut self, listener: Option<std::net::TcpListener>) -> anyhow::Result<()> {
        let o = &self.opts;
        tracing::info!(
            source = %o.source.path().display(),
            kind = o.source.kind(),
            bpffs_root = %o.bpffs_root.display(),
            netns = o.netns.as_deref().unwrap_or("-"),
            drift_interval = ?o.drift_interval,
            debounce = ?o.debounce,
            metrics = ?self.metrics_addr,
            status_file = %self.state_path.display(),
            "emptcp watch starting"
        );
        let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;

        if let Some(l) = listener {
            let handle = m::install()?;
            tokio::spawn(m::serve(
                l,
                handle,
                self.engine.layout.clone(),
                self.health.clone(),
            ));
        }
        // The watchdog pings from its own task while the loop is idle or in
        // a converge younger than MAX_CONVERGE; a hung converge (or a wedged
        // runtime) stops the pings.
        if let Some(every) = self.sd.watchdog_every() {
            let health = self.health.clone();
            let sd = self.sd.clone();
            tokio::spawn(async move {
                let mut i = tokio::time::interval(every);
                i.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    i.tick().await;
                    if health.alive() {
                        sd.watchdog();
                    }
                }
            });
        }

        // The watch starts before the first read, so no change is missed.
        let (fs_tx, mut fs_rx) = mpsc::channel::<FsSignal>(16);
        let mut fs_watch = self.start_watch(&fs_tx);
        let (link_tx, mut link_rx) = mpsc::channel::<LinkEvent>(256);
        let _link_task = match netlink::spawn(link_tx) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "no link monitor; new interfaces are noticed by the drift pass");
                None
            }
        };
        let mut decider_rx = self.decider_rx.take().context("decider channel")?;

        self.reconcile(Pending {
            startup: true,
            ..Default::default()
        })
        .await;
        self.health
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.sd.ready(&self.summary());

        let start = tokio::time::Instant::now();
        let mut drift =
            tokio::time::interval_at(start + self.opts.drift_interval, self.opts.drift_interval);
        drift.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut fs_debounce = Debounce::new(self.opts.debounce);
        let mut link_debounce = Debounce::new(self.opts.debounce);
        let mut pending = Pending::default();
        // The packet-copy task's counters reach the status file and the
        // metrics when they change, coalesced to one write per
        // COPY_STATUS_EVERY (a busy rule can fire a thousand times a second).
        let mut copy_status = self.copy.as_ref().map(|c| c.status.clone());
        let mut copy_due: Option<tokio::time::Instant> = None;
        let mut copy_written = tokio::time::Instant::now() - COPY_STATUS_EVERY;

        loop {
            let retry_at = self.retry_at;
            tokio::select! {
                biased;
                _ = sigterm.recv() => { tracing::info!("SIGTERM"); break; }
                _ = sigint.recv() => { tracing::info!("SIGINT"); break; }
                _ = sighup.recv() => {
                    tracing::info!("SIGHUP: re-reading the policy");
                    self.sd.reloading();
                    pending.sighup = true;
                }
                Some(sig) = fs_rx.recv() => {
                    if let FsSignal::Error(e) = &sig {
                        tracing::warn!(error = %e, "policy watch error; re-reading");
                    }
                    fs_debounce.event(Instant::now());
                    continue;
                }
                _ = fs_debounce.wait() => { fs_debounce.take(); pending.file = true; }
                Some(ev) = link_rx.recv() => {
                    if self.link_relevant(&ev) {
                        tracing::debug!(event = ?ev, "link event");
                        link_debounce.event(Instant::now());
                    }
                    continue;
                }
                _ = link_debounce.wait() => { link_debounce.take(); pending.link = true; }
                Some(s) = decider_rx.recv() => {
                    if self.deciders.on_sample(s) {
                        self.counters.decider_changes += 1;
                        counter!(m::DECIDER_CHANGES).increment(1);
                        pending.decider = true;
                    } else {
                        continue;
                    }
                }
                Ok(()) = status_changed(&mut copy_status) => {
                    copy_due.get_or_insert(copy_written + COPY_STATUS_EVERY);
                    continue;
                }
                _ = async {
                    match copy_due {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    copy_due = None;
                    copy_written = tokio::time::Instant::now();
                    if let Some(c) = &self.copy {
                        m::packet_copy(&c.status.borrow());
                    }
                    self.write_state(true);
                    continue;
                }
                _ = drift.tick() => {
                    pending.drift = true;
                    // Renew the watch if the path now names another
                    // directory (removed and re-created, symlink swapped).
                    if fs_watch.as_ref().is_none_or(|w| !w.still_valid(&self.opts.source)) {
                        tracing::info!(dir = %self.opts.source.watch_dir().display(), "renewing the policy watch");
                        drop(fs_watch.take());
                        fs_watch = self.start_watch(&fs_tx);
                    }
                }
                _ = async {
                    match retry_at {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                } => { self.retry_at = None; pending.retry = true; }
            }
            if pending.any() {
                let p = std::mem::take(&mut pending);
                let sighup = p.sighup;
                self.reconcile(p).await;
                if sighup {
                    self.sd.ready(&self.summary());
                }
            }
        }

        self.sd.stopping();
        tracing::info!("emptcp watch stopped; the datapath keeps running from its pins");
        self.write_state(false);
        drop(fs_watch);
        Ok(())
    }

    fn start_watch(&self, tx: &mpsc::Sender<FsSignal>) -> Option<FsWatch> {
        match FsWatch::start(&self.opts.source, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    dir = %self.opts.source.watch_dir().display(),
                    error = %e,
                    "cannot watch the policy directory; retrying at every drift pass"
                );
                None
            }
        }
    }

    fn link_relevant(&self, ev: &LinkEvent) -> bool {
        match ev {
            LinkEvent::Overflow => true,
            LinkEvent::Link { name, .. } => self
                .target
                .as_ref()
                .is_some_and(|t| t.desired.interfaces.contains_key(name)),
        }
    }

    /// Reads the policy; true when the target changed to a new valid
    /// policy. Records a policy error when the read is invalid.
    async fn read_policy(&mut self, force: bool) -> bool {
        let src = self.opts.source.clone();
        let read = match tokio::task::spawn_blocking(move || src.read()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "policy read task failed");
                return false;
            }
        };
        let changed = self.read_hash.as_deref() != Some(read.hash.as_str());
        counter!(m::POLICY_READS, "changed" => if changed { "true" } else { "false" }).increment(1);
        if !changed && !force {
            return false;
        }
        self.read_hash = Some(read.hash.clone());
        let (kind, message, details) = match read.result {
            Err(errs) => (
                "policy",
                format!(
                    "the policy is invalid ({} error{})",
                    errs.len(),
                    if errs.len() == 1 { "" } else { "s" }
                ),
                policy_details(&errs),
            ),
            Ok(policy) => match Desired::new(&policy, &self.engine.object) {
                Err(errs) => (
                    "unsupported",
                    "the policy cannot be run by this build".to_string(),
                    plain_details(&errs.iter().map(|e| e.to_string()).collect::<Vec<_>>()),
                ),
                Ok(desired) => {
                    let new = self.target.as_ref().is_none_or(|t| t.hash != read.hash);
                    // Valid again (possibly the very last good content):
                    // a pass is due to publish it.
                    let recovered = self.policy_error.take().is_some();
                    if recovered {
                        tracing::info!(hash = short(&read.hash), "the policy is valid again");
                    }
                    if new {
                        tracing::info!(
                            hash = short(&read.hash),
                            interfaces = policy.interfaces.len(),
                            chains = policy.chains.len(),
                            "policy changed"
                        );
                    }
                    self.deciders.update(&policy);
                    if let Some(c) = &self.copy {
                        c.set_rules(&policy.packet_copy);
                    }
                    self.target = Some(Target {
                        hash: read.hash,
                        desired,
                    });
                    return new || recovered;
                }
            },
        };
        for d in &details {
            tracing::error!(
                file = d.file.as_deref().unwrap_or("-"),
                line = d.line,
                column = d.column,
                hint = d.hint.as_deref().unwrap_or(""),
                "{}{}",
                match (&d.file, d.line, d.column) {
                    (Some(f), Some(l), Some(c)) => format!("{f}:{l}:{c}: "),
                    (Some(f), _, _) => format!("{f}: "),
                    _ => String::new(),
                },
                d.message
            );
        }
        tracing::error!(
            hash = short(&read.hash),
            keeping = self
                .target
                .as_ref()
                .map(|t| short(&t.hash))
                .unwrap_or("nothing"),
            "{message}; the datapath is left as it is"
        );
        self.counters.policy_errors += 1;
        counter!(m::POLICY_ERRORS).increment(1);
        self.policy_error = Some(ErrorReport {
            kind: kind.into(),
            message,
            details,
            at: now_unix(),
        });
        false
    }

    async fn reconcile(&mut self, p: Pending) {
        let started = Instant::now();
        let mut policy_changed = false;
        let mut read_failed = false;
        if p.reread() {
            let before = self.counters.policy_errors;
            policy_changed = self.read_policy(p.sighup).await;
            read_failed = self.counters.policy_errors > before;
        }
        if !policy_changed && !p.kernel() {
            if read_failed {
                self.finish_without_kernel(p, "policy_error", self.policy_error.clone(), started);
            }
            return; // nothing changed: an event that did not change the hash
        }
        let Some(target) = &self.target else {
            let outcome = if self.policy_error.is_some() {
                "policy_error"
            } else {
                "no_policy"
            };
            self.finish_without_kernel(p, outcome, self.policy_error.clone(), started);
            return;
        };
        if !self.seeded {
            self.seeded = true;
            if !self.deciders.fingerprint().is_empty() {
                let layout = self.engine.layout.clone();
                if let Ok(Ok(o)) =
                    tokio::task::spawn_blocking(move || observe::observe(&layout)).await
                {
                    self.deciders.seed(&o);
                }
            }
        }
        let desired = self.deciders.apply(&target.desired);
        let key: Key = (target.hash.clone(), self.deciders.fingerprint());
        let hash = target.hash.clone();
        let engine = self.engine.clone();
        self.health.busy(true);
        let report =
            tokio::task::spawn_blocking(move || converge::converge(&engine, &desired)).await;
        self.health.busy(false);
        // The applied chains and the interfaces may have changed: the
        // packet-copy rules are resolved again now, not at their next
        // periodic resolve (a rule whose chain or interface went is
        // disarmed by this reconcile).
        if let Some(c) = &self.copy {
            c.resolve_now();
        }
        let report = match report {
            Ok(r) => r,
            Err(e) => Report {
                outcome: Outcome::ApplyError(format!("converge task failed: {e}")),
                steps: Vec::new(),
                converged: false,
                remaining: 0,
                notes: Vec::new(),
                missing_interfaces: Vec::new(),
                duration: started.elapsed(),
            },
        };
        self.after_converge(p, key, hash, policy_changed, report, started);
    }

    fn after_converge(
        &mut self,
        p: Pending,
        key: Key,
        hash: String,
        policy_changed: bool,
        r: Report,
        started: Instant,
    ) {
        let label = r.outcome.label();
        let trigger = p.label();
        let n = r.steps.len();
        // Drift: the kernel had to change although the policy, the decider
        // decisions and the set of present interfaces are those of the last
        // converge (an interface that appears or goes is not drift).
        let drift = matches!(r.outcome, Outcome::Applied | Outcome::ApplyError(_))
            && n > 0
            && !policy_changed
            && self.converged_key.as_ref() == Some(&key)
            && r.missing_interfaces == self.missing_interfaces;
        match &r.outcome {
            Outcome::Applied | Outcome::ApplyError(_) => {
                for (i, s) in r.steps.iter().enumerate() {
                    tracing::info!(step = i + 1, of = n, "{s}");
                }
            }
            _ => {}
        }
        if drift {
            self.counters.drift_corrections += 1;
            counter!(m::DRIFT).increment(1);
            tracing::warn!(
                steps = n,
                trigger,
                "drift corrected: the kernel had diverged from the policy"
            );
        }
        let error = match &r.outcome {
            Outcome::Applied | Outcome::Noop => None,
            Outcome::PlanError(msgs) => Some(ErrorReport {
                kind: "plan".into(),
                message: "cannot plan; nothing was changed".into(),
                details: plain_details(msgs),
                at: now_unix(),
            }),
            Outcome::ObserveError(e) => Some(report_of("observe", e)),
            Outcome::ApplyError(e) => Some(report_of("apply", e)),
            Outcome::LockBusy(e) => Some(report_of("lock", e)),
            Outcome::LockError(e) => Some(report_of("lock", e)),
        };
        if let Some(e) = &error {
            let details: Vec<&str> = e.details.iter().map(|d| d.message.as_str()).collect();
            let text = if details.len() == 1 {
                details[0].to_string()
            } else {
                format!("{}: {}", e.message, details.join("; "))
            };
            // A persistent error is logged once, its retries at debug.
            let repeated = self
                .last_reconcile
                .as_ref()
                .and_then(|l| l.error.as_ref())
                .is_some_and(|prev| prev.details == e.details);
            if repeated {
                tracing::debug!(outcome = label, trigger, "reconcile failed again: {text}");
            } else {
                tracing::error!(
                    outcome = label,
                    trigger,
                    "reconcile failed, retrying: {text}"
                );
            }
        }
        if !r.missing_interfaces.is_empty() && r.missing_interfaces != self.missing_interfaces {
            tracing::warn!(interfaces = ?r.missing_interfaces, "policy interfaces do not exist (yet); attached when they appear");
        }
        let converged = r.converged && error.is_none();
        if converged {
            if r.remaining == 0 && (n > 0 || self.converged_key.as_ref() != Some(&key)) {
                tracing::info!(
                    hash = short(&hash),
                    trigger,
                    steps = n,
                    ms = format!("{:.1}", r.duration.as_secs_f64() * 1e3),
                    "converged"
                );
            }
            self.converged_key = Some(key);
            self.applied_hash = Some(hash.clone());
            self.last_success_at = Some(now_unix());
            self.retry_at = None;
            self.retry_delay = RETRY_FIRST;
        } else {
            if matches!(r.outcome, Outcome::Applied) {
                tracing::warn!(
                    remaining = r.remaining,
                    "apply finished but a second plan is not empty; retrying"
                );
            }
            let delay = if matches!(r.outcome, Outcome::LockBusy(_)) {
                RETRY_FIRST
            } else {
                let d = self.retry_delay;
                self.retry_delay = (d * 2).min(self.opts.drift_interval);
                d
            };
            self.retry_at = Some(Instant::now() + delay);
        }
        self.missing_interfaces = r.missing_interfaces;
        self.notes = r.notes;
        histogram!(m::RECONCILE_SECONDS).record(r.duration.as_secs_f64());
        self.record(ReconcileState {
            at: now_unix(),
            trigger: trigger.into(),
            outcome: label.into(),
            steps: n,
            duration_ms: (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            converged,
            error,
        });
    }

    fn finish_without_kernel(
        &mut self,
        p: Pending,
        outcome: &str,
        error: Option<ErrorReport>,
        started: Instant,
    ) {
        let converged = self.last_reconcile.as_ref().is_some_and(|l| l.converged);
        self.record(ReconcileState {
            at: now_unix(),
            trigger: p.label().into(),
            outcome: outcome.into(),
            steps: 0,
            duration_ms: (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            converged,
            error,
        });
    }

    /// Counts the reconcile, publishes metrics and the status file.
    fn record(&mut self, r: ReconcileState) {
        *self
            .counters
            .reconciles
            .entry(r.outcome.clone())
            .or_default() += 1;
        counter!(m::RECONCILES, "outcome" => r.outcome.clone()).increment(1);
        gauge!(m::LAST_RECONCILE).set(r.at);
        if let Some(t) = self.last_success_at {
            gauge!(m::LAST_SUCCESS).set(t);
        }
        gauge!(m::CONVERGED).set(if r.converged { 1.0 } else { 0.0 });
        gauge!(m::POLICY_VALID).set(if self.policy_error.is_some() {
            0.0
        } else {
            1.0
        });
        gauge!(m::MISSING_IFACES).set(self.missing_interfaces.len() as f64);
        let target_hash = self.target.as_ref().map(|t| short(&t.hash).to_string());
        if target_hash != self.info_hash {
            if let Some(old) = self.info_hash.take() {
                gauge!(m::POLICY_INFO, "hash" => old).set(0.0);
            }
            if let Some(new) = &target_hash {
                gauge!(m::POLICY_INFO, "hash" => new.clone()).set(1.0);
            }
            self.info_hash = target_hash;
        }
        for s in self.deciders.states() {
            gauge!(m::DECIDER_BUSY, "chain" => s.chain.clone()).set(if s.busy { 1.0 } else { 0.0 });
            gauge!(m::DECIDER_RECOVER_AT, "chain" => s.chain.clone())
                .set(s.recover_at_in_force as f64);
        }
        self.last_reconcile = Some(r);
        self.write_state(true);
        self.sd.status(&self.summary());
    }

    /// One line for `systemctl status`.
    fn summary(&self) -> String {
        let mut s = match (&self.policy_error, &self.target) {
            (Some(e), keep) => {
                let first = e
                    .details
                    .first()
                    .map(|d| match (&d.file, d.line, d.column) {
                        (Some(f), Some(l), Some(c)) => format!("{f}:{l}:{c}: {}", d.message),
                        _ => d.message.clone(),
                    });
                format!(
                    "policy error: {}; serving {}",
                    first.unwrap_or_else(|| e.message.clone()),
                    keep.as_ref().map(|t| short(&t.hash)).unwrap_or("nothing")
                )
            }
            (None, Some(t)) => format!(
                "policy {} ({} interfaces, {} chains)",
                short(&t.hash),
                t.desired.interfaces.len(),
                t.desired.chains.len()
            ),
            (None, None) => "no policy".to_string(),
        };
        if let Some(r) = &self.last_reconcile {
            s.push_str(&format!(
                "; last reconcile {} ({})",
                r.outcome,
                if r.converged {
                    "converged"
                } else {
                    "NOT converged"
                }
            ));
        }
        if !self.missing_interfaces.is_empty() {
            s.push_str(&format!(
                "; missing: {}",
                self.missing_interfaces.join(", ")
            ));
        }
        s
    }

    fn write_state(&mut self, running: bool) {
        let state = DaemonState {
            version: state_file::STATE_VERSION,
            pid: std::process::id(),
            running,
            started_at: self.started_at,
            updated_at: now_unix(),
            bpffs_root: self.opts.bpffs_root.display().to_string(),
            netns: self.opts.netns.clone(),
            metrics_addr: self.metrics_addr.map(|a| a.to_string()),
            drift_interval_ms: self.opts.drift_interval.as_millis() as u64,
            debounce_ms: self.opts.debounce.as_millis() as u64,
            policy: PolicyState {
                kind: self.opts.source.kind().into(),
                path: self.opts.source.path().display().to_string(),
                read_hash: self.read_hash.clone(),
                target_hash: self.target.as_ref().map(|t| t.hash.clone()),
                applied_hash: self.applied_hash.clone(),
                valid: self.policy_error.is_none(),
                error: self.policy_error.clone(),
            },
            last_reconcile: self.last_reconcile.clone(),
            last_success_at: self.last_success_at,
            missing_interfaces: self.missing_interfaces.clone(),
            notes: self.notes.clone(),
            deciders: self.deciders.states(),
            packet_copy: self
                .copy
                .as_ref()
                .map(|c| c.status.borrow().clone())
                .unwrap_or_default(),
            counters: self.counters.clone(),
        };
        match state_file::write(&self.state_path, &state) {
            Ok(()) => self.state_write_failed = false,
            Err(e) => {
                if !self.state_write_failed {
                    tracing::warn!(path = %self.state_path.display(), error = %e, "cannot write the status file (`emptcp status` will not show the daemon)");
                }
                self.state_write_failed = true;
            }
        }
    }
}

/// `text` cut to about `max` characters: its head and its tail.
fn clip(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max / 4).collect();
    let tail: String = text.chars().skip(n - max * 3 / 4).collect();
    format!(
        "{head}\n[... {} characters elided ...]\n{tail}",
        n - head.chars().count() - tail.chars().count()
    )
}

fn report_of(kind: &str, message: &str) -> ErrorReport {
    let first = message.lines().next().unwrap_or(message);
    ErrorReport {
        kind: kind.into(),
        message: clip(first, 300),
        details: plain_details(&[clip(message, MAX_ERROR_CHARS)]),
        at: now_unix(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debounce_is_trailing_and_capped() {
        let mut d = Debounce::new(Duration::from_millis(100));
        let t0 = Instant::now();
        d.event(t0);
        assert_eq!(d.deadline, Some(t0 + Duration::from_millis(100)));
        d.event(t0 + Duration::from_millis(50));
        assert_eq!(d.deadline, Some(t0 + Duration::from_millis(150)));
        // A continuous burst still fires within max (1 s) of its first event.
        d.event(t0 + Duration::from_millis(990));
        assert_eq!(d.deadline, Some(t0 + Duration::from_secs(1)));
        d.take();
        assert_eq!(d.deadline, None);
    }

    #[test]
    fn pending_labels_and_needs() {
        let p = Pending {
            file: true,
            ..Default::default()
        };
        assert!(p.reread() && !p.kernel());
        assert_eq!(p.label(), "file");
        let p = Pending {
            link: true,
            drift: true,
            ..Default::default()
        };
        assert!(p.kernel());
        assert_eq!(p.label(), "link");
        assert!(!Pending::default().any());
    }
}
