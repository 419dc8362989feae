//! The programs a row can time instead of emptcp's (`Under`), built from
//! raw instructions: what any program doing that much pays on this
//! machine, measured the same way in the same run.
use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd};

use anyhow::Context as _;
use emptcp::{object::MapDef, sys};

/// What a path's frames run through besides the bare program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Under {
    /// emptcp's entry program of the path's hook.
    Emptcp,
    /// [`parse_only_program`].
    ParseOnly,
    /// [`lookup_floor_program`] over a table of FLOWS' capacity.
    LookupFloor,
    /// [`lookup_floor_program`] over a table of [`SMALL_FLOOR_CAPACITY`]
    /// entries: what the table's capacity adds to the same lookup.
    SmallLookupFloor,
    /// [`lookup_floor_program`] with a [`FloorKey::V4`] key, FLOWS'
    /// capacity and value: what a table per address family would save.
    V4LookupFloor,
    /// [`two_table_floor_program`]: every subflow through a subflow table
    /// to its connection by token.
    TwoTableFloor,
}

/// The key a lookup-floor table and program use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorKey {
    /// emptcp's `FlowKey` (40 bytes: family, ports, two 16-byte addresses).
    Flow,
    /// The IPv4 4-tuple alone: source, destination, both ports (12 bytes),
    /// as a table holding IPv4 connections only would key them.
    V4,
}

impl FloorKey {
    fn size(self) -> i16 {
        match self {
            FloorKey::Flow => size_of::<emptcp_common::FlowKey>() as i16,
            FloorKey::V4 => 12,
        }
    }
    /// Where source address, destination address and the two ports go in
    /// the key (`FlowKey`: remote at 24, local at 8, ports at 4; any
    /// fixed places serve a floor).
    fn places(self) -> [i16; 3] {
        match self {
            FloorKey::Flow => [0, 16, 32],
            FloorKey::V4 => [0, 4, 8],
        }
    }
}

/// Capacity of the small floor table: 4x the stream's 1024 flows, so the
/// LRU never evicts one of them, and a bucket array of 64 KiB (16 pages)
/// where FLOWS' at the default 10^6 entries spans 16 MiB.
pub const SMALL_FLOOR_CAPACITY: u32 = 4096;

/// The reference for the cheapest useful program: Ethernet, IPv4 (with
/// its IHL) and the TCP ports read with direct packet access, each header
/// bounds-checked, as the parsing helpers of xdp-tools do; XDP_PASS.
pub fn parse_only_program() -> Vec<u8> {
    let i = emptcp::sys::insn;
    // Jumps go to `pass` (17): offset = 17 - (pc + 1).
    [
        i(0x61, 2, 1, 0, 0),       // 0: r2 = ctx->data
        i(0x61, 3, 1, 4, 0),       // 1: r3 = ctx->data_end
        i(0xbf, 4, 2, 0, 0),       // 2: r4 = r2
        i(0x07, 4, 0, 0, 34),      // 3: r4 += 14 + 20
        i(0x2d, 4, 3, 12, 0),      // 4: if r4 > r3 goto pass
        i(0x69, 5, 2, 12, 0),      // 5: r5 = eth->h_proto
        i(0x55, 5, 0, 10, 0x0008), // 6: if r5 != htons(ETH_P_IP) goto pass
        i(0x71, 5, 2, 23, 0),      // 7: r5 = ip->protocol
        i(0x55, 5, 0, 8, 6),       // 8: if r5 != IPPROTO_TCP goto pass
        i(0x71, 5, 2, 14, 0),      // 9: r5 = ip->version_ihl
        i(0x57, 5, 0, 0, 0x0f),    // 10: r5 &= 0xf
        i(0x67, 5, 0, 0, 2),       // 11: r5 <<= 2 (IHL in bytes)
        i(0x0f, 2, 5, 0, 0),       // 12: r2 += r5 (r2 + 14: the TCP header)
        i(0xbf, 4, 2, 0, 0),       // 13: r4 = r2
        i(0x07, 4, 0, 0, 14 + 20), // 14: r4 += 14 + sizeof(tcphdr)
        i(0x2d, 4, 3, 1, 0),       // 15: if r4 > r3 goto pass
        i(0x69, 6, 2, 16, 0),      // 16: r6 = tcp->dest (read, as a filter would)
        i(0xb7, 0, 0, 0, 2),       // 17: pass: r0 = XDP_PASS
        i(0x95, 0, 0, 0, 0),       // 18: exit
    ]
    .concat()
}

