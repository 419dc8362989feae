//! What the running kernel offers emptcp, found by probing it with bpf(2)
//! calls that change nothing, not by reading version numbers: distribution
//! kernels backport features and leave others out.
//!
//! - TCX links: the egress hook and the in-kernel recovery attach through
//!   them (Linux 6.6).
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
}

/// Probes the running kernel (queries only, no attach).
pub fn probe() -> KernelFeatures {
    KernelFeatures {
        release: release(),
        tcx: known(sys::attach_type_known(LOOPBACK, sys::BPF_TCX_INGRESS)),
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

impl KernelFeatures {
    /// One line per feature, for `emptcp status`.
    pub fn render(&self) -> String {
        let yes_no = |v: Option<bool>| match v {
            Some(true) => "yes".to_string(),
            Some(false) => "NO".to_string(),
            None => "unknown (needs root or CAP_BPF)".to_string(),
        };
        format!(
            "kernel: {}\n  tcx links:        {} (egress hook, in-kernel recovery; Linux 6.6 or later)\n",
            self.release,
            yes_no(self.tcx),
        )
    }
}
