//! A packet fuzzer with an oracle: real MPTCP frames, built and then
//! mutated (truncation, option lengths, data offsets, IHL, IPv4 fragments,
//! IP lengths, IPv6 extension headers, VLAN tags, ethertypes, protocols,
//! ADD_ADDR subtype bits, raw IP, stray bytes), run through the product's
//! chain (record_flow + strip_add_addr + recover_add_addr behind the entry
//! program) with BPF_PROG_TEST_RUN on the real kernel.
//!
//! The oracle parses every input itself (RFC 791/8200/793/8684, not the
//! eBPF code) and checks the verdict and the output frame:
//! - never XDP_ABORTED; never a verdict other than PASS or DROP;
//! - a frame the oracle calls malformed or unsupported, or one without a
//!   valid non-echo ADD_ADDR, or whose TCP checksum does not hold, passes
//!   byte-identical;
//! - otherwise the only changes allowed: the first valid ADD_ADDR's bytes
//!   become NOPs with a correct TCP checksum (every other byte equal), or,
//!   for a pure ACK whose only MPTCP option it is, the packet is dropped
//!   (and such a pure ACK is never NOP-ed instead);
//! - no program's `error` outcome moves, no XDP metadata is left behind.
//!
//! The flow is tracked and far below `remove_below` (and `recover_at` is out
//! of reach), so strip is the only action that may change a frame. Each
//! frame is built from (seed, index) alone and the flow is reset before it,
//! so a failure names the seed and index that reproduce it.
//!
//! `EMPTCP_FUZZ_FRAMES` (default 40000, about 5 s here) and
//! `EMPTCP_FUZZ_SEED` (default fixed) set the budget; `scripts/fuzz.sh
//! packets` runs it longer. Needs CAP_BPF/CAP_NET_ADMIN/CAP_SYS_ADMIN;
//! fails without them unless EMPTCP_ALLOW_SKIP=1 (tests/common/gate.rs).
mod datapath_common;

use datapath_common::*;
use emptcp_common::{FlowState, IFACE_RAW_IP, Outcome, Thresholds};

const FRAMES_ENV: &str = "EMPTCP_FUZZ_FRAMES";
const SEED_ENV: &str = "EMPTCP_FUZZ_SEED";
const DEFAULT_FRAMES: u64 = 100_000;
const DEFAULT_SEED: u64 = 0x5eed_e3b7_c0de_0010;

/// Strip always acts on the tracked flow, recover never: the oracle then
/// knows the one change a frame may get.
const FUZZ_TH: Thresholds = Thresholds {
    remove_below: 1 << 60,
    recover_at: 1 << 61,
};

#[test]
fn mutated_mptcp_frames_obey_the_oracle() {
    if !kernel_or_skip("mutated_mptcp_frames_obey_the_oracle") {
        return;
    }
    let frames = env_u64(FRAMES_ENV, DEFAULT_FRAMES);
    let seed = env_u64(SEED_ENV, DEFAULT_SEED);
    let mut ether = Dp::load();
    ether.chain(CHAIN, &EMPTCP, FUZZ_TH, LO);
    let mut raw = Dp::load();
    raw.chain(CHAIN, &EMPTCP, FUZZ_TH, LO);
    raw.iface(LO, &[CHAIN], IFACE_RAW_IP);

    let mut tally = Tally::default();
    for index in 0..frames {
        let case = Case::generate(seed, index);
        let dp = if case.raw { &mut raw } else { &mut ether };
        for base in [Seg::v4(), Seg::v6()] {
            dp.put_flow(&base.key(), &tracked());
        }
        tally.raw += case.raw as u64;
        let expect = oracle(&case.frame, case.raw);
        let before = reached(dp);
        let run = dp.entry(&case.frame);
        let what = || case.describe(seed, index, &expect);
        judge(&expect, &case.frame, case.raw, &run, &mut tally)
            .unwrap_or_else(|e| panic!("{e}\n{}", what()));
        if std::env::var_os("EMPTCP_FUZZ_DEBUG").is_some()
            && matches!(expect, Expect::Strippable { .. })
            && run.frame == case.frame
            && run.verdict == XDP_PASS
        {
            println!("passed untouched:\n{}", what());
        }
        for (row, n) in error_outcomes(dp) {
            assert_eq!(n, 0, "{row}: error outcome counted\n{}", what());
        }
        one_outcome_per_step(&before, &reached(dp), run.verdict)
            .unwrap_or_else(|e| panic!("{e}\n{}", what()));
    }
    println!(
        "seed {seed:#x}: {frames} frames: {} malformed or unsupported, {} plain, \
         {} with a valid ADD_ADDR ({} NOP-ed, {} dropped, {} passed), {} raw IP",
        tally.malformed,
        tally.plain,
        tally.strippable,
        tally.nopped,
        tally.dropped,
        tally.strippable - tally.nopped - tally.dropped,
        tally.raw,
    );
    // The fuzzer reaches the code that acts, on both ways it may act, and
    // the code that must refuse: a generator that produced only junk (or
    // only clean frames) would pass the oracle without testing it.
    for (name, n) in [
        ("malformed", tally.malformed),
        ("NOP-ed", tally.nopped),
        ("dropped", tally.dropped),
    ] {
        assert!(
            n * 50 >= frames || frames < 1000,
            "only {n} of {frames} frames {name}: the generator no longer reaches that path"
        );
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={v}: {e} (a decimal or 0x-hex number)"))
        }
        Err(_) => default,
    }
}

