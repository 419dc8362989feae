//! `record_flow`: track MPTCP connections, their subflows and their size.
//!
//! * SYN-ACK with MP_CAPABLE (the local end opened the connection): create
//!   the connection under its initial subflow, with its token (SHA-256 of
//!   the server's key), the remote's window scale and the frame's MACs (for
//!   a later forged ACK). A SYN-ACK for a 4-tuple whose connection already
//!   carries data is unsolicited and ignored.
//! * MP_CAPABLE SYN of a peer (the local end is the server): keep its
//!   window scale (`SYN_SHIFTS`) for the connection its third ACK creates.
//! * MP_CAPABLE third ACK of a peer (the local end is the server): create
//!   the connection from the receiver's (local) key, with the window scale
//!   its handshake settled.
//! * MP_JOIN SYN received (the local end is the server): map the subflow to
//!   the connection its token names (`JOINS`); the joins the local end
//!   opens are mapped by the egress hook (`egress/track.rs`).
//! * Any other segment of a connection, on any of its subflows: add the
//!   DSS progress to the connection's size; keep the initial subflow's
//!   newest seq/ack/window/timestamps; REMOVE_ADDR forgets the stored
//!   address; MP_FASTCLOSE ends the connection.
//! * FIN or RST: only at the subflow's sequence (a RST exactly at rcv_nxt,
//!   RFC 5961; a FIN in order), else ignored and counted. It closes its
//!   subflow; the connection ends with its last subflow, or at the first
//!   close after the peer's DATA_FIN.
//!
//! Untracked flows and malformed packets pass untouched.
use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use emptcp_common::{
    Action, FLOW_DATA_ACK_SEEN, FLOW_DATA_FIN, FLOW_DATA_SEQ_SEEN, FLOW_ESTABLISHED,
    FLOW_INITIAL_CLOSED, FLOW_PEER_WSCALE, FLOW_SEQ_SEEN, FLOW_SERVER, FLOW_SHIFT_SETTLED,
    FLOW_TS_SEEN, FlowKey, FlowStat, FlowState, JOIN_PEER_OPENED, JOIN_SEQ_SEEN, JOIN_SYN_ACK_SEEN,
    JOIN_UNCOUNTED, JOIN_WSCALE_SEEN, META_FLOW_TRACKED, META_FLOW_UNTRACKED, Outcome,
    RECORD_SETUP_SLOT, SYN_SHIFT_ANSWERED, SYN_SHIFT_LOCAL, SYN_SHIFT_PEER, SynShift, XdpMeta,
};

use crate::{
    action_program,
    chain::{self, Step, Verdict},
    flow::{self, Conn, Seq},
    hook::{Hook, Out},
    maps::{FLOWS, NEW_FLOW, SYN_SHIFTS},
    options::{ACK, FIN, RST, SYN, Seg, bounded, key, load},
    sha256, stats,
};

action_program!(record_flow, tc_record_flow, Action::RecordFlow, run);

const ROW: u32 = Action::RecordFlow as u32;

/// DSS flags (RFC 8684 3.3): A = data ACK present, a = it is 8 bytes,
/// M = mapping present, m = its data sequence number is 8 bytes, F =
/// DATA_FIN.
const DSS_A: u8 = 0x01;
const DSS_A8: u8 = 0x02;
const DSS_M: u8 = 0x04;
const DSS_M8: u8 = 0x08;
const DSS_F: u8 = 0x10;

#[inline(always)]
fn run<H: Hook>(ctx: &H, m: *mut XdpMeta) -> Step {
    if !chain::well_formed(m) {
        return Step::passed(Verdict::Next);
    }
    let fl = unsafe { (*m).tcp_flags };
    let capable = unsafe { (*m).capable.len };
    // Connection setup (SYNs, the peer's MP_CAPABLE third ACK) runs in a
    // program of its own, `record_flow_setup`: the token's SHA-256 and the
    // new entry need a stack of their own (BPF allows 512 bytes for all
    // frames of one program).
    let setup = fl & SYN != 0
        || (fl & ACK != 0 && matches!(capable, 20 | 22 | 24) && flow::get(&key(m)).is_none());
    if setup {
        // On success `record_flow_setup` counts the run.
        ctx.call_slot(RECORD_SETUP_SLOT);
        return Step::error(Verdict::Next);
    }
    if established(ctx, m) {
        Step::applied(Verdict::Next)
    } else {
        Step::passed(Verdict::Next)
    }
}

