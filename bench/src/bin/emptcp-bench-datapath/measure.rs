//! How a path is timed: BPF_PROG_TEST_RUN of one fresh frame at a time
//! (repeat 1), through the bare program and through emptcp alternately,
//! the kernel's own clock for each run.
//!
//! Why not one run with a large repeat count: the kernel runs the program
//! `repeat` times on the SAME buffer, so whatever the first run changed
//! (an ADD_ADDR stripped, an option inserted, a flow created, a sequence
//! number recorded) is already done for the others, which then time a
//! no-op. With repeat 1 every frame is new. The kernel's clock around a
//! single run also holds its own reads and the loop's bh disable/enable
//! (a fixed cost); both programs pay it, so the difference of the two
//! is what emptcp adds. The same difference with repeat 10^6 on a
//! frame nothing changes (the non-matching packet) is printed beside it as
//! a cross-check of the method.
use std::os::fd::BorrowedFd;

use anyhow::{Context as _, bail};
use emptcp::sys;

/// Where a program runs: XDP (an `xdp_md` of the ingress interface), TC
/// egress or TC ingress (`ingress_hook: tc`; both an skb of the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
    TcIngress,
}

/// One BPF_PROG_TEST_RUN: (verdict, kernel ns per run).
pub fn run(
    hook: Hook,
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> anyhow::Result<(u32, u32)> {
    let r = match hook {
        Hook::Xdp => sys::test_run_xdp(prog, frame, ifindex, repeat, 0),
        Hook::Tc => sys::test_run_skb(prog, frame, ifindex, sys::SkbWay::Egress, repeat),
        Hook::TcIngress => sys::test_run_skb(prog, frame, ifindex, sys::SkbWay::Ingress, repeat),
    }
    .context("BPF_PROG_TEST_RUN")?;
    Ok((r.retval, r.duration_ns))
}

/// Mean of the middle half of the samples (sorts them): as robust as the
/// median against an interrupt or a preemption landing inside a run, with
/// a resolution finer than the clock's 1 ns.
pub fn iqm(v: &mut [u32]) -> f64 {
    v.sort_unstable();
    let (lo, hi) = (v.len() / 4, v.len() - v.len() / 4);
    let mid = &v[lo..hi.max(lo + 1)];
    mid.iter().map(|&x| f64::from(x)).sum::<f64>() / mid.len() as f64
}

/// One round of a path (ns).
pub struct Round {
    /// The bare program's single run (IQM).
    pub bare: f64,
    /// emptcp minus the bare program, frame by frame (IQM).
    pub added: f64,
}

/// Times `frames` through `bare` and `emptcp` alternately (which one goes
/// first alternates too, so neither always finds the caches the other
/// left); every emptcp verdict must be `verdict`.
pub fn round(
    hook: Hook,
    bare: BorrowedFd<'_>,
    emptcp: BorrowedFd<'_>,
    frames: &[Vec<u8>],
    ifindex: u32,
    verdict: u32,
) -> anyhow::Result<Round> {
    let mut b = Vec::with_capacity(frames.len());
    let mut e = Vec::with_capacity(frames.len());
    for (i, f) in frames.iter().enumerate() {
        let bare_first = i % 2 == 0;
        if bare_first {
            b.push(run(hook, bare, f, ifindex, 1)?.1);
        }
        let (v, ns) = run(hook, emptcp, f, ifindex, 1)?;
        if v != verdict {
            bail!(
                "frame {i}: verdict {} where {} was expected",
                v as i32,
                verdict as i32
            );
        }
        e.push(ns);
        if !bare_first {
            b.push(run(hook, bare, f, ifindex, 1)?.1);
        }
    }
    // The difference is taken pair by pair (the two runs of a frame are
    // microseconds apart) so that a change in the machine's load during
    // the round cancels out.
    let mut d: Vec<f64> = b
        .iter()
        .zip(&e)
        .map(|(&x, &y)| f64::from(y) - f64::from(x))
        .collect();
    Ok(Round {
        bare: iqm(&mut b),
        added: iqm_f(&mut d),
    })
}

/// [`iqm`] of signed values.
pub fn iqm_f(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let (lo, hi) = (v.len() / 4, v.len() - v.len() / 4);
    let mid = &v[lo..hi.max(lo + 1)];
    mid.iter().sum::<f64>() / mid.len() as f64
}

/// Median of the values (sorted copy); the middle one of an odd count.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iqm_ignores_the_outliers() {
        let mut v = vec![10, 11, 10, 11, 5000, 0, 10, 11];
        assert_eq!(iqm(&mut v), 10.5);
        assert_eq!(iqm(&mut [7]), 7.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(iqm_f(&mut [-1.0, 2.0, 2.0, 900.0]), 2.0);
    }
}