/// The connection of the base segments, tracked, size 0, by [`CHAIN`].
fn tracked() -> FlowState {
    FlowState {
        chain: CHAIN,
        wscale: 7,
        ..FlowState::default()
    }
}

/// `(row name, error outcomes)` of every program of the chain.
fn error_outcomes(dp: &Dp) -> Vec<(&'static str, u64)> {
    let mut v = vec![("entry", dp.entry_outcome(Outcome::Error))];
    for (a, _) in EMPTCP {
        v.push((a.name(), dp.outcome(a, Outcome::Error)));
    }
    v
}

/// Outcomes counted so far (all three kinds: `seen`, as status reports
/// it) by the entry's chain start and each step of the chain, in order.
fn reached(dp: &Dp) -> Vec<u64> {
    let mut v = vec![dp.entry_outcome(Outcome::Applied)];
    for (a, _) in EMPTCP {
        v.push(dp.outcome(a, Outcome::Seen));
    }
    v
}

/// One frame counts exactly one outcome at every step it reaches (what
/// makes `seen` exact without counting it): the first step once per chain
/// the entry started, each later one as often as the step before it,
/// unless the frame was dropped on the way.
fn one_outcome_per_step(before: &[u64], after: &[u64], verdict: u32) -> Result<(), String> {
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let names: Vec<&str> = std::iter::once("entry (chain started)")
        .chain(EMPTCP.iter().map(|(a, _)| a.name()))
        .collect();
    for (i, n) in d.iter().enumerate() {
        if *n > 1 {
            return Err(format!("{}: {n} outcomes for one frame", names[i]));
        }
    }
    for i in 1..d.len() {
        let dropped_before = verdict == XDP_DROP && i > 1;
        if d[i] > d[i - 1] || (d[i] < d[i - 1] && !dropped_before) {
            return Err(format!(
                "outcomes per step {d:?} ({names:?}): {} counted {} after {} counted {}",
                names[i],
                d[i],
                names[i - 1],
                d[i - 1]
            ));
        }
    }
    Ok(())
}

// ---- the oracle --------------------------------------------------------------