/// `record_flow_setup`: the connection-setup half of `record_flow`
/// (tail-called by it, in slot `RECORD_SETUP_SLOT` of `PROGS`), which then
/// goes on with the chain's next step.
#[xdp]
pub fn record_flow_setup(ctx: XdpContext) -> u32 {
    setup_program(&ctx)
}

/// `record_flow_setup` on TC ingress (slot `RECORD_SETUP_SLOT` of
/// `TC_PROGS`).
#[classifier]
pub fn tc_record_flow_setup(ctx: TcContext) -> i32 {
    setup_program(&ctx)
}

#[inline(always)]
fn setup_program<H: Hook>(ctx: &H) -> H::Code {
    let Some(m) = chain::meta(ctx) else {
        crate::identity::reference();
        stats::bump(ROW, Outcome::Error);
        return chain::leave(ctx, Out::Pass);
    };
    let done = setup(ctx, m);
    stats::bump(
        ROW,
        if done {
            Outcome::Applied
        } else {
            Outcome::Passed
        },
    );
    match chain::meta(ctx) {
        Some(m) => chain::next(ctx, m),
        None => chain::leave(ctx, Out::Pass),
    }
}

/// SYN, SYN-ACK or the peer's third ACK: create the connection, or map a
/// joined subflow. Each case reads the description itself (a copy here
/// would sit in this frame under the SHA-256's).
#[inline(always)]
fn setup<H: Hook>(ctx: &H, m: *mut XdpMeta) -> bool {
    let (flags, capable, join) = unsafe { ((*m).tcp_flags, (*m).capable.len, (*m).join.len) };
    if flags & SYN == 0 {
        // The peer's third ACK (or first data) echoes both keys: the
        // receiver's (ours, at offset 12) names the connection.
        return create(ctx, m, 12, FLOW_SERVER);
    }
    if flags & ACK == 0 {
        if join == 12 {
            join_received(ctx, m)
        } else {
            capable != 0 && syn_received(ctx, m)
        }
    } else if capable >= 12 {
        create(ctx, m, 4, 0)
    } else {
        join != 0 && join_accepted(ctx, m)
    }
}

/// Any other segment: of a tracked connection (any subflow), or not.
/// A subprogram: the frames of the program's paths stay apart.
#[inline(never)]
fn established<H: Hook>(ctx: &H, m: *mut XdpMeta) -> bool {
    let s = Seg::of(m);
    let key = key(m);
    match flow::resolve(&key, s.n_mptcp != 0 || s.flags & (FIN | RST) != 0) {
        Some(c) => segment(ctx, &s, &key, c),
        None => {
            describe_flow(ctx, None);
            false
        }
    }
}

