//! The few bpf(2) commands aya 0.14 does not expose: the XDP ifindex of a
//! link, the program id in a PROG_ARRAY slot, link detach, batched map
//! reads; and
//! BPF_PROG_TEST_RUN of programs aya holds no handle of (see `test_run`). The attribute
//! layouts are the kernel's stable UAPI (include/uapi/linux/bpf.h).
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `union bpf_attr` is at most a few hundred bytes; commands read their own
/// prefix of it. Zeroed padding is required by the kernel.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32_at(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64_at(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, writable buffer of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_result(r: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel returned a fresh file descriptor we now own.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

/// Opens a pinned object (map, program or link).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut attr = Attr::new();
    attr.u64_at(0, c.as_ptr() as u64);
    bpf(BPF_OBJ_GET, &mut attr).map(fd_result)
}

/// Creates a map as aya would for a definition without BTF (`name`: at
/// most 15 bytes are kept, as the kernel keeps them).
pub fn map_create(def: &crate::object::MapDef, name: &str) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32_at(0, def.map_type)
        .u32_at(4, def.key_size)
        .u32_at(8, def.value_size)
        .u32_at(12, def.max_entries)
        .u32_at(16, def.flags);
    let n = name.len().min(15);
    attr.0[28..28 + n].copy_from_slice(&name.as_bytes()[..n]);
    bpf(BPF_MAP_CREATE, &mut attr).map(fd_result)
}

/// Pins the object `fd` at `path` (bpffs).
pub fn obj_pin(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut attr = Attr::new();
    attr.u64_at(0, c.as_ptr() as u64)
        .u32_at(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// What a link reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFacts {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// For XDP links: the interface (0 once the interface is gone).
    pub ifindex: u32,
}

/// `BPF_LINK_TYPE_XDP`.
pub const LINK_TYPE_XDP: u32 = 6;

pub fn link_facts(fd: &OwnedFd) -> io::Result<LinkFacts> {
    // struct bpf_link_info: type, id, prog_id, then an 8-aligned union whose
    // xdp member starts with the ifindex.
    let mut info = [0u8; 64];
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32)
        .u32_at(4, info.len() as u32)
        .u64_at(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let u = |o: usize| u32::from_ne_bytes([info[o], info[o + 1], info[o + 2], info[o + 3]]);
    Ok(LinkFacts {
        link_type: u(0),
        id: u(4),
        prog_id: u(8),
        ifindex: u(16),
    })
}

/// The id of the program in slot `index` of a PROG_ARRAY, `None` if empty.
pub fn prog_array_get(map: &OwnedFd, index: u32) -> io::Result<Option<u32>> {
    let key = index;
    let mut value = 0u32;
    let mut attr = Attr::new();
    attr.u32_at(0, map.as_raw_fd() as u32)
        .u64_at(8, &key as *const u32 as u64)
        .u64_at(16, &mut value as *mut u32 as u64);
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens a link by id (for links we do not hold a pin of).
pub fn link_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32_at(0, id);
    bpf(BPF_LINK_GET_FD_BY_ID, &mut attr).map(fd_result)
}

/// Detaches a link even while other fds or pins hold it.
pub fn link_detach(fd: &OwnedFd) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32);
    bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_LINK_UPDATE: libc::c_long = 29;
/// Create only, never overwrite (map update flag).
pub const BPF_NOEXIST: u64 = 1;
/// Create or overwrite.
pub const BPF_ANY: u64 = 0;

/// Swaps the program behind a link atomically.
pub fn link_update(link: &OwnedFd, prog: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let mut attr = Attr::new();
    attr.u32_at(0, link.as_raw_fd() as u32)
        .u32_at(4, prog.as_raw_fd() as u32);
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

fn map_op(
    cmd: libc::c_long,
    map: &OwnedFd,
    key: *const u8,
    value: u64,
    flags: u64,
) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, map.as_raw_fd() as u32)
        .u64_at(8, key as u64)
        .u64_at(16, value)
        .u64_at(24, flags);
    bpf(cmd, &mut attr).map(|_| ())
}