/// What the oracle allows for one input frame.
#[derive(Debug)]
enum Expect {
    /// Malformed or unsupported framing or options: pass, byte-identical.
    Malformed(&'static str),
    /// Well formed but nothing strip may act on (no valid ADD_ADDR, or a
    /// TCP checksum that does not hold): pass, byte-identical.
    Plain(&'static str),
    /// A valid non-echo ADD_ADDR at frame offset `at`, `len` bytes: pass
    /// untouched, pass with it NOP-ed, or (only if `pure_only`) drop.
    Strippable {
        at: usize,
        len: usize,
        csum_at: usize,
        pure_only: bool,
        /// An ACK segment (no SYN/FIN/RST) of the tracked connection:
        /// strip must act on it (NOP or drop), not let it through.
        must_act: bool,
    },
}

#[derive(Default)]
struct Tally {
    malformed: u64,
    plain: u64,
    strippable: u64,
    nopped: u64,
    dropped: u64,
    raw: u64,
}

/// Checks one run against the oracle's expectation.
fn judge(
    expect: &Expect,
    input: &[u8],
    raw: bool,
    run: &Run,
    tally: &mut Tally,
) -> Result<(), String> {
    if run.verdict == XDP_ABORTED {
        return Err("XDP_ABORTED".into());
    }
    if run.verdict != XDP_PASS && run.verdict != XDP_DROP {
        return Err(format!("verdict {}", run.verdict));
    }
    let untouched = run.verdict == XDP_PASS && run.frame == input;
    match *expect {
        Expect::Malformed(why) | Expect::Plain(why) => {
            if matches!(expect, Expect::Malformed(_)) {
                tally.malformed += 1;
            } else {
                tally.plain += 1;
            }
            if !untouched {
                return Err(format!(
                    "{why}: must pass byte-identical, got verdict {} and\n got: {}",
                    run.verdict,
                    hex(&run.frame)
                ));
            }
        }
        Expect::Strippable {
            at,
            len,
            csum_at,
            pure_only,
            must_act,
        } => {
            tally.strippable += 1;
            if run.verdict == XDP_DROP {
                if !pure_only {
                    return Err(
                        "dropped, but not a pure ACK whose only MPTCP option is the ADD_ADDR"
                            .into(),
                    );
                }
                tally.dropped += 1;
            } else if untouched {
                if must_act {
                    return Err(
                        "a valid ADD_ADDR on an ACK of the tracked connection passed untouched"
                            .into(),
                    );
                }
            } else {
                if pure_only {
                    return Err("a pure ACK whose only MPTCP option is the ADD_ADDR was NOP-ed instead of dropped (the client would fall back to TCP)".into());
                }
                let mut want = input.to_vec();
                want[at..at + len].fill(1);
                let mut got = run.frame.clone();
                if got.len() != want.len() {
                    return Err(format!("length changed to {}", got.len()));
                }
                // The checksum field is checked by summing, below: an
                // incremental update may give 0xffff where a fresh
                // computation gives 0 (the same value in ones' complement).
                want[csum_at..csum_at + 2].copy_from_slice(&got[csum_at..csum_at + 2]);
                got[csum_at..csum_at + 2].copy_from_slice(&want[csum_at..csum_at + 2]);
                if got != want {
                    return Err(format!(
                        "changed beyond NOP-ing the ADD_ADDR at {at}..{}\n got: {}\nwant: {}",
                        at + len,
                        hex(&run.frame),
                        hex(&want)
                    ));
                }
                match parse(&run.frame, raw) {
                    Ok(p) if p.csum_ok => {}
                    Ok(_) => return Err("NOP-ed with a wrong TCP checksum".into()),
                    Err(e) => return Err(format!("NOP-ed frame no longer parses: {e}")),
                }
                tally.nopped += 1;
            }
        }
    }
    Ok(())
}

fn oracle(frame: &[u8], raw: bool) -> Expect {
    match parse(frame, raw) {
        Err(why) => Expect::Malformed(why),
        Ok(p) => match p.add_addr {
            None => Expect::Plain("no valid non-echo ADD_ADDR"),
            Some(_) if !p.csum_ok => Expect::Plain("TCP checksum does not hold"),
            Some((at, len)) => Expect::Strippable {
                at,
                len,
                csum_at: p.l4 + 16,
                pure_only: p.payload == 0 && p.flags & (SYN | FIN | RST) == 0 && p.n_mptcp == 1,
                // MP_FASTCLOSE ends the connection before strip runs.
                must_act: p.tracked && !p.fastclose && p.flags & (SYN | FIN | RST | ACK) == ACK,
            },
        },
    }
}

/// What the oracle reads from a well-formed TCP frame.
struct Parsed {
    l4: usize,
    flags: u8,
    payload: usize,
    n_mptcp: usize,
    /// First non-echo ADD_ADDR of a valid length: (frame offset, length).
    add_addr: Option<(usize, usize)>,
    csum_ok: bool,
    /// Addresses and ports are those of the tracked connection.
    tracked: bool,
    /// An MP_FASTCLOSE (subtype 7) precedes the end of the option walk.
    fastclose: bool,
}

fn be16(f: &[u8], i: usize) -> usize {
    u16::from_be_bytes([f[i], f[i + 1]]) as usize
}

/// Parses a frame as RFC 791/8200/793/8684 and docs/datapath.md
/// ("Malformed and unsupported input") define it; Err names why the
/// datapath must leave it alone.
fn parse(f: &[u8], raw: bool) -> Result<Parsed, &'static str> {
    let (l3, v6) = if raw {
        match f.first().map(|b| b >> 4) {
            Some(4) => (0, false),
            Some(6) => (0, true),
            _ => return Err("raw IP: not IPv4 or IPv6"),
        }
    } else {
        if f.len() < 14 {
            return Err("truncated Ethernet header");
        }
        let mut l3 = 14;
        let mut proto = be16(f, 12);
        let mut tags = 0;
        while proto == 0x8100 || proto == 0x88a8 {
            if tags == 2 {
                return Err("more than two VLAN tags");
            }
            if f.len() < l3 + 4 {
                return Err("truncated VLAN tag");
            }
            proto = be16(f, l3 + 2);
            l3 += 4;
            tags += 1;
        }
        match proto {
            0x0800 => (l3, false),
            0x86dd => (l3, true),
            _ => return Err("not IP"),
        }
    };
    let addrs = if v6 {
        l3 + 8..l3 + 40
    } else {
        l3 + 12..l3 + 20
    };
    let (l4, seg_end, pseudo) = if v6 {
        if f.len() < l3 + 40 {
            return Err("truncated IPv6 header");
        }
        if f[l3] >> 4 != 6 {
            return Err("IPv6 ethertype, other version");
        }
        if f[l3 + 6] != 6 {
            return Err("IPv6: next header not TCP (extension header or other protocol)");
        }
        let plen = be16(f, l3 + 4);
        if plen < 20 || l3 + 40 + plen > f.len() {
            return Err("IPv6 payload length inconsistent with the frame");
        }
        let mut p = f[l3 + 8..l3 + 40].to_vec();
        p.extend_from_slice(&(plen as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 6]);
        (l3 + 40, l3 + 40 + plen, p)
    } else {
        if f.len() < l3 + 20 {
            return Err("truncated IPv4 header");
        }
        if f[l3] >> 4 != 4 {
            return Err("IPv4 ethertype, other version");
        }
        let ihl = (f[l3] & 0x0f) as usize * 4;
        if ihl < 20 || f.len() < l3 + ihl {
            return Err("IPv4 IHL below 5 or past the frame");
        }
        if be16(f, l3 + 6) & 0x3fff != 0 {
            return Err("IPv4 fragment");
        }
        if f[l3 + 9] != 6 {
            return Err("IPv4: not TCP");
        }
        let total = be16(f, l3 + 2);
        if total < ihl + 20 || l3 + total > f.len() {
            return Err("IPv4 total length inconsistent with the frame");
        }
        let mut p = f[l3 + 12..l3 + 20].to_vec();
        p.extend_from_slice(&[0, 6]);
        p.extend_from_slice(&((total - ihl) as u16).to_be_bytes());
        (l3 + ihl, l3 + total, p)
    };
    let doff = (f[l4 + 12] >> 4) as usize * 4;
    if doff < 20 || l4 + doff > seg_end {
        return Err("TCP data offset below 5 or past the segment");
    }
    let opts = &f[l4 + 20..l4 + doff];
    let mut n_mptcp = 0;
    let mut add_addr = None;
    let mut fastclose = false;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = opts.get(i + 1) else {
            return Err("option kind without a length byte");
        };
        let len = len as usize;
        if len < 2 || i + len > opts.len() {
            return Err("option length below 2 or past the data offset");
        }
        if opts[i] == 30 {
            if len < 3 {
                return Err("MPTCP option shorter than 3");
            }
            n_mptcp += 1;
            let sub = opts[i + 2];
            fastclose |= sub >> 4 == 7;
            if sub >> 4 == 3
                && sub & 1 == 0
                && matches!(len, 16 | 18 | 28 | 30)
                && add_addr.is_none()
            {
                add_addr = Some((l4 + 20 + i, len));
            }
        }
        i += len;
    }
    let base = if v6 { Seg::v6() } else { Seg::v4() };
    let want = base.frame();
    let (bl3, bl4) = (14, if v6 { 54 } else { 34 });
    let want_addrs = if v6 {
        bl3 + 8..bl3 + 40
    } else {
        bl3 + 12..bl3 + 20
    };
    let tracked = f.get(addrs) == want.get(want_addrs) && f[l4..l4 + 4] == want[bl4..bl4 + 4];
    Ok(Parsed {
        tracked,
        fastclose,
        l4,
        flags: f[l4 + 13],
        payload: seg_end - l4 - doff,
        n_mptcp,
        add_addr,
        csum_ok: checksum(&[&pseudo, &f[l4..seg_end]]) == 0,
    })
}

