//! systemd integration (`Type=notify`): READY=1 after the first converge
//! attempt, STATUS= lines for `systemctl status`, RELOADING=1 on SIGHUP,
//! STOPPING=1 on shutdown, and WATCHDOG=1 at half of `WatchdogSec` from the
//! reconcile loop itself (a loop stuck in a reconcile stops the pings and
//! systemd restarts the daemon). Without NOTIFY_SOCKET every call is a no-op.
use std::time::Duration;

use sd_notify::NotifyState;

pub struct SdNotify {
    watchdog: Option<Duration>,
}

impl SdNotify {
    pub fn from_env() -> SdNotify {
        SdNotify {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to ping the watchdog: half its timeout (None: disabled).
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
            .map(|d| (d / 2).max(Duration::from_millis(10)))
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
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

    /// WATCHDOG=1 (callable from the watchdog task without an instance).
    pub fn watchdog() {
        if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