/// Copies every entry of `from` into `to` (same key size; `value_size` is
/// `to`'s, at least `from`'s: a shorter old value is zero-extended, see
/// `plan::APPEND_ONLY_MAPS`), keeping entries `to` already has. Returns the
/// number of entries copied. Values of per-CPU maps are not supported (the
/// planner never migrates them).
///
/// An array has every index from its creation (an update with
/// `BPF_NOEXIST` always fails there), so "already has" means a non-zero
/// value: the programs wrote it since `to` was created, and it stays; an
/// index still all zeros takes the old value.
pub fn copy_entries(
    from: &OwnedFd,
    to: &OwnedFd,
    key_size: usize,
    value_size: usize,
) -> io::Result<u64> {
    use std::os::fd::AsFd as _;
    let array = map_facts(to)?.map_type == crate::object::BPF_MAP_TYPE_ARRAY;
    let from_size = map_facts(from)?.value_size as usize;
    if from_size > value_size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("old values of {from_size} bytes do not fit new ones of {value_size}"),
        ));
    }
    // Past the old value's bytes the buffer stays zero.
    let mut value = vec![0u8; value_size];
    let mut current = vec![0u8; value_size];
    let mut copied = 0;
    let each = |key: &[u8], old: &[u8]| {
        value[..from_size].copy_from_slice(old);
        Ok(match put_entry(to, array, key, &value, &mut current)? {
            Put::Copied => {
                copied += 1;
                true
            }
            Put::Kept => true,
            Put::Full => false,
        })
    };
    map_entries(from.as_fd(), key_size, from_size, BATCH_ENTRIES, each)?;
    Ok(copied)
}

/// What [`put_entry`] did.
enum Put {
    Copied,
    /// `to` has the entry already: kept.
    Kept,
    /// `to` is full (a smaller capacity): the copy stops.
    Full,
}

