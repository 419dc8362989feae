//! `set_backup` (arg: 1 = backup, 0 = regular): make an MPTCP segment carry
//! MP_PRIO with the wanted B flag. An MP_PRIO already present gets its flag
//! rewritten; otherwise a NOP + the 3-byte MP_PRIO is inserted when the
//! options have room (`insert.rs`). Only segments that already carry an
//! MPTCP option are touched (never plain TCP, SYN or RST).
//!
//! An insert is a signal, sent once per subflow and value, as Linux sends
//! MP_PRIO once (and as egress `set_backup` does): a subflow of a
//! connection record_flow tracks remembers the value it got
//! (`prio_sent` of the connection for the initial subflow, of its `JOINS`
//! entry for a joined one), and its later segments pass untouched until
//! the chain asks for the other value. An untracked subflow has nowhere
//! to remember it: each of its segments with room gets one.
use emptcp_common::{Action, FlowStat, OPTS_EOL, OptRef, XdpMeta};

use crate::{
    action_program,
    chain::{self, Step, Verdict},
    csum, flow,
    hook::Out,
    insert::{Insert, InsertOption, has_room, insert_option},
    options::{Buf64, KIND_MPTCP, KIND_NOP, RST, SYN, Seg, key, store, store_be16},
    stats,
};

action_program!(set_backup, tc_set_backup, Action::SetBackup, run);

/// Subtype 5 in the high nibble; the B flag is bit 0.
const MP_PRIO_B2: u8 = 0x50;

#[inline(always)]
fn run<H: InsertOption>(ctx: &H, m: *mut XdpMeta) -> Step {
    chain::or_passed(set(ctx, m, (chain::arg(m) != 0) as u8))
}

#[inline(always)]
fn set<H: InsertOption>(ctx: &H, m: *mut XdpMeta, backup: u8) -> Option<Step> {
    if !chain::well_formed(m) {
        return None;
    }
    let s = Seg::of(m);
    if s.flags & (SYN | RST) != 0 || s.n_mptcp == 0 {
        return None;
    }
    let t = s.header(ctx)?;
    let prio = s.prio;
    let mut o = [0u8; 8];
    if s.read(ctx, prio, &mut o) {
        let at = prio.off as u32 + 2;
        let b = o[2];
        let nb = (b & !1) | backup;
        if nb != b {
            // The flag byte is the high half of a checksum word at an even
            // option offset (options start at an even TCP offset).
            let word = |v: u8| {
                if at & 1 == 0 {
                    (v as u16) << 8
                } else {
                    v as u16
                }
            };
            let c = csum::replace(t.be16(16), word(b), word(nb));
            if !store(ctx, s.at(prio) + 2, &nb, 1) || !store_be16(ctx, s.l4 + 16, c) {
                return Some(Step::error(Verdict::Return(Out::Drop)));
            }
            stats::event(FlowStat::MpPrioRewritten);
        }
        return Some(Step::applied(Verdict::Next));
    }
    let sent = prio_sent(m);
    if let Some(p) = &sent
        && **p == backup + 1
    {
        return None;
    }
    if s.opt_state == OPTS_EOL || !has_room(&s, 4) {
        stats::event(FlowStat::MpPrioNoRoom);
        return None;
    }
    let mut opt = Buf64::zeroed();
    // NOP first, like Linux pads its own options.
    opt.0[0] = KIND_NOP;
    opt.0[1] = KIND_MPTCP;
    opt.0[2] = 3;
    opt.0[3] = MP_PRIO_B2 | backup;
    match insert_option(ctx, &s, &t, &opt, 4) {
        Insert::Done { at, m } => {
            if let Some(p) = sent {
                *p = backup + 1;
            }
            // The description follows the packet: MP_PRIO after the NOP.
            unsafe {
                (*m).prio = OptRef {
                    off: (at + 1) as u8,
                    len: 3,
                };
                (*m).n_mptcp = (*m).n_mptcp.saturating_add(1);
            }
            stats::event(FlowStat::MpPrioInserted);
            Some(Step::applied(Verdict::Next))
        }
        Insert::Refused => {
            stats::event(FlowStat::MpPrioNoRoom);
            None
        }
        Insert::Unchanged => Some(Step::error(Verdict::Next)),
        Insert::Damaged => Some(Step::error(Verdict::Return(Out::Drop))),
    }
}

/// What the packet's subflow remembers of the MP_PRIO inserted into it (0
/// none, 1 backup=0, 2 backup=1); None for an untracked subflow.
#[inline(always)]
fn prio_sent(m: *mut XdpMeta) -> Option<&'static mut u8> {
    let c = flow::resolve(&key(m), true)?;
    Some(match c.join {
        None => &mut c.f.prio_sent,
        Some(j) => &mut j.prio_sent,
    })
}
