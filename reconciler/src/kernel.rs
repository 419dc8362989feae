//! What the running kernel offers emptcp, found by probing it with bpf(2)
//! calls that change nothing, not by reading version numbers: distribution
//! kernels backport features and leave others out.
//!
//! - TCX links: the egress hook attaches through one (Linux 6.6).
//! - `BPF_F_TEST_XDP_LIVE_FRAMES`: packet copy injects its copies that way
//!   (Linux 5.18).
use std::io;

use serde::Serialize;

use crate::sys;

/// The running kernel's answers. `None`: the probe could not run (no
/// CAP_BPF / root, or bpf(2) unavailable), so the feature is unknown.
#[derive(Debug, Clone, Serialize)]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: String,
    /// `BPF_PROG_QUERY` knows the TCX attach points.
    pub tcx: Option<bool>,
    /// `BPF_PROG_TEST_RUN` accepts `BPF_F_TEST_XDP_LIVE_FRAMES`.
    pub xdp_live_frames: Option<bool>,
}

/// Probes the running kernel (a few program loads and test runs, no attach).
pub fn probe() -> KernelFeatures {
    KernelFeatures {
        release: release(),
        tcx: known(sys::attach_type_known(LOOPBACK, sys::BPF_TCX_INGRESS)),
        xdp_live_frames: known(probe_live_frames()),
    }
}

/// A probe's answer, or `None` when it could not ask (logged, not fatal:
/// status still shows the rest).
fn known<T>(r: io::Result<T>) -> Option<T> {
    r.map_err(|e| tracing::debug!("kernel probe: {e}")).ok()
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Every network namespace has `lo` at ifindex 1.
const LOOPBACK: u32 = 1;

/// A frame big enough for any XDP test run (Ethernet header and more).
const PROBE_FRAME: [u8; 64] = [0; 64];

/// A live-frames run of a program that drops: accepted means the flag is
/// known; the frame goes nowhere.
fn probe_live_frames() -> io::Result<bool> {
    let prog = sys::load_xdp_verdict("emptcp_probe", sys::XDP_DROP)?;
    match sys::test_run_xdp(
        std::os::fd::AsFd::as_fd(&prog),
        &PROBE_FRAME,
        0,
        1,
        sys::BPF_F_TEST_XDP_LIVE_FRAMES,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

impl KernelFeatures {
    /// One line per feature, for `emptcp status`.
    pub fn render(&self) -> String {
        let yes_no = |v: Option<bool>| match v {
            Some(true) => "yes".to_string(),
            Some(false) => "NO".to_string(),
            None => "unknown (needs root or CAP_BPF)".to_string(),
        };
        format!(
            "kernel: {}\n  tcx links:        {} (egress hook, in-kernel recovery; Linux 6.6 or later)\n  xdp live frames:  {} (packet copy; Linux 5.18 or later)\n",
            self.release,
            yes_no(self.tcx),
            yes_no(self.xdp_live_frames)
        )
    }
}