/// `BPF_MAP_TYPE_LRU_HASH`.
const LRU_HASH: u32 = 9;

/// A table shaped as emptcp's connection table `FLOWS` is in this run
/// (LRU hash, its value size, and its capacity unless `capacity` says
/// otherwise) with keys `key`, for [`lookup_floor_program`].
pub fn floor_table(
    flows: &OwnedFd,
    capacity: Option<u32>,
    key: FloorKey,
) -> anyhow::Result<OwnedFd> {
    let f = sys::map_facts(flows).context("read FLOWS' definition")?;
    let def = MapDef {
        map_type: LRU_HASH,
        key_size: key.size() as u32,
        value_size: f.value_size,
        max_entries: capacity.unwrap_or(f.max_entries),
        flags: 0,
        layout: None,
    };
    sys::map_create(&def, "bench_floor").context("create the floor's table")
}

/// Value size [`lookup_floor_program`] builds on its stack: emptcp's
/// `FlowState`.
const VALUE: i16 = size_of::<emptcp_common::FlowState>() as i16;

/// Where a floor program's forward jumps go, placed by [`Asm::place`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Insert,
    Pass,
    Drop,
}

/// A reference program being written: its instructions, and its forward
/// jumps to labels, patched once every label is placed.
#[derive(Default)]
struct Asm {
    p: Vec<[u8; 8]>,
    jumps: Vec<Jump>,
    places: Vec<(Label, usize)>,
}