// ---- the generator -----------------------------------------------------------

/// splitmix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `pct` %.
    fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// One generated input.
struct Case {
    frame: Vec<u8>,
    raw: bool,
    /// The steps that made it (printed on failure).
    log: Vec<String>,
}

impl Case {
    fn generate(seed: u64, index: u64) -> Case {
        let mut r = Rng::new(seed, index);
        let (seg, mut log) = segment(&mut r);
        let mut frame = seg.frame();
        let raw = seg.vlans.is_empty() && r.chance(20);
        if raw {
            frame.drain(..14);
            log.push("raw IP (Ethernet header removed)".into());
        }
        let l3 = if raw { 0 } else { 14 + 4 * seg.vlans.len() };
        let v6 = seg.src.is_ipv6();
        // Mutations keep finding the headers through these offsets; those
        // that move headers (VLAN tags, extension headers) update them.
        let mut at = Offsets {
            l3,
            l4: l3 + if v6 { 40 } else { 20 + seg.ip_opts.len() },
            v6,
            raw,
        };
        for _ in 0..r.below(4) {
            let m = mutate(&mut r, &mut frame, &mut at);
            log.push(m);
        }
        if r.chance(75) {
            fix_checksums(&mut frame, &at);
            log.push("checksums recomputed".into());
        }
        Case { frame, raw, log }
    }

