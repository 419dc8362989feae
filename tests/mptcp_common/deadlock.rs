//! Recognises the kernel's MPTCP receive deadlock in a stalled transfer's
//! report (mptcp_xfer.py's `ss -taniomeM` lines), so the end-to-end tests
//! can tell it from a failure of emptcp.
//!
//! Seen on the host kernel (6.18) in downloads that join a second subflow
//! mid-transfer under load (mptcp_links' TUN cells, mptcp_e2e's pure
//! download over veth), about once in 20 full test runs: the MPTCP
//! socket's receive memory is over its limit, all of it out-of-order data
//! from one subflow, while the byte the connection waits for (its
//! `rcv_nxt`) is in another subflow's current mapping, unread in that
//! subflow's queue. The kernel moves nothing from a subflow into an MPTCP
//! socket over its limit (`__mptcp_move_skbs`) and has no pruning of the
//! out-of-order queue (plain TCP prunes its own), so neither side ever
//! moves again. Every check below must hold; a stall without all of them
//! stays a test failure.

/// `Some(description)` when the report of a stalled transfer shows the
/// deadlock, `None` otherwise (also for any report that is not a stall).
pub fn kernel_receive_deadlock(res: &serde_json::Value) -> Option<String> {
    if res["rc"] != 4 {
        return None;
    }
    let lines: Vec<&str> = res["ss"]
        .as_array()?
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    let msk = sockets(&lines).find(|s| s.netid == "mptcp" && s.state == "ESTAB")?;
    let (rmem, rcvbuf) = skmem(msk.detail)?;
    if rmem <= rcvbuf {
        return None;
    }
    let rcv_nxt = hex_field(msk.detail, "rcv_nxt:")?;
    let holder = sockets(&lines).find(|s| {
        s.netid == "tcp"
            && s.state == "ESTAB"
            && s.recv_q > 0
            && s.detail.contains("tcp-ulp-mptcp")
            && maps(s.detail, rcv_nxt)
    })?;
    Some(format!(
        "MPTCP socket receive memory {rmem} > its buffer {rcvbuf}; the data at rcv_nxt \
         {rcv_nxt:x} waits unread in subflow {} ({} bytes queued)",
        holder.local, holder.recv_q
    ))
}

/// One socket of `ss` output: its header line and the detail line after it.
struct Socket<'a> {
    netid: &'a str,
    state: &'a str,
    recv_q: u64,
    local: &'a str,
    detail: &'a str,
}

fn sockets<'a>(lines: &'a [&'a str]) -> impl Iterator<Item = Socket<'a>> {
    lines.iter().enumerate().filter_map(|(i, l)| {
        let mut f = l.split_whitespace();
        let (netid, state) = (f.next()?, f.next()?);
        let recv_q = f.next()?.parse().ok()?;
        let _send_q = f.next()?;
        let local = f.next()?;
        let detail = lines.get(i + 1).filter(|d| d.starts_with('\t'))?;
        Some(Socket {
            netid,
            state,
            recv_q,
            local,
            detail,
        })
    })
}

/// `skmem:(r<rmem>,rb<rcvbuf>,...)`.
fn skmem(detail: &str) -> Option<(u64, u64)> {
    let inner = detail.split("skmem:(").nth(1)?.split(')').next()?;
    let mut f = inner.split(',');
    let r = f.next()?.strip_prefix('r')?.parse().ok()?;
    let rb = f.next()?.strip_prefix("rb")?.parse().ok()?;
    Some((r, rb))
}

/// A hexadecimal field such as `rcv_nxt:36215326a84929cd`.
fn hex_field(detail: &str, name: &str) -> Option<u64> {
    let v = detail.split(name).nth(1)?.split_whitespace().next()?;
    u64::from_str_radix(v, 16).ok()
}

/// Does the subflow's current mapping (`seq:` data sequence, `maplen:`
/// bytes) hold data sequence number `dsn`? Sequence space wraps.
fn maps(detail: &str, dsn: u64) -> bool {
    let (Some(seq), Some(len)) = (hex_field(detail, " seq:"), hex_field(detail, "maplen:")) else {
        return false;
    };
    dsn.wrapping_sub(seq) < len
}
