//! What the running kernel offers emptcp, found by probing it with bpf(2)
//! calls that change nothing, not by reading version numbers: distribution
//! kernels backport features and leave others out.
//!
//! - XDP metadata size: the entry writes a `XdpMeta` (144 bytes) in front of
//!   the packet; kernels before 6.4 cap `bpf_xdp_adjust_meta` at 32 bytes.
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
    /// Largest XDP metadata `bpf_xdp_adjust_meta` grants, in bytes
    /// (multiples of 4, probed up to 252 under BPF_PROG_TEST_RUN). On
    /// kernels without the 32-byte cap the answer is the 256-byte XDP
    /// headroom less the kernel's `struct xdp_frame` (216 on x86-64).
    pub xdp_metadata_max: Option<u32>,
    /// What emptcp writes (`size_of::<XdpMeta>()`).
    pub xdp_metadata_needed: u32,
    /// `BPF_PROG_QUERY` knows the TCX attach points.
    pub tcx: Option<bool>,
    /// `BPF_PROG_TEST_RUN` accepts `BPF_F_TEST_XDP_LIVE_FRAMES`.
    pub xdp_live_frames: Option<bool>,
}

/// Probes the running kernel (a few program loads and test runs, no attach).
pub fn probe() -> KernelFeatures {
    KernelFeatures {
        release: release(),
        xdp_metadata_max: known(probe_metadata_max()),
        xdp_metadata_needed: std::mem::size_of::<emptcp_common::XdpMeta>() as u32,
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

/// The largest `n` (multiple of 4, up to 252) for which
/// `bpf_xdp_adjust_meta(ctx, -n)` succeeds. The accepted sizes are a
/// prefix (the kernel checks an upper bound), so bisect.
pub fn probe_metadata_max() -> io::Result<u32> {
    let accepts = |n: u32| -> io::Result<bool> {
        let prog = sys::load_xdp_adjust_meta(n)?;
        let r = sys::test_run_xdp(std::os::fd::AsFd::as_fd(&prog), &PROBE_FRAME, 0, 1, 0)?;
        Ok(r.retval == sys::XDP_PASS)
    };
    if !accepts(4)? {
        return Ok(0);
    }
    // In units of 4 bytes: `lo` is accepted, `hi` refused (256 never is:
    // the kernel keeps the metadata length in a u8).
    let (mut lo, mut hi) = (1u32, 64u32);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if accepts(mid * 4)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo * 4)
}

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
        let meta = match self.xdp_metadata_max {
            Some(m) if m >= self.xdp_metadata_needed => {
                format!("{m} bytes (emptcp needs {})", self.xdp_metadata_needed)
            }
            Some(m) => format!(
                "{m} bytes: TOO SMALL, emptcp needs {} (Linux 6.4 or later)",
                self.xdp_metadata_needed
            ),
            None => "unknown (needs root or CAP_BPF)".to_string(),
        };
        format!(
            "kernel: {}\n  xdp metadata:     {meta}\n  tcx links:        {} (egress hook, in-kernel recovery; Linux 6.6 or later)\n  xdp live frames:  {} (packet copy; Linux 5.18 or later)\n",
            self.release,
            yes_no(self.tcx),
            yes_no(self.xdp_live_frames)
        )
    }
}