    fn describe(&self, seed: u64, index: u64, expect: &Expect) -> String {
        format!(
            "reproduce: {SEED_ENV}={seed:#x}, frame index {index} ({} IP)\n\
             oracle: {expect:?}\nsteps: {}\nframe: {}",
            if self.raw { "raw" } else { "Ethernet" },
            self.log.join("; "),
            hex(&self.frame)
        )
    }
}

struct Offsets {
    l3: usize,
    l4: usize,
    v6: bool,
    raw: bool,
}

/// A well-formed MPTCP segment of the tracked connection: family, VLAN
/// tags, IPv4 options, flags, payload and a random option list (at most
/// 40 bytes), usually with an ADD_ADDR.
fn segment(r: &mut Rng) -> (Seg, Vec<String>) {
    let v6 = r.chance(50);
    let mut s = if v6 { Seg::v6() } else { Seg::v4() };
    let mut log = vec![format!("IPv{}", if v6 { 6 } else { 4 })];
    s.vlans = match r.below(10) {
        0..=5 => vec![],
        6..=8 => vec![100],
        _ => vec![10, 20],
    };
    if !v6 && r.chance(20) {
        s.ip_opts = vec![1; 4 * (1 + r.below(10))];
        log.push(format!("{} bytes of IPv4 options", s.ip_opts.len()));
    }
    s.flags = r.pick(&[
        ACK,
        ACK,
        ACK,
        ACK | PSH,
        ACK | FIN,
        RST,
        ACK | RST,
        SYN | ACK,
        0,
    ]);
    if r.chance(40) {
        s.payload = (0..1 + r.below(300)).map(|_| r.byte()).collect();
    }
    // The server's first ADD_ADDR, right after the handshake: a pure ACK
    // with timestamps and the ADD_ADDR alone (strip drops it).
    if r.chance(15) {
        s.flags = ACK;
        s.payload.clear();
        s.opts = opts(&[&ts(r.next() as u32, r.next() as u32), &add_addr_option(r)]);
        log.push(format!("pure ACK, options {}", hex(&s.opts)));
        return (s, log);
    }
    s.seq = r.next() as u32;
    s.ack = r.next() as u32;
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut room = 40;
    for _ in 0..1 + r.below(5) {
        let o = option(r);
        if o.len() <= room {
            room -= o.len();
            parts.push(o);
        }
    }
    // Most frames carry an ADD_ADDR, so strip's code is reached.
    if r.chance(80) {
        let o = add_addr_option(r);
        if o.len() <= room {
            let pos = r.below(parts.len() + 1);
            parts.insert(pos, o);
        }
    }
    let mut o: Vec<u8> = parts.concat();
    while !o.len().is_multiple_of(4) {
        o.push(if r.chance(80) { 1 } else { 0 });
    }
    s.opts = o;
    log.push(format!(
        "flags {:#04x}, {} bytes payload, {} vlan tags, options {}",
        s.flags,
        s.payload.len(),
        s.vlans.len(),
        hex(&s.opts)
    ));
    (s, log)
}