/// A new connection from the MP_CAPABLE of `s`, whose token is that of the
/// key at option offset `key_at`. A connection already under this 4-tuple
/// with the same token (a retransmitted SYN-ACK) is kept; one with another
/// token is replaced only while it has carried no data. The entry is
/// built in the per-CPU `NEW_FLOW` value, not on the stack. A
/// subprogram: its frame and the SHA-256's stay apart from the caller's.
#[inline(never)]
fn create<H: Hook>(ctx: &H, m: *mut XdpMeta, key_at: usize, flags: u32) -> bool {
    let s = &Seg::of(m);
    let key = &key(m);
    // A live joined subflow's 4-tuple is not a new connection: an
    // MP_CAPABLE on it would take the subflow from its connection. (A
    // mapping its connection outlived is no obstacle: FLOWS, looked up
    // first, then names the new connection.)
    if flow::has_live_join(key) {
        stats::event(FlowStat::SynAckIgnored);
        return false;
    }
    let mut o = [0u8; 32];
    if !s.read(ctx, s.capable, &mut o) {
        return false;
    }
    let mut k = [0u8; 8];
    for i in 0..8 {
        k[i] = o[(key_at + i) & 31];
    }
    let token = sha256::token(&k);
    if let Some(f) = flow::get(key) {
        if f.token == token {
            describe_flow(ctx, Some(f));
            return true;
        }
        if f.flags & FLOW_ESTABLISHED != 0 {
            stats::event(FlowStat::SynAckIgnored);
            describe_flow(ctx, Some(f));
            return false;
        }
    }
    flow::remove(key);
    let Some(fp) = NEW_FLOW.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch value; the program runs to completion.
    let f = unsafe {
        core::ptr::write_bytes(fp, 0, 1);
        &mut *fp
    };
    f.chain = s.chain;
    f.ifindex = ctx.ifindex();
    f.token = token;
    f.flags = flags;
    // RFC 7323: a shift above 14 is used as 14.
    if flags & FLOW_SERVER != 0 {
        settle_server_shift(key, f);
    } else {
        take_local_window(key, f);
        if let Some(w) = peer_wscale(ctx, s) {
            f.wscale = w;
            f.flags |= FLOW_PEER_WSCALE;
        }
    }
    let mut eth = [0u8; 16];
    // A raw-IP link (L3 at 0) has no MACs: a forged packet needs none.
    if s.l3 >= 14 && load(ctx, 0, eth.as_mut_ptr(), 16) {
        f.mac.copy_from_slice(&eth[..12]);
        // The first tag: one already taken out of the frame (TC ingress:
        // by the NIC or the stack) was outside any the frame still holds.
        f.vlan_tci = match ctx.offloaded_vlan_tci() {
            0 if s.l3 > 14 => u16::from_be_bytes([eth[14], eth[15]]),
            tci => tci,
        };
    }
    note_segment(s, f);
    if FLOWS.insert(key, f, 0).is_err() {
        stats::event(FlowStat::FlowInsertFailed);
        return false;
    }
    flow::map_token(token, key);
    stats::event(FlowStat::FlowsCreated);
    true
}

/// An MP_JOIN SYN from the peer (the local end is the server): the
/// subflow joins the connection its token names.
#[inline(never)]
fn join_received<H: Hook>(ctx: &H, m: *mut XdpMeta) -> bool {
    let s = &Seg::of(m);
    let key = &key(m);
    let mut o = [0u8; 16];
    if !s.read(ctx, s.join, &mut o) {
        return false;
    }
    let token = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
    // The local end's window bound comes with its SYN-ACK (egress hook).
    flow::map_join(key, token, peer_wscale(ctx, s), true, 0)
}

/// The peer's MP_CAPABLE SYN (the local end is the server): its window
/// scale is kept until the third ACK creates the connection, which carries
/// none (set_window needs it); the egress hook adds whether the local
/// SYN-ACK scales too.
#[inline(never)]
fn syn_received<H: Hook>(ctx: &H, m: *mut XdpMeta) -> bool {
    let s = &Seg::of(m);
    let mut v = SynShift::default();
    if let Some(w) = peer_wscale(ctx, s) {
        v.peer = w;
        v.flags = SYN_SHIFT_PEER;
    }
    SYN_SHIFTS.insert(&key(m), &v, 0).is_ok()
}

/// A connection the peer opened takes the window scale its handshake
/// settled (`SYN_SHIFTS`, written at the peer's SYN and the local
/// SYN-ACK); without the local SYN-ACK seen (no egress hook, or the entry
/// evicted) it stays unknown.
#[inline(always)]
fn settle_server_shift(key: &FlowKey, f: &mut FlowState) {
    let Some(v) = (unsafe { SYN_SHIFTS.get(key) }) else {
        return;
    };
    let v = *v;
    let _ = SYN_SHIFTS.remove(key);
    if v.flags & SYN_SHIFT_ANSWERED == 0 {
        return;
    }
    f.rcv_wnd_log2 = v.local_wnd_log2;
    f.flags |= FLOW_SHIFT_SETTLED;
    if v.flags & (SYN_SHIFT_PEER | SYN_SHIFT_LOCAL) == SYN_SHIFT_PEER | SYN_SHIFT_LOCAL {
        f.wscale = v.peer;
        f.flags |= FLOW_PEER_WSCALE;
    }
}