/// Writes `key` -> `value` into `to` unless it has the key (an array: a
/// non-zero value at the index; `current` is a buffer of its value size).
fn put_entry(
    to: &OwnedFd,
    array: bool,
    key: &[u8],
    value: &[u8],
    current: &mut [u8],
) -> io::Result<Put> {
    if array {
        map_lookup(to, key, current)?;
        if current.iter().any(|b| *b != 0) {
            return Ok(Put::Kept);
        }
    }
    let flags = if array { BPF_ANY } else { BPF_NOEXIST };
    match map_op(
        BPF_MAP_UPDATE_ELEM,
        to,
        key.as_ptr(),
        value.as_ptr() as u64,
        flags,
    ) {
        Ok(()) => Ok(Put::Copied),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(Put::Kept),
        Err(e) if e.raw_os_error() == Some(libc::E2BIG) => Ok(Put::Full),
        Err(e) => Err(e),
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// XDP verdicts (`enum xdp_action`).
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Loads a program of `prog_type` from raw instructions (8 bytes each).
/// The license every program here is loaded under (GPL helpers).
const LICENSE: &[u8] = b"GPL\0";

/// `BPF_PROG_LOAD`'s attributes for `insns` of `prog_type` named `name`
/// (the kernel keeps 15 bytes of it), no log.
fn prog_load_attr(prog_type: u32, insns: &[u8], name: &str) -> Attr {
    let mut attr = Attr::new();
    attr.u32_at(0, prog_type)
        .u32_at(4, (insns.len() / 8) as u32)
        .u64_at(8, insns.as_ptr() as u64)
        .u64_at(16, LICENSE.as_ptr() as u64);
    let n = name.len().min(15);
    attr.0[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    attr
}

fn load_insns(prog_type: u32, insns: &[u8], name: &str) -> io::Result<OwnedFd> {
    bpf(BPF_PROG_LOAD, &mut prog_load_attr(prog_type, insns, name)).map(fd_result)
}

/// The end of the verifier's log for the XDP program `insns` (which a
/// load just refused), from a second load with logging on: a hand-written
/// program's EINVAL says nothing of which instruction was refused. Kept
/// apart from [`load_xdp_insns`], whose error keeps its errno for callers
/// that tell a missing helper from a bug.
pub fn xdp_verifier_log(name: &str, insns: &[u8]) -> String {
    let mut log = vec![0u8; 1 << 16];
    let mut attr = prog_load_attr(BPF_PROG_TYPE_XDP, insns, name);
    attr.u32_at(24, 1) // log_level
        .u32_at(28, log.len() as u32)
        .u64_at(32, log.as_mut_ptr() as u64);
    if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
        drop(fd_result(fd));
        return "(it loads with the log on)".to_string();
    }
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let tail: Vec<&str> = text.lines().rev().take(12).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Loads an XDP program from raw instructions (8 bytes each, no map
/// references), e.g. a reference program a benchmark compares with.
pub fn load_xdp_insns(name: &str, insns: &[u8]) -> io::Result<OwnedFd> {
    load_insns(BPF_PROG_TYPE_XDP, insns, name)
}

/// Loads `r0 = verdict; exit`.
pub fn load_xdp_verdict(name: &str, verdict: u32) -> io::Result<OwnedFd> {
    let v = verdict.to_le_bytes();
    let insns: [u8; 16] = [
        0xb7, 0x00, 0x00, 0x00, v[0], v[1], v[2], v[3], // mov r0, verdict
        0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
    ];
    load_insns(BPF_PROG_TYPE_XDP, &insns, name)
}

/// Loads `r0 = XDP_PASS; exit`: the "bare XDP_PASS program" benchmarks
/// compare against.
pub fn load_xdp_pass(name: &str) -> io::Result<OwnedFd> {
    load_xdp_verdict(name, XDP_PASS)
}

const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// Loads the TC classifier `r0 = verdict; exit` (e.g. `TCX_NEXT`, -1: the
/// "bare TC program" the egress benchmark compares against).
pub fn load_tc_verdict(name: &str, verdict: i32) -> io::Result<OwnedFd> {
    let v = verdict.to_le_bytes();
    let insns: [u8; 16] = [
        0xb7, 0x00, 0x00, 0x00, v[0], v[1], v[2], v[3], // mov r0, verdict
        0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
    ];
    load_insns(BPF_PROG_TYPE_SCHED_CLS, &insns, name)
}

/// `bpf_clone_redirect`'s helper number and its flag for the receive path.
const BPF_FUNC_CLONE_REDIRECT: i32 = 13;
const BPF_F_INGRESS: i32 = 1;

/// Loads the injector of [`inject_ingress`]: a TC classifier that clones
/// its skb into the receive path of the skb's own device
/// (`bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS)`) and returns
/// the helper's result.
pub fn load_ingress_injector(name: &str) -> io::Result<OwnedFd> {
    let i = insn;
    let insns = [
        i(0x61, 2, 1, SKB_CTX_IFINDEX as i16, 0), // r2 = skb->ifindex
        i(0xb7, 3, 0, 0, BPF_F_INGRESS),          // r3 = BPF_F_INGRESS
        i(0x85, 0, 0, 0, BPF_FUNC_CLONE_REDIRECT), // r0 = bpf_clone_redirect(r1, r2, r3)
        i(0x95, 0, 0, 0, 0),                      // exit
    ]
    .concat();
    load_insns(BPF_PROG_TYPE_SCHED_CLS, &insns, name)
}

/// Hands the Ethernet frame `data` to the local stack as if device
/// `ifindex` had received it: one BPF_PROG_TEST_RUN of `injector`
/// ([`load_ingress_injector`]) on the frame as an skb of that device (the
/// device is looked up in the caller's network namespace). The test run's
/// own skb is freed; its clone goes through `netif_rx` like a received
/// packet: the device's generic XDP and TC ingress programs, then the
/// stack. On a device without a link-layer header (raw IP: tun, wwan) the
/// kernel takes the Ethernet header off before the redirect.
pub fn inject_ingress(
    injector: std::os::fd::BorrowedFd<'_>,
    data: &[u8],
    ifindex: u32,
) -> io::Result<()> {
    let r = test_run_skb(injector, data, ifindex, SkbWay::Ingress, 1)?;
    match r.retval as i32 {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

/// Loads a TC classifier from raw instructions (8 bytes each, no map
/// references): small probes and test programs beside ours.
pub fn load_tc_insns(name: &str, insns: &[u8]) -> io::Result<OwnedFd> {
    load_insns(BPF_PROG_TYPE_SCHED_CLS, insns, name)
}

/// One eBPF instruction (8 bytes): opcode, destination and source
/// registers, offset, immediate. For the small programs loaded from raw
/// instructions (probes, bench baselines, test controls).
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | dst;
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..].copy_from_slice(&imm.to_le_bytes());
    b
}

/// Loads the program the datapath's XDP-metadata description amounted to,
/// for GRO comparisons: 4 bytes of metadata in front of every packet, a
/// different random number each (`bpf_get_prandom_u32`), then XDP_PASS.
/// GRO never merges packets whose metadata differ (`skb_metadata_differs`),
/// so behind it every segment reaches TCP alone. EINVAL: the verifier
/// refused it (a kernel that gives XDP programs no `bpf_xdp_adjust_meta`).
pub fn load_xdp_per_packet_meta(name: &str) -> io::Result<OwnedFd> {
    let i = insn;
    let insns = [
        i(0xbf, 6, 1, 0, 0),  // 0: r6 = ctx
        i(0x85, 0, 0, 0, 7),  // 1: call bpf_get_prandom_u32
        i(0xbf, 7, 0, 0, 0),  // 2: r7 = r0
        i(0xbf, 1, 6, 0, 0),  // 3: r1 = ctx
        i(0xb7, 2, 0, 0, -4), // 4: r2 = -4
        i(0x85, 0, 0, 0, 54), // 5: call bpf_xdp_adjust_meta
        i(0x55, 0, 0, 6, 0),  // 6: if r0 != 0 goto pass (13)
        i(0x61, 2, 6, 8, 0),  // 7: r2 = ctx->data_meta
        i(0x61, 3, 6, 0, 0),  // 8: r3 = ctx->data
        i(0xbf, 4, 2, 0, 0),  // 9: r4 = r2
        i(0x07, 4, 0, 0, 4),  // 10: r4 += 4
        i(0x2d, 4, 3, 1, 0),  // 11: if r4 > r3 goto pass (13)
        i(0x63, 2, 7, 0, 0),  // 12: *(u32 *)(r2 + 0) = r7
        i(0xb7, 0, 0, 0, 2),  // 13: pass: r0 = XDP_PASS
        i(0x95, 0, 0, 0, 0),  // 14: exit
    ]
    .concat();
    load_insns(BPF_PROG_TYPE_XDP, &insns, name)
}

const BPF_PROG_QUERY: libc::c_long = 16;
/// `BPF_TCX_INGRESS` (Linux 6.6).
pub const BPF_TCX_INGRESS: u32 = 46;

/// Whether the kernel knows `attach_type` for interfaces: `BPF_PROG_QUERY`
/// on `ifindex` succeeds (it only reads) for a known attach type and fails
/// with EINVAL for an unknown one (e.g. `BPF_TCX_INGRESS` before 6.6).
pub fn attach_type_known(ifindex: u32, attach_type: u32) -> io::Result<bool> {
    let mut attr = Attr::new();
    attr.u32_at(0, ifindex).u32_at(4, attach_type);
    match bpf(BPF_PROG_QUERY, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, Copy)]
pub struct TestRun {
    pub retval: u32,
    /// Mean nanoseconds per repetition, as measured by the kernel.
    pub duration_ns: u32,
}

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
/// XDP_FLAGS_DRV_MODE: native XDP.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// XDP_FLAGS_SKB_MODE: generic XDP.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;

/// Attaches an XDP program to `ifindex` with a bpf_link (detached when the
/// returned fd is closed, since it is not pinned).
pub fn xdp_link_create(
    prog: std::os::fd::BorrowedFd<'_>,
    ifindex: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let mut attr = Attr::new();
    attr.u32_at(0, prog.as_raw_fd() as u32)
        .u32_at(4, ifindex)
        .u32_at(8, BPF_XDP)
        .u32_at(12, flags);
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches a TC classifier to `ifindex` (of the caller's network
/// namespace) with a TCX link of `attach_type` (`BPF_TCX_INGRESS`, ...),
/// after the programs already there; detached when the returned fd is
/// closed, since it is not pinned.
pub fn tcx_link_create(
    prog: std::os::fd::BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let mut attr = Attr::new();
    attr.u32_at(0, prog.as_raw_fd() as u32)
        .u32_at(4, ifindex)
        .u32_at(8, attach_type);
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What one BPF_PROG_TEST_RUN reports back.
struct RunOut {
    retval: u32,
    duration_ns: u32,
}

// BPF_PROG_TEST_RUN by hand, for programs aya holds no handle of. aya 0.14
// runs a test through its `TestRun` trait, implemented on its program types
// (`Xdp`, `SchedClassifier`, ...), which it builds only for programs it
// loaded from an object or opened by pin or `ProgramInfo`. The runs below
// are of programs loaded here from raw instructions (the agent's ingress
// injector, the feature probes of `kernel`, the bare XDP_PASS/TC programs
// the benchmarks compare against), which aya cannot load, and of any
// program fd the benchmarks hold. Programs of the object are run through
// aya: `simulate` (its sandbox) and the datapath tests.

/// One BPF_PROG_TEST_RUN of `prog` on `data`, `repeat` times, with `ctx` as
/// the context and `flags`.
fn test_run<T>(
    prog: std::os::fd::BorrowedFd<'_>,
    data: &[u8],
    ctx: Option<&[T]>,
    repeat: u32,
    flags: u32,
) -> io::Result<RunOut> {
    use std::os::fd::AsRawFd as _;
    let mut attr = Attr::new();
    attr.u32_at(0, prog.as_raw_fd() as u32)
        .u32_at(8, data.len() as u32)
        .u64_at(16, data.as_ptr() as u64)
        .u32_at(32, repeat)
        .u32_at(64, flags);
    if let Some(ctx) = ctx {
        attr.u32_at(40, std::mem::size_of_val(ctx) as u32)
            .u64_at(48, ctx.as_ptr() as u64);
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    let u = |o: usize| u32::from_ne_bytes([attr.0[o], attr.0[o + 1], attr.0[o + 2], attr.0[o + 3]]);
    Ok(RunOut {
        retval: u(4),
        duration_ns: u(36),
    })
}

/// Runs an XDP program on `data`. `ingress_ifindex` (with `flags`) selects
/// the device (`xdp_md.ingress_ifindex`); `repeat` runs it that many times.
pub fn test_run_xdp(
    prog: std::os::fd::BorrowedFd<'_>,
    data: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
    flags: u32,
) -> io::Result<TestRun> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex (the kernel reads `data` as the
    // metadata length). Given only when the device or flags matter.
    let ctx = [0, data.len() as u32, 0, ingress_ifindex, 0, 0];
    let ctx = (ingress_ifindex != 0 || flags != 0).then_some(&ctx[..]);
    let r = test_run(prog, data, ctx, repeat, flags)?;
    Ok(TestRun {
        retval: r.retval,
        duration_ns: r.duration_ns,
    })
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;

/// Opens a loaded program by id.
pub fn prog_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32_at(0, id);
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(fd_result)
}

/// Opens a map by id.
pub fn map_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32_at(0, id);
    bpf(BPF_MAP_GET_FD_BY_ID, &mut attr).map(fd_result)
}

fn obj_info(fd: &OwnedFd, info: &mut [u8]) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32)
        .u32_at(4, info.len() as u32)
        .u64_at(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// The ids of the maps a program uses (`bpf_prog_info.map_ids`).
pub fn prog_map_ids(prog: &OwnedFd) -> io::Result<Vec<u32>> {
    // struct bpf_prog_info: nr_map_ids at byte 52, map_ids (a pointer) at 56.
    let mut info = [0u8; 64];
    obj_info(prog, &mut info)?;
    let n = u32::from_ne_bytes([info[52], info[53], info[54], info[55]]);
    // Maps may be added between the two calls (never to a loaded program,
    // but be safe): the kernel fills at most `n`.
    let mut ids = vec![0u32; n as usize];
    let mut info = [0u8; 64];
    info[52..56].copy_from_slice(&n.to_ne_bytes());
    info[56..64].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    obj_info(prog, &mut info)?;
    Ok(ids)
}

/// What a map reports about itself (the part emptcp reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFacts {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub name: String,
}

pub fn map_facts(map: &OwnedFd) -> io::Result<MapFacts> {
    // struct bpf_map_info: type, id, key_size, value_size, max_entries,
    // map_flags, name[16].
    let mut info = [0u8; 40];
    obj_info(map, &mut info)?;
    let u = |o: usize| u32::from_ne_bytes([info[o], info[o + 1], info[o + 2], info[o + 3]]);
    let name = &info[24..40];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Ok(MapFacts {
        map_type: u(0),
        key_size: u(8),
        value_size: u(12),
        max_entries: u(16),
        name: String::from_utf8_lossy(&name[..end]).into_owned(),
    })
}

/// Reads the value of `key` into `value` (sized to the map's value size).
pub fn map_lookup(map: &OwnedFd, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    map_op(
        BPF_MAP_LOOKUP_ELEM,
        map,
        key.as_ptr(),
        value.as_mut_ptr() as u64,
        0,
    )
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries a batched read asks for at first: a few pages of keys and
/// values per system call.
pub const BATCH_ENTRIES: usize = 256;

/// Calls `each(key, value)` for every entry of the hash map or array `map`
/// (key and value sizes as given) until it returns false, reading a batch
/// of entries per system call (BPF_MAP_LOOKUP_BATCH, Linux 5.6) instead of
/// two per entry (next key, then lookup): a walk of 10^5 entries once a
/// second was 2x10^5 system calls. The kernel walks a hash map bucket by
/// bucket, so an entry added or deleted meanwhile may or may not be seen,
/// but none is seen twice (a next-key walk whose current key is deleted
/// starts over from the first bucket). `room`: entries asked for per call
/// ([`BATCH_ENTRIES`]; it doubles when one bucket holds more). An error of
/// `each` ends the walk and is returned.
pub fn map_entries(
    map: std::os::fd::BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    room: usize,
    mut each: impl FnMut(&[u8], &[u8]) -> io::Result<bool>,
) -> io::Result<()> {
    let mut room = room.max(1);
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    // The position after the last bucket read (a u32 for hash maps, the
    // key of an array: 8 bytes of room); none before the first call.
    let (mut at, mut next) = ([0u8; 8], [0u8; 8]);
    let mut first = true;
    loop {
        keys.resize(room * key_size, 0);
        values.resize(room * value_size, 0);
        let mut attr = Attr::new();
        attr.u64_at(0, if first { 0 } else { at.as_ptr() as u64 })
            .u64_at(8, next.as_mut_ptr() as u64)
            .u64_at(16, keys.as_mut_ptr() as u64)
            .u64_at(24, values.as_mut_ptr() as u64)
            .u32_at(32, room as u32)
            .u32_at(36, map.as_raw_fd() as u32);
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        // The kernel writes back how many entries it copied, also with
        // ENOENT (the last batch).
        let n = u32::from_ne_bytes(attr.0[32..36].try_into().unwrap()) as usize;
        let done = match r {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            // One bucket holds more entries than the room: more room.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 => {
                room *= 2;
                continue;
            }
            Err(e) => return Err(e),
        };
        for i in 0..n.min(room) {
            let go_on = each(
                &keys[i * key_size..(i + 1) * key_size],
                &values[i * value_size..(i + 1) * value_size],
            )?;
            if !go_on {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
        at = next;
        first = false;
    }
}

/// Number of entries of the hash map `map` now (its key and value sizes
/// read from the kernel), with [`map_entries`]' batched walk, `room`
/// entries per system call.
pub fn map_len(map: &OwnedFd, room: usize) -> io::Result<u64> {
    let f = map_facts(map)?;
    let mut n = 0u64;
    map_entries(
        std::os::fd::AsFd::as_fd(map),
        f.key_size as usize,
        f.value_size as usize,
        room,
        |_, _| {
            n += 1;
            Ok(true)
        },
    )?;
    Ok(n)
}

/// Size of `struct __sk_buff` (UAPI) as a test-run context, and the offset
/// of its `ifindex`: the device the skb is given (its egress chains apply).
const SKB_CTX_SIZE: usize = 192;
const SKB_CTX_IFINDEX: usize = 40;
/// Offset of `ingress_ifindex` in `struct __sk_buff`.
const SKB_CTX_INGRESS_IFINDEX: usize = 36;

/// Which way a test-run skb goes through its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkbWay {
    /// Leaving: `ifindex` is the device, `ingress_ifindex` 0 (a local
    /// sender's skb).
    Egress,
    /// Arriving: both are the device.
    Ingress,
}

/// Runs a TC (sched_cls) program `repeat` times on the Ethernet frame
/// `data` as an skb of device `ifindex` going `way`; the verdict is the
/// program's return code as an i32 bit pattern.
pub fn test_run_skb(
    prog: std::os::fd::BorrowedFd<'_>,
    data: &[u8],
    ifindex: u32,
    way: SkbWay,
    repeat: u32,
) -> io::Result<TestRun> {
    let mut ctx = [0u8; SKB_CTX_SIZE];
    ctx[SKB_CTX_IFINDEX..SKB_CTX_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    if way == SkbWay::Ingress {
        ctx[SKB_CTX_INGRESS_IFINDEX..SKB_CTX_INGRESS_IFINDEX + 4]
            .copy_from_slice(&ifindex.to_ne_bytes());
    }
    let r = test_run(prog, data, Some(&ctx[..]), repeat, 0)?;
    Ok(TestRun {
        retval: r.retval,
        duration_ns: r.duration_ns,
    })
}