/// An ADD_ADDR as a server sends it, or an echo / odd length.
fn add_addr_option(r: &mut Rng) -> Vec<u8> {
    let id = r.byte();
    let a = if r.chance(50) {
        addr("198.51.100.2")
    } else {
        addr("2001:db8:b::2")
    };
    let port = r.chance(30).then_some(8080);
    add_addr(id, a, port, r.chance(15))
}

/// One TCP or MPTCP option (RFC 793/7323/8684 layouts).
fn option(r: &mut Rng) -> Vec<u8> {
    match r.below(11) {
        0 => ts(r.next() as u32, r.next() as u32),
        1 => dss(Some((r.next(), r.pick(&[4, 8]))), None),
        2 => dss(
            r.chance(50).then(|| (r.next(), 4)),
            Some((r.next(), r.pick(&[4, 8]), r.next() as u32, r.next() as u16)),
        ),
        3 => mp_prio(r.chance(50)),
        4 => wscale(r.byte() % 15),
        5 => vec![2, 4, 0x05, 0xb4],
        6 => vec![4, 2],
        7 => mp_capable(r.next()),
        8 => vec![30, 4, 0x40, r.byte()], // REMOVE_ADDR of one id
        9 => nops(1 + r.below(3)),
        _ => {
            let len = 2 + r.below(8);
            let mut o = vec![r.pick(&[253, 254, 30, 34]), len as u8];
            o.extend((2..len).map(|_| r.byte()));
            o
        }
    }
}

/// The shortest input BPF_PROG_TEST_RUN takes for XDP (ETH_HLEN).
const MIN_FRAME: usize = 14;