/// A connection the local end opened takes its window bound from its SYN
/// (`SYN_SHIFTS`, written by the egress hook as the SYN left); unknown
/// without it.
#[inline(always)]
fn take_local_window(key: &FlowKey, f: &mut FlowState) {
    if let Some(v) = unsafe { SYN_SHIFTS.get(key) } {
        f.rcv_wnd_log2 = v.local_wnd_log2;
        let _ = SYN_SHIFTS.remove(key);
    }
}

/// The peer's SYN-ACK of a subflow the local end joined: its window scale
/// is this subflow's (set_window needs it).
#[inline(never)]
fn join_accepted<H: Hook>(ctx: &H, m: *mut XdpMeta) -> bool {
    let s = &Seg::of(m);
    let key = &key(m);
    let Some(c) = flow::resolve(key, true) else {
        return false;
    };
    let (Some(j), f) = (c.join, c.f) else {
        return false;
    };
    // Only the first SYN-ACK of a join the local end opened: another one
    // (spoofed, or for a subflow the peer opened) would reset rcv_nxt,
    // the subflow's RST check, and its window scale.
    if j.flags & (JOIN_SYN_ACK_SEEN | JOIN_PEER_OPENED) != 0 {
        stats::event(FlowStat::SynAckIgnored);
        return false;
    }
    if let Some(w) = peer_wscale(ctx, s) {
        j.wscale = w;
        flow::set_join_flags(j, JOIN_WSCALE_SEEN);
    }
    j.rcv_nxt = s.seq.wrapping_add(1);
    flow::set_join_flags(j, JOIN_SEQ_SEEN | JOIN_SYN_ACK_SEEN);
    flow::count_join(j, f);
    true
}

/// The window scale option of a SYN or SYN-ACK (RFC 7323: at most 14).
#[inline(always)]
fn peer_wscale<H: Hook>(ctx: &H, s: &Seg) -> Option<u8> {
    let mut wb = [0u8; 8];
    s.read(ctx, s.wscale, &mut wb).then(|| wb[2].min(14))
}

/// A segment of a tracked connection, on its initial or a joined subflow.
#[inline(always)]
fn segment<H: Hook>(ctx: &H, s: &Seg, sub: &FlowKey, c: Conn) -> bool {
    let Conn { key, f, join } = c;
    if s.flags & (FIN | RST) != 0 {
        return close(ctx, s, sub, &key, f, join);
    }
    // The longest DSS: 4 + data ACK 8 + DSN 8 + subflow seq 4 +
    // data-level length 2 + checksum 2 = 28.
    let mut o = [0u8; 32];
    if s.read(ctx, s.dss, &mut o) {
        account_dss(f, &o, s.dss.len as u32);
    }
    match join {
        Some(j) => {
            flow::count_join(j, f);
            note_join(s, j);
        }
        None => note_segment(s, f),
    }
    if (s.remove_addr.len | s.fastclose.len) != 0 && other_options(ctx, s, &key, f) {
        // MP_FASTCLOSE: the connection is gone.
        describe_flow(ctx, None);
        return true;
    }
    describe_flow(ctx, Some(f));
    true
}

/// A FIN or RST on a subflow of the connection. Counted only at the
/// subflow's sequence: a RST exactly at rcv_nxt (RFC 5961 3.2), a FIN in
/// order (it starts at or before rcv_nxt and ends at or after it); else it
/// is a spoof or stale, and the connection stays.
#[inline(always)]
fn close<H: Hook>(
    ctx: &H,
    s: &Seg,
    sub: &FlowKey,
    key: &FlowKey,
    f: &mut FlowState,
    join: Option<&mut emptcp_common::JoinState>,
) -> bool {
    let (seen, rcv_nxt) = match &join {
        Some(j) => (j.flags & JOIN_SEQ_SEEN != 0, j.rcv_nxt),
        None => (f.flags & FLOW_SEQ_SEEN != 0, f.rcv_nxt),
    };
    if seen && !in_sequence(s, rcv_nxt) {
        stats::event(FlowStat::CloseIgnored);
        describe_flow(ctx, Some(f));
        return false;
    }
    let data_fin = f.flags & FLOW_DATA_FIN != 0;
    let ended = match join {
        Some(_) if data_fin => flow::remove(key),
        Some(j) => flow::remove_join(sub, key, f, j.flags & JOIN_UNCOUNTED == 0),
        None if f.joins != 0 && !data_fin => {
            flow::set_flags(f, FLOW_INITIAL_CLOSED);
            false
        }
        None => flow::remove(key),
    };
    if ended {
        stats::event(FlowStat::FlowsRemoved);
        describe_flow(ctx, None);
    }
    true
}

