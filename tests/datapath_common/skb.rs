//! BPF_PROG_TEST_RUN of a TC program (ingress, egress, recovery) on one
//! skb: the few `struct __sk_buff` fields a run sets and the one it reads
//! back. A zeroed context is what the kernel assumes without one: the
//! loopback device, no mark, no GSO.
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};

use super::Dp;

/// Offsets in `struct __sk_buff` (UAPI) of the fields a run uses, and the
/// size of the part the kernel takes (up to `hwtstamp`).
const MARK_OFF: usize = 8;
const INGRESS_IFINDEX_OFF: usize = 36;
const GSO_SIZE_OFF: usize = 176;
const SKB_SIZE: usize = 192;

/// What the TC programs return: pass on (`TCX_NEXT`, the next program of
/// the hook or the stack) and drop (`TC_ACT_SHOT`).
pub const TCX_NEXT: i32 = -1;
pub const TC_ACT_SHOT: i32 = 2;

/// The skb a run starts from: the fields left 0 keep the kernel's default.
#[derive(Clone, Copy, Default)]
pub struct Skb {
    pub mark: u32,
    /// The device the skb arrived on, as TC ingress sees it.
    pub ingress_ifindex: u32,
    /// Non-zero makes it a GSO skb of segments this size.
    pub gso_size: u32,
}

/// What a run left: the program's return value, the packet and the mark.
pub struct SkbRun {
    pub ret: i32,
    pub frame: Vec<u8>,
    pub mark: u32,
}

/// Runs `frame` once through the TC program `prog` of `dp` as `skb`.
pub fn run_skb(dp: &Dp, prog: &str, frame: &[u8], skb: Skb) -> SkbRun {
    let p: &SchedClassifier = dp.ebpf.program(prog).unwrap().try_into().unwrap();
    let mut ctx = [0u8; SKB_SIZE];
    put(&mut ctx, MARK_OFF, skb.mark);
    put(&mut ctx, INGRESS_IFINDEX_OFF, skb.ingress_ifindex);
    put(&mut ctx, GSO_SIZE_OFF, skb.gso_size);
    let mut ctx_out = [0u8; SKB_SIZE];
    // Room for what a program may insert (options, a grown header).
    let mut out = vec![0u8; frame.len() + 512];
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx[..]),
            ctx_out: Some(&mut ctx_out[..]),
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| panic!("test_run {prog}: {e:?}"));
    out.truncate(r.data_size_out as usize);
    SkbRun {
        ret: r.return_value as i32,
        frame: out,
        mark: u32::from_ne_bytes(ctx_out[MARK_OFF..MARK_OFF + 4].try_into().unwrap()),
    }
}

fn put(ctx: &mut [u8; SKB_SIZE], off: usize, v: u32) {
    ctx[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