/// Applies one random mutation; returns what it did.
fn mutate(r: &mut Rng, f: &mut Vec<u8>, at: &mut Offsets) -> String {
    let len = f.len();
    match r.below(14) {
        0 => {
            // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet
            // header (EINVAL), raw IP included.
            let n = MIN_FRAME + r.below(len.saturating_sub(MIN_FRAME) + 1);
            f.truncate(n);
            format!("truncated to {n}")
        }
        1 => match option_starts(f, at).as_slice() {
            [] => "no option to mangle".into(),
            starts => {
                let i = r.pick(starts);
                let v = r.pick(&[0, 1, 2, 3, 4, 8, 10, 16, 18, 28, 30, 39, 40, 255]);
                let v = if r.chance(30) { r.byte() } else { v };
                f[i + 1] = v;
                format!("option at {i}: length {v}")
            }
        },
        2 => {
            let v = (r.below(16) as u8) << 4 | f.get(at.l4 + 12).map_or(0, |b| b & 0x0f);
            set_at(f, at.l4 + 12, v, "data offset")
        }
        3 if !at.v6 => set_at(f, at.l3, 0x40 | r.below(16) as u8, "IPv4 version/IHL"),
        4 if !at.v6 => {
            let v = r.pick(&[0x2000u16, 0x0001, 0x3fff, 0x2010, 0x8000, 0x4000]);
            set16_at(f, at.l3 + 6, v, "IPv4 flags/fragment offset")
        }
        5 if at.v6 && f.len() >= at.l4 => {
            let nh = r.pick(&[0u8, 43, 44, 60, 51, 59]);
            let ext_len = 8 * (1 + r.below(2));
            let mut ext = vec![0u8; ext_len];
            ext[0] = 6;
            ext[1] = (ext_len / 8 - 1) as u8;
            f[at.l3 + 6] = nh;
            let plen = be16(f, at.l3 + 4) + ext_len;
            set16(f, at.l3 + 4, plen as u16);
            f.splice(at.l4..at.l4, ext);
            at.l4 += ext_len;
            format!("IPv6 extension header {nh}, {ext_len} bytes")
        }
        6 if !at.raw && f.len() >= 12 => {
            let tags = 1 + r.below(2);
            for _ in 0..tags {
                let tpid: u16 = r.pick(&[0x8100, 0x88a8]);
                let mut t = tpid.to_be_bytes().to_vec();
                t.extend_from_slice(&(r.below(4096) as u16).to_be_bytes());
                f.splice(12..12, t);
            }
            at.l3 += 4 * tags;
            at.l4 += 4 * tags;
            format!("{tags} more VLAN tags")
        }
        7 => {
            let field = if at.v6 { at.l3 + 4 } else { at.l3 + 2 };
            let cur = if f.len() >= field + 2 {
                be16(f, field) as i64
            } else {
                0
            };
            let v = match r.below(4) {
                0 => 0,
                1 => r.below(65536) as i64,
                _ => (cur + r.below(41) as i64 - 20).clamp(0, 65535),
            };
            set16_at(f, field, v as u16, "IP length")
        }
        8 if len > 0 => {
            let i = r.below(len);
            let v = r.byte();
            f[i] = v;
            format!("byte {i} = {v:#04x}")
        }
        9 => match add_addr_at(f, at) {
            None => "no ADD_ADDR to mangle".into(),
            Some(i) => {
                if r.chance(50) {
                    f[i + 2] ^= 1;
                    format!("ADD_ADDR at {i}: echo bit flipped")
                } else {
                    let v = r.pick(&[8, 10, 16, 18, 20, 22, 28, 30]);
                    f[i + 1] = v;
                    format!("ADD_ADDR at {i}: length {v}")
                }
            }
        },
        10 if !at.raw => {
            let v = r.pick(&[0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x1234]);
            set16_at(f, at.l3 - 2, v, "ethertype")
        }
        11 => {
            let field = if at.v6 { at.l3 + 6 } else { at.l3 + 9 };
            set_at(f, field, r.pick(&[6, 17, 1, 0, 43, 44, 255]), "IP protocol")
        }
        12 => {
            let v = f.get(at.l3).map_or(0, |b| b & 0x0f) | r.pick(&[0x40, 0x60, 0x00, 0x50]);
            set_at(f, at.l3, v, "IP version")
        }
        _ => {
            let flags = r.pick(&[ACK, SYN, FIN | ACK, RST, PSH | ACK, 0, 0xff]);
            set_at(f, at.l4 + 13, flags, "TCP flags")
        }
    }
}

fn set_at(f: &mut [u8], i: usize, v: u8, what: &str) -> String {
    match f.get_mut(i) {
        Some(b) => {
            *b = v;
            format!("{what} = {v:#04x}")
        }
        None => format!("{what}: past the frame"),
    }
}

fn set16_at(f: &mut [u8], i: usize, v: u16, what: &str) -> String {
    if f.len() < i + 2 {
        return format!("{what}: past the frame");
    }
    set16(f, i, v);
    format!("{what} = {v}")
}

/// Frame offsets of the options a lenient walk finds (kind and length
/// bytes both inside the frame).
fn option_starts(f: &[u8], at: &Offsets) -> Vec<usize> {
    let Some(&off) = f.get(at.l4 + 12) else {
        return vec![];
    };
    let end = (at.l4 + (off >> 4) as usize * 4).min(f.len());
    let mut i = at.l4 + 20;
    let mut v = Vec::new();
    while i + 1 < end {
        match f[i] {
            0 => break,
            1 => i += 1,
            _ => {
                v.push(i);
                i += (f[i + 1] as usize).max(2);
            }
        }
    }
    v
}

fn add_addr_at(f: &[u8], at: &Offsets) -> Option<usize> {
    option_starts(f, at)
        .into_iter()
        .find(|&i| f[i] == 30 && f.get(i + 2).is_some_and(|s| s >> 4 == 3))
}