/// See [`close`].
#[inline(always)]
fn in_sequence(s: &Seg, rcv_nxt: u32) -> bool {
    if s.flags & RST != 0 {
        return s.seq == rcv_nxt;
    }
    let end = s.seq.wrapping_add(s.payload());
    (s.seq.wrapping_sub(rcv_nxt) as i32) <= 0 && (end.wrapping_sub(rcv_nxt) as i32) >= 0
}

/// Keeps a joined subflow's rcv_nxt (its RST check).
#[inline(always)]
fn note_join(s: &Seg, j: &mut emptcp_common::JoinState) {
    let end = s.seq.wrapping_add(s.payload());
    if j.flags & JOIN_SEQ_SEEN == 0
        || matches!(flow::seq_of(end, j.rcv_nxt, j.rcv_wnd_log2), Seq::Ahead)
    {
        j.rcv_nxt = end;
        flow::set_join_flags(j, JOIN_SEQ_SEEN);
    }
}

/// Keeps seq/ack/window/timestamps of the newest segment (by its end,
/// wrap-aware), which a forged duplicate ACK must match.
#[inline(always)]
fn note_segment(s: &Seg, f: &mut FlowState) {
    // SYN and FIN each take one sequence number.
    let end = s
        .seq
        .wrapping_add(s.payload())
        .wrapping_add((s.flags & (SYN | FIN) != 0) as u32);
    if f.flags & FLOW_SEQ_SEEN != 0 {
        match flow::seq_of(end, f.rcv_nxt, f.rcv_wnd_log2) {
            Seq::Beyond => return,
            // Older than the newest: its ack and timestamps are too.
            Seq::NotAhead if end != f.rcv_nxt => return,
            _ => {}
        }
    }
    f.rcv_nxt = end;
    f.ack = s.ack;
    f.window = s.window;
    let mut seen = FLOW_SEQ_SEEN;
    if s.ts.len != 0 {
        f.tsval = s.tsval;
        f.tsecr = s.tsecr;
        seen |= FLOW_TS_SEEN;
    }
    // The flag word is shared with other CPUs' atomic updates (a plain
    // read-modify-write here, on every segment, lost their bits): set
    // after the fields it vouches for, stored only while a bit is missing.
    flow::set_flags(f, seen);
}

/// REMOVE_ADDR forgets the stored addresses it names (the first four:
/// Linux sends one per option); MP_FASTCLOSE ends the connection (true).
#[inline(always)]
fn other_options<H: Hook>(ctx: &H, s: &Seg, key: &FlowKey, f: &mut FlowState) -> bool {
    if s.fastclose.len != 0 {
        flow::remove(key);
        stats::event(FlowStat::FastClose);
        return true;
    }
    // The address ids follow the 3-byte header.
    let n = (s.remove_addr.len as u32).saturating_sub(3).min(4);
    let mut ids = [0u8; 4];
    if n == 0
        || !load(
            ctx,
            s.at(s.remove_addr) + 3,
            ids.as_mut_ptr(),
            bounded(n, 4),
        )
    {
        return false;
    }
    for i in 0..4 {
        if (i as u32) < n && flow::forget_addr(key, f, ids[i]) {
            stats::event(FlowStat::RemoveAddrCleared);
        }
    }
    false
}

/// Tells the later steps what this one found (they skip their own lookup
/// of an untracked flow or one with nothing to re-insert).
#[inline(always)]
fn describe_flow<H: Hook>(ctx: &H, f: Option<&FlowState>) {
    let Some(m) = chain::meta(ctx) else {
        return;
    };
    unsafe {
        match f {
            Some(f) => {
                (*m).flow = META_FLOW_TRACKED;
                (*m).flow_bytes = f.bytes;
                (*m).flow_due = flow::open(f) as u8;
            }
            None => (*m).flow = META_FLOW_UNTRACKED,
        }
    }
}