/// A forward jump at instruction `at` to `to`, its offset not yet known.
struct Jump {
    at: usize,
    code: u8,
    dst: u8,
    src: u8,
    imm: i32,
    to: Label,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.p.push(sys::insn(code, dst, src, off, imm));
    }
    /// `lddw r1, map` (the map's fd, BPF_PSEUDO_MAP_FD): two slots.
    fn map(&mut self, fd: BorrowedFd<'_>) {
        self.op(0x18, 1, 1, 0, fd.as_raw_fd());
        self.op(0, 0, 0, 0, 0);
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.jumps.push(Jump {
            at: self.p.len(),
            code,
            dst,
            src,
            imm,
            to,
        });
        self.p.push([0; 8]);
    }
    fn place(&mut self, label: Label) {
        self.places.push((label, self.p.len()));
    }
    /// `call helper(r1 = map, r2 = fp + key_at[, r3 = fp + value_at, r4 =
    /// BPF_ANY])`: a lookup when `value_at` is None, else an update.
    fn call(&mut self, map: BorrowedFd<'_>, key_at: i16, value_at: Option<i16>) {
        self.map(map);
        self.op(0xbf, 2, 10, 0, 0); // r2 = fp
        self.op(0x07, 2, 0, 0, i32::from(key_at)); // r2 = &key
        if let Some(v) = value_at {
            self.op(0xbf, 3, 10, 0, 0);
            self.op(0x07, 3, 0, 0, i32::from(v)); // r3 = &value
            self.op(0xb7, 4, 0, 0, 0); // r4 = BPF_ANY
        }
        self.op(0x85, 0, 0, 0, if value_at.is_some() { 2 } else { 1 });
    }
    /// Ethernet + IPv4 (IHL 5) + TCP, bounds-checked with direct packet
    /// access (r2 = data, r3 = data_end after it); anything else passes.
    fn ipv4_tcp(&mut self) {
        self.op(0x61, 2, 1, 0, 0); // r2 = ctx->data
        self.op(0x61, 3, 1, 4, 0); // r3 = ctx->data_end
        self.op(0xbf, 4, 2, 0, 0); // r4 = r2
        self.op(0x07, 4, 0, 0, 14 + 20 + 20); // r4 += eth + ip + tcp
        self.jump(0x2d, 4, 3, 0, Label::Pass); // if r4 > r3 goto pass
        self.op(0x69, 5, 2, 12, 0); // r5 = eth->h_proto
        self.jump(0x55, 5, 0, 0x0008, Label::Pass); // != htons(ETH_P_IP)
        self.op(0x71, 5, 2, 14, 0); // r5 = ip->version_ihl
        self.jump(0x55, 5, 0, 0x45, Label::Pass); // IPv4 without options only
        self.op(0x71, 5, 2, 23, 0); // r5 = ip->protocol
        self.jump(0x55, 5, 0, 6, Label::Pass); // != IPPROTO_TCP
    }
    /// Zeroes the stack from `from` (a multiple of 8, negative) to the
    /// frame's top `to`, with r7 = 0.
    fn zero(&mut self, from: i16, to: i16) {
        self.op(0xb7, 7, 0, 0, 0); // r7 = 0
        for off in (from..to).step_by(8) {
            self.op(0x7b, 10, 7, off, 0);
        }
    }
    /// The 4-tuple into the `key`-shaped key below the frame's top
    /// (source, destination, ports: 4-byte stores; 12 is no multiple of
    /// 8). Leaves saddr ^ ports in r8 (a token, kept across calls) and
    /// the sequence number in r6 (kept across calls).
    fn tuple(&mut self, key: FloorKey) {
        let len = key.size();
        let [src_at, dst_at, ports_at] = key.places();
        self.op(0x61, 5, 2, 26, 0); // r5 = saddr
        self.op(0x63, 10, 5, -len + src_at, 0);
        self.op(0xbf, 8, 5, 0, 0); // r8 = saddr
        self.op(0x61, 5, 2, 30, 0); // r5 = daddr
        self.op(0x63, 10, 5, -len + dst_at, 0);
        self.op(0x61, 5, 2, 34, 0); // r5 = both ports
        self.op(0x63, 10, 5, -len + ports_at, 0);
        self.op(0xaf, 8, 5, 0, 0); // r8 ^= ports
        self.op(0x61, 6, 2, 38, 0); // r6 = seq
    }
    /// `pass` (XDP_PASS) placed at the end, then `drop` (XDP_DROP) if a
    /// jump goes there (the verifier refuses unreachable code), every
    /// jump patched.
    fn finish(mut self) -> Vec<u8> {
        self.place(Label::Pass);
        self.op(0xb7, 0, 0, 0, 2); // r0 = XDP_PASS
        self.op(0x95, 0, 0, 0, 0); // exit
        if self.jumps.iter().any(|j| j.to == Label::Drop) {
            self.place(Label::Drop);
            self.op(0xb7, 0, 0, 0, 1); // r0 = XDP_DROP
            self.op(0x95, 0, 0, 0, 0); // exit
        }
        for j in &self.jumps {
            let (_, target) = *self
                .places
                .iter()
                .find(|(l, _)| *l == j.to)
                .expect("every label a jump names is placed");
            let off = i16::try_from(target - j.at - 1).expect("a short program");
            self.p[j.at] = sys::insn(j.code, j.dst, j.src, off, j.imm);
        }
        self.p.concat()
    }
}

/// The floor of any datapath that keeps state per connection in a hash
/// table: Ethernet + IPv4 (IHL 5) + TCP read with direct packet access,
/// the 4-tuple put in a zeroed key of `key`'s size, one lookup in
/// `table` (emptcp's FLOWS shape: [`floor_table`]), and on a hit one
/// field of the entry written (the segment's sequence number: any
/// tracker updates its entry); on a miss the entry is inserted (the
/// stream's first segments, run before the rounds). XDP_PASS.
pub fn lookup_floor_program(table: BorrowedFd<'_>, key: FloorKey) -> Vec<u8> {
    let key_at = -key.size();
    // Stack accesses must be aligned to their size: the value's 8-byte
    // stores start at a multiple of 8 below the key.
    let value_at = -((key.size() + 7) & !7) - VALUE;
    let mut a = Asm::default();
    a.ipv4_tcp();
    a.zero(key_at & !7, 0);
    a.tuple(key);
    a.call(table, key_at, None);
    a.jump(0x15, 0, 0, 0, Label::Insert); // if r0 == 0 goto insert
    a.op(0x7b, 0, 6, 0, 0); // entry->[0] = seq
    a.jump(0x05, 0, 0, 0, Label::Pass);
    // insert: a zeroed value of FlowState's size after the key.
    a.place(Label::Insert);
    a.zero(value_at, value_at + VALUE);
    a.call(table, key_at, Some(value_at));
    a.finish()
}

