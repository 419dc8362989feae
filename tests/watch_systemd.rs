//! systemd `Type=notify` integration without systemd: the test plays the
//! service manager (a datagram socket in NOTIFY_SOCKET, read by a thread
//! from before the daemon starts, as systemd reads it; WATCHDOG_USEC set)
//! and checks READY=1 comes after the first converge attempt, WATCHDOG=1 at
//! half the watchdog timeout, RELOADING=1 / READY=1 around SIGHUP and
//! STOPPING=1 on SIGTERM; and that a manager which stops reading does not
//! stall the daemon.
mod common;
#[path = "watch_support/mod.rs"]
mod watch_support;

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use common::*;
use nix::sys::signal::Signal;
use watch_support::*;

/// The service manager's side: a socket and a thread that reads it while
/// `reading` is set (and leaves the datagrams queued in the kernel while it
/// is not).
struct Manager {
    reading: Arc<AtomicBool>,
    rx: mpsc::Receiver<(Instant, String)>,
    stop: Arc<AtomicBool>,
}

impl Manager {
    fn bind(path: &Path, reading: bool) -> Manager {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let reading = Arc::new(AtomicBool::new(reading));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (r, s) = (reading.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if !r.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                if let Ok(n) = sock.recv(&mut buf) {
                    let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if tx.send((Instant::now(), m)).is_err() {
                        return;
                    }
                }
            }
        });
        Manager { reading, rx, stop }
    }

    /// What arrived until `dur` from now (including what came before).
    fn collect(&self, dur: Duration) -> Vec<(Instant, String)> {
        let end = Instant::now() + dur;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(m) => out.push(m),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("manager thread ended"),
            }
        }
        out
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn texts(msgs: &[(Instant, String)]) -> Vec<&str> {
    msgs.iter().map(|(_, m)| m.as_str()).collect()
}

fn watchdog_pings(msgs: &[(Instant, String)]) -> Vec<Instant> {
    msgs.iter()
        .filter(|(_, m)| m.trim() == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect()
}

/// WatchdogSec=0.4s: the daemon pings every 200 ms.
const WATCHDOG_USEC: &str = "400000";

fn start(lab: &WatchLab, sock: &Path) -> Daemon {
    Daemon::start_env(
        &lab.root.path,
        lab.ns(),
        &["-d", lab.d().to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", sock.to_str().unwrap()),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ],
    )
}

#[test]
fn ready_watchdog_reload_and_stop_are_notified() {
    if !kernel_or_skip("ready_watchdog_reload_and_stop_are_notified") {
        return;
    }
    let lab = WatchLab::with_base("wsd");
    let sock_path = lab.dir.path().join("notify.sock");
    let manager = Manager::bind(&sock_path, true);
    let mut daemon = start(&lab, &sock_path);
    let msgs = manager.collect(Duration::from_millis(1500));
    let text = texts(&msgs);
    let ready = text
        .iter()
        .position(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1: {text:?}"));
    assert!(
        text[ready].contains("STATUS=policy "),
        "READY carries a status line: {text:?}"
    );
    // READY=1 only once the first converge attempt is recorded.
    assert!(!daemon.state().unwrap()["last_reconcile"].is_null());
    // Pings after READY, in the 1.5 s window: at least 4 of the 7 a
    // 200 ms period gives, none apart by more than 350 ms (a 150 ms margin
    // for a loaded machine, still under the 400 ms timeout).
    let after_ready: Vec<Instant> = watchdog_pings(&msgs[ready..]);
    assert!(after_ready.len() >= 4, "watchdog pings in 1.5 s: {text:?}");
    for w in after_ready.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap < Duration::from_millis(350), "watchdog gap {gap:?}");
    }

    daemon.signal(Signal::SIGHUP);
    let msgs = manager.collect(Duration::from_millis(800));
    let text = texts(&msgs);
    let reloading = text
        .iter()
        .position(|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no RELOADING=1: {text:?}"));
    assert!(
        text[reloading..].iter().any(|m| m.contains("READY=1")),
        "no READY=1 after the reload: {text:?}"
    );

    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
    let msgs = manager.collect(Duration::from_millis(300));
    assert!(
        msgs.iter().any(|(_, m)| m.contains("STOPPING=1")),
        "{msgs:?}"
    );
}

/// A manager that reads nothing for 3 s (15 pings, more than the 10
/// datagrams a unix socket queues by default: `net.unix.max_dgram_qlen`):
/// the daemon still converges a policy change and answers /healthz, and
/// once the manager reads again it gets READY=1 (not drowned in pings)
/// and pings resume.
/// Control: the daemon used to send from its reconcile loop and stalled
/// there, so the policy change below was never converged.
#[test]
fn a_manager_that_does_not_read_does_not_stall_the_daemon() {
    if !kernel_or_skip("a_manager_that_does_not_read_does_not_stall_the_daemon") {
        return;
    }
    let qlen: usize = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let lab = WatchLab::with_base("wsdq");
    let sock_path = lab.dir.path().join("notify.sock");
    let manager = Manager::bind(&sock_path, false);
    let daemon = start(&lab, &sock_path);
    // Until the manager's queue is surely full: qlen pings + 5 more.
    std::thread::sleep(Duration::from_millis(200) * (qlen as u32 + 5));

    std::fs::write(lab.d().join("20-b.yaml"), chain("b", 6000)).unwrap();
    daemon.wait_status("the change converged", Duration::from_secs(30), |s| {
        chain_names(s).contains(&"b".to_string())
    });
    let (status, _) = daemon.http_get("/healthz");
    assert!(status.contains("200"), "/healthz: {status}");

    manager.reading.store(true, Ordering::Relaxed);
    let msgs = manager.collect(Duration::from_millis(1500));
    let text = texts(&msgs);
    // READY=1 was not dropped, and the pings before it were coalesced: at
    // most what the kernel queues (qlen + 1: it blocks a sender only once
    // the queue is longer than qlen), the one the daemon's sender thread
    // blocks on and the one waiting in its queue (without coalescing, a
    // first reconcile longer than the queue's worth of pings, as in an
    // emulated guest, put 42 there).
    let ready = text
        .iter()
        .position(|m| m.contains("READY=1"))
        .unwrap_or_else(|| panic!("READY=1 was dropped: {text:?}"));
    let pings_before = text[..ready]
        .iter()
        .filter(|m| m.trim() == "WATCHDOG=1")
        .count();
    assert!(
        pings_before <= qlen + 3,
        "{pings_before} pings queued before READY=1: {text:?}"
    );
    // The backlog (the kernel's queue and the daemon's) drains at once;
    // pings then come on their period again.
    let fresh: Vec<Instant> = watchdog_pings(&msgs)
        .into_iter()
        .filter(|t| *t > msgs[0].0 + Duration::from_millis(300))
        .collect();
    assert!(
        fresh.len() >= 3,
        "pings after the backlog in 1.5 s: {text:?}"
    );
}
