//! systemd `Type=notify` integration without systemd: the test plays the
//! service manager (a datagram socket in NOTIFY_SOCKET, WATCHDOG_USEC set)
//! and checks READY=1 comes after the first converge attempt, WATCHDOG=1 at
//! half the watchdog timeout, RELOADING=1 / READY=1 around SIGHUP and
//! STOPPING=1 on SIGTERM.
mod common;
#[path = "watch_support/mod.rs"]
mod watch_support;

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use common::*;
use nix::sys::signal::Signal;
use watch_support::*;

/// Collects notify messages for `dur`.
fn collect(sock: &UnixDatagram, dur: Duration) -> Vec<(Instant, String)> {
    let end = Instant::now() + dur;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        sock.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            out.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    out
}

#[test]
fn ready_watchdog_reload_and_stop_are_notified() {
    if !kernel_or_skip("ready_watchdog_reload_and_stop_are_notified") {
        return;
    }
    let lab = WatchLab::with_base("wsd");
    let (root, dir, ns, d) = (&lab.root, &lab.dir, lab.ns(), lab.d());
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    // WatchdogSec=0.4s: the daemon pings every 200 ms.
    let mut daemon = Daemon::start_env(
        &root.path,
        ns,
        &["-d", d.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let msgs = collect(&sock, Duration::from_millis(1500));
    let text: Vec<&str> = msgs.iter().map(|(_, m)| m.as_str()).collect();
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
    let pings: Vec<&Instant> = msgs
        .iter()
        .filter(|(_, m)| m.trim() == "WATCHDOG=1")
        .map(|(t, _)| t)
        .collect();
    assert!(pings.len() >= 4, "watchdog pings in 1.5 s: {text:?}");
    for w in pings.windows(2) {
        let gap = *w[1] - *w[0];
        assert!(gap < Duration::from_millis(350), "watchdog gap {gap:?}");
    }

    daemon.signal(Signal::SIGHUP);
    let msgs = collect(&sock, Duration::from_millis(800));
    let text: Vec<&str> = msgs.iter().map(|(_, m)| m.as_str()).collect();
    let reloading = text
        .iter()
        .position(|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no RELOADING=1: {text:?}"));
    assert!(
        text[reloading..].iter().any(|m| m.contains("READY=1")),
        "no READY=1 after the reload: {text:?}"
    );

    daemon.signal(Signal::SIGTERM);
    let msgs = collect(&sock, Duration::from_millis(800));
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
    assert!(
        msgs.iter().any(|(_, m)| m.contains("STOPPING=1")),
        "{msgs:?}"
    );
}