/// Value size of [`two_table_floor_program`]'s subflow table: what a
/// subflow would keep of its own if every subflow (the initial one too)
/// named its connection by token (`JoinState` without the connection's
/// key: token, flags, rcv_nxt, window scale and prio bytes).
pub const SUBFLOW_VALUE: u32 = 16;

/// The two tables of [`two_table_floor_program`], both of FLOWS'
/// capacity: subflows (FLOWS' key, [`SUBFLOW_VALUE`]) and connections
/// by token (a 4-byte key, FLOWS' value).
pub fn two_tables(flows: &OwnedFd) -> anyhow::Result<[OwnedFd; 2]> {
    let f = sys::map_facts(flows).context("read FLOWS' definition")?;
    let table = |key_size: u32, value_size: u32, name: &str| {
        let def = MapDef {
            map_type: LRU_HASH,
            key_size,
            value_size,
            max_entries: f.max_entries,
            flags: 0,
            layout: None,
        };
        sys::map_create(&def, name).with_context(|| format!("create the floor's table {name}"))
    };
    Ok([
        table(f.key_size, SUBFLOW_VALUE, "bench_subs")?,
        table(4, f.value_size, "bench_conns")?,
    ])
}

/// The floor of a connection table in which every subflow, the initial
/// one as a joined one, reaches its connection the same way: the 4-tuple
/// (FlowKey-shaped, as [`lookup_floor_program`] builds it) looked up in
/// `subs`, the token read from its entry and looked up in `conns`; the
/// segment's sequence number written into both entries. Against
/// [`lookup_floor_program`] on FLOWS' shape (one lookup, the initial
/// subflow's cost today) it measures what that design would add to the
/// initial subflow and take off a joined one (which today pays a missed
/// FLOWS lookup, JOINS and FLOWS). A miss in `subs` inserts both entries
/// (the stream's first segments), with the token `saddr ^ ports` (unique
/// over a stream's flows; main.rs checks both tables hold each flow
/// once); a miss in `conns` after a hit returns XDP_DROP, which the
/// bench reports as a wrong verdict.
pub fn two_table_floor_program(subs: BorrowedFd<'_>, conns: BorrowedFd<'_>) -> Vec<u8> {
    let key_at = -FloorKey::Flow.size();
    // The token's stack slot below the key; the two values below it.
    let token_at = key_at - 8;
    let sub_at = token_at - SUBFLOW_VALUE as i16;
    let conn_at = sub_at - VALUE;
    let mut a = Asm::default();
    a.ipv4_tcp();
    a.zero(token_at, 0);
    a.tuple(FloorKey::Flow);
    a.call(subs, key_at, None);
    a.jump(0x15, 0, 0, 0, Label::Insert); // if r0 == 0 goto insert
    a.op(0x63, 0, 6, 8, 0); // subflow->[8] = seq
    a.op(0x61, 1, 0, 0, 0); // r1 = subflow->token
    a.op(0x63, 10, 1, token_at, 0);
    a.call(conns, token_at, None);
    a.jump(0x15, 0, 0, 0, Label::Drop); // if r0 == 0 goto drop
    a.op(0x7b, 0, 6, 0, 0); // conn->[0] = seq
    a.jump(0x05, 0, 0, 0, Label::Pass);
    // insert: the subflow (its token first) and its connection, zeroed.
    a.place(Label::Insert);
    a.zero(conn_at, token_at);
    a.op(0x63, 10, 8, sub_at, 0); // subflow.token = r8
    a.op(0x63, 10, 8, token_at, 0); // the connection's key = r8
    a.call(subs, key_at, Some(sub_at));
    a.call(conns, token_at, Some(conn_at));
    a.finish()
}

/// Entries in the floor's table: the stream's flows, once each, when every
/// timed frame hit (a miss would have inserted one more).
pub fn floor_entries(table: &OwnedFd) -> anyhow::Result<usize> {
    Ok(usize::try_from(sys::map_len(table, sys::BATCH_ENTRIES)?)?)
}
