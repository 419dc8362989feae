//! systemd integration (`Type=notify`): READY=1 after the first converge
//! attempt, STATUS= lines for `systemctl status`, RELOADING=1 on SIGHUP,
//! STOPPING=1 on shutdown, and WATCHDOG=1 at half of `WatchdogSec` from the
//! reconcile loop itself (a loop stuck in a reconcile stops the pings and
//! systemd restarts the daemon). Without NOTIFY_SOCKET every call is a no-op.
//!
//! The daemon never waits for its service manager. A datagram to a unix
//! socket whose reader is behind blocks the sender (the receiver queue holds
//! `net.unix.max_dgram_qlen` datagrams, 10 by default); sent from the
//! reconcile loop's single-threaded runtime, one such send stalled the
//! whole daemon, reconciles included, until the manager read again. So
//! messages go through a bounded queue to a sender thread of their own,
//! which alone may block: the loop only enqueues, in order, and drops (and
//! counts) what does not fit while the manager does not read. Watchdog
//! pings are coalesced (at most one waits), so a manager that is behind
//! cannot have the queue filled with pings when READY=1 comes.
use std::{
    ffi::OsString,
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    time::Duration,
};

use sd_notify::NotifyState;

/// Messages waiting for the sender thread: ~6 s of watchdog pings at the
/// shortest interval systemd allows a ping every 200 ms, plus the state
/// messages around them.
const QUEUE: usize = 32;

/// How long `stopping` waits for its message to reach the manager before
/// the daemon exits anyway.
const STOP_FLUSH: Duration = Duration::from_secs(1);

/// One message for the sender thread; `done` is told once it was sent (or
/// failed).
struct Message {
    text: String,
    done: Option<SyncSender<()>>,
    /// A watchdog ping: clears `SdNotify::ping_waiting` when taken.
    ping: bool,
}

#[derive(Clone)]
pub struct SdNotify {
    watchdog: Option<Duration>,
    tx: Option<SyncSender<Message>>,
    dropped: Arc<AtomicU64>,
    /// A ping is queued and not yet taken by the sender thread.
    ping_waiting: Arc<AtomicBool>,
}

impl SdNotify {
    /// Reads NOTIFY_SOCKET and WATCHDOG_USEC and connects. Call it before
    /// entering another network namespace: an abstract socket (`@name`) is
    /// only reachable from the manager's.
    pub fn from_env() -> SdNotify {
        let ping_waiting = Arc::new(AtomicBool::new(false));
        let tx = std::env::var_os("NOTIFY_SOCKET").and_then(|path| match connect(&path) {
            Ok(sock) => Some(spawn_sender(sock, path, ping_waiting.clone())),
            Err(e) => {
                tracing::warn!(socket = ?path, error = %e, "cannot reach the service manager's notify socket");
                None
            }
        });
        SdNotify {
            watchdog: sd_notify::watchdog_enabled(),
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            ping_waiting,
        }
    }

    /// How often to ping the watchdog: half its timeout (None: disabled).
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
            .map(|d| (d / 2).max(Duration::from_millis(10)))
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        self.enqueue(states, None, false);
    }

    fn enqueue(&self, states: &[NotifyState<'_>], done: Option<SyncSender<()>>, ping: bool) {
        let Some(tx) = &self.tx else { return };
        let text = states.iter().map(|s| format!("{s}\n")).collect();
        match tx.try_send(Message { text, done, ping }) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                if ping {
                    self.ping_waiting.store(false, Ordering::Relaxed);
                }
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(message = %m.text.trim_end(), dropped = n, "service manager not reading; notification dropped");
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// WATCHDOG=1, unless one is still waiting to be sent: the manager
    /// then gets one ping when it reads again, not a backlog of them.
    pub fn watchdog(&self) {
        if self.tx.is_none() || self.ping_waiting.swap(true, Ordering::Relaxed) {
            return;
        }
        self.enqueue(&[NotifyState::Watchdog], None, true);
    }

    /// STOPPING=1, waiting up to [`STOP_FLUSH`] for it to be sent: the
    /// process exits next, and with it the sender thread.
    pub fn stopping(&self) {
        let (done, sent) = mpsc::sync_channel(1);
        self.enqueue(
            &[NotifyState::Stopping, NotifyState::Status("stopping")],
            Some(done),
            false,
        );
        let _ = sent.recv_timeout(STOP_FLUSH);
    }
}

/// A datagram socket connected to NOTIFY_SOCKET: a path, or `@name` for an
/// abstract socket.
fn connect(path: &OsString) -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        sock.connect_addr(&SocketAddr::from_abstract_name(name)?)?;
    } else {
        sock.connect(path)?;
    }
    Ok(sock)
}

/// Starts the thread that sends the queued messages, blocking as long as
/// the manager's queue is full. A manager that went away and came back
/// (systemd re-executed) is reconnected to once per message.
fn spawn_sender(
    sock: UnixDatagram,
    path: OsString,
    ping_waiting: Arc<AtomicBool>,
) -> SyncSender<Message> {
    let (tx, rx) = mpsc::sync_channel::<Message>(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("emptcp-sd-notify".into())
        .spawn(move || {
            let mut sock = sock;
            for m in rx {
                if m.ping {
                    ping_waiting.store(false, Ordering::Relaxed);
                }
                let mut r = sock.send(m.text.as_bytes());
                if r.is_err()
                    && let Ok(s) = connect(&path)
                {
                    sock = s;
                    r = sock.send(m.text.as_bytes());
                }
                if let Err(e) = r {
                    tracing::debug!(error = %e, "sd_notify failed");
                }
                if let Some(done) = m.done {
                    let _ = done.try_send(());
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the service-manager notifier");
    }
    tx
}