/// Adds the progress of the DSS `o` (`len` bytes) to the flow size.
#[inline(always)]
fn account_dss(f: &mut FlowState, o: &[u8; 32], len: u32) {
    let fl = o[3];
    let ack_len = if fl & DSS_A == 0 {
        0
    } else if fl & DSS_A8 != 0 {
        8
    } else {
        4
    };
    let dsn_len = if fl & DSS_M == 0 {
        0
    } else if fl & DSS_M8 != 0 {
        8
    } else {
        4
    };
    // A mapping adds subflow seq (4) + data-level length (2) and an
    // optional checksum (2).
    let need = 4 + ack_len + if dsn_len == 0 { 0 } else { dsn_len + 6 };
    if len != need && !(dsn_len != 0 && len == need + 2) {
        stats::event(FlowStat::Malformed);
        return;
    }
    // A DATA_FIN takes a data sequence number: it comes with a mapping
    // (RFC 8684 3.3.3). Without one, or in a malformed DSS, the F bit
    // would arm "the next close of any subflow ends the connection".
    if fl & DSS_F != 0 && dsn_len != 0 {
        flow::set_flags(f, FLOW_DATA_FIN);
    }
    flow::set_flags(f, FLOW_ESTABLISHED);
    // The size not explained by the two counters (0 for a connection
    // created here; the size it had when it was tracked without them): the
    // first counter seen starts from it.
    let mut carried = f.bytes.wrapping_sub(acked(f).wrapping_add(sent(f)));
    let mut p = 4;
    if ack_len != 0 {
        let v = read_seq(o, p, ack_len);
        if f.flags & FLOW_DATA_ACK_SEEN == 0 {
            f.ack_base = v.wrapping_sub(carried);
            carried = 0;
            f.data_ack = v;
            flow::set_flags(f, FLOW_DATA_ACK_SEEN);
        } else {
            advance(&mut f.data_ack, v);
        }
        p += ack_len;
    }
    if dsn_len != 0 {
        let q = p + dsn_len + 4;
        let dll = u16::from_be_bytes([o[(q & 31) as usize], o[((q + 1) & 31) as usize]]) as u64;
        let v = read_seq(o, p, dsn_len).wrapping_add(dll);
        if f.flags & FLOW_DATA_SEQ_SEEN == 0 {
            f.end_base = v.wrapping_sub(carried);
            f.data_end = v;
            flow::set_flags(f, FLOW_DATA_SEQ_SEEN);
        } else {
            advance(&mut f.data_end, v);
        }
    }
    // Derived, not accumulated: two CPUs accounting one connection's
    // subflows at once may each write it, from the maxima, never adding a
    // range twice.
    f.bytes = acked(f).wrapping_add(sent(f));
}

/// Upload bytes the peer acknowledged at the data level.
#[inline(always)]
fn acked(f: &FlowState) -> u64 {
    if f.flags & FLOW_DATA_ACK_SEEN != 0 {
        f.data_ack.wrapping_sub(f.ack_base)
    } else {
        0
    }
}

/// Download bytes the peer sent (data sequence progress).
#[inline(always)]
fn sent(f: &FlowState) -> u64 {
    if f.flags & FLOW_DATA_SEQ_SEEN != 0 {
        f.data_end.wrapping_sub(f.end_base)
    } else {
        0
    }
}

/// A 4- or 8-byte big-endian sequence number.
#[inline(always)]
fn read_seq(o: &[u8; 32], p: u32, len: u32) -> u64 {
    let be32 = |i: u32| {
        let b = |k: u32| o[((i + k) & 31) as usize];
        u32::from_be_bytes([b(0), b(1), b(2), b(3)]) as u64
    };
    if len == 8 {
        (be32(p) << 32) | be32(p + 4)
    } else {
        be32(p)
    }
}

/// Moves `last` forward to `v` when `v` is ahead. The step is taken on the
/// low 32 bits, which both DSS forms share, so it is wrap-around safe and
/// mixing forms is fine; a value at or behind `last` (a reordered or
/// duplicate segment) changes nothing.
#[inline(always)]
fn advance(last: &mut u64, v: u64) {
    let d = (v as u32).wrapping_sub(*last as u32) as i32;
    if d > 0 {
        *last = last.wrapping_add(d as u64);
    }
}