/// Recomputes the IPv4 header checksum and the TCP checksum from the
/// (possibly mutated) length fields, when they lie inside the frame: most
/// mutated frames then reach the option walk and the checksum check.
fn fix_checksums(f: &mut [u8], at: &Offsets) {
    if at.v6 {
        if f.len() < at.l3 + 40 {
            return;
        }
        let end = at.l3 + 40 + be16(f, at.l3 + 4);
        if end > f.len() || end < at.l4 + 18 {
            return;
        }
        let mut p = f[at.l3 + 8..at.l3 + 40].to_vec();
        p.extend_from_slice(&((end - at.l4) as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 6]);
        tcp_checksum(f, at.l4, end, &p);
    } else {
        let ihl = f.get(at.l3).map_or(0, |b| (b & 0x0f) as usize * 4);
        if ihl < 20 || f.len() < at.l3 + ihl {
            return;
        }
        f[at.l3 + 10..at.l3 + 12].fill(0);
        let c = checksum(&[&f[at.l3..at.l3 + ihl]]);
        set16(f, at.l3 + 10, c);
        // The TCP header is where the (possibly mutated) IHL says.
        let l4 = at.l3 + ihl;
        let end = at.l3 + be16(f, at.l3 + 2);
        if end > f.len() || end < l4 + 18 {
            return;
        }
        let mut p = f[at.l3 + 12..at.l3 + 20].to_vec();
        p.extend_from_slice(&[0, 6]);
        p.extend_from_slice(&((end - l4) as u16).to_be_bytes());
        tcp_checksum(f, l4, end, &p);
    }
}

fn tcp_checksum(f: &mut [u8], l4: usize, end: usize, pseudo: &[u8]) {
    f[l4 + 16..l4 + 18].fill(0);
    let c = checksum(&[pseudo, &f[l4..end]]);
    set16(f, l4 + 16, c);
}

// ---- the oracle's control ----------------------------------------------------

/// The oracle refuses the outputs a broken datapath would give (no kernel
/// needed): without this, an oracle that accepts everything would pass.
#[test]
fn the_oracle_rejects_wrong_outputs() {
    let aa = add_addr(2, addr("198.51.100.2"), None, false);
    let with = |flags: u8, payload: usize, o: &[u8]| {
        Seg::v4()
            .with(|s| {
                s.flags = flags;
                s.payload = vec![7; payload];
                s.opts = o.to_vec();
            })
            .frame()
    };
    let data_opts = opts(&[&dss(Some((100, 4)), None), &aa]);
    let mut nopped_opts = data_opts.clone();
    let n = nopped_opts.len();
    nopped_opts[n - aa.len()..].fill(1);
    let data = with(ACK, 10, &data_opts);
    let nopped = with(ACK, 10, &nopped_opts);
    let pure = with(ACK, 0, &opts(&[&aa]));
    let run = |verdict: u32, frame: &[u8]| Run {
        verdict,
        frame: frame.to_vec(),
        meta_left: 0,
    };
    let judged = |input: &[u8], r: &Run| {
        judge(
            &oracle(input, false),
            input,
            false,
            r,
            &mut Tally::default(),
        )
    };

    // What the datapath must do passes the oracle.
    judged(&data, &run(XDP_PASS, &nopped)).expect("NOP-ed data segment");
    judged(&pure, &run(XDP_DROP, &pure)).expect("dropped pure ACK");
    // Everything else is caught.
    let mut bad_csum = nopped.clone();
    bad_csum[34 + 16] ^= 0x40;
    let mut other_byte = nopped.clone();
    other_byte[34 + 4] ^= 1;
    let mut malformed = data.clone();
    malformed[34 + 12] = 0x40; // data offset 4
    let mut pure_nopped = pure.clone();
    pure_nopped[34 + 20..34 + 20 + aa.len()].fill(1);
    for (what, input, r) in [
        ("aborted", &data, run(XDP_ABORTED, &data)),
        ("wrong checksum", &data, run(XDP_PASS, &bad_csum)),
        ("another byte changed", &data, run(XDP_PASS, &other_byte)),
        ("data segment dropped", &data, run(XDP_DROP, &data)),
        ("valid ADD_ADDR left alone", &data, run(XDP_PASS, &data)),
        ("pure ACK NOP-ed", &pure, run(XDP_PASS, &pure_nopped)),
        ("malformed changed", &malformed, run(XDP_PASS, &data)),
        ("malformed dropped", &malformed, run(XDP_DROP, &malformed)),
    ] {
        assert!(judged(input, &r).is_err(), "the oracle accepted: {what}");
    }
}
