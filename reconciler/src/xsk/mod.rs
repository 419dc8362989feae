//! A TX-only AF_XDP socket: sends frames forged in user space (packet
//! copy's control packets) out of one queue of one interface, towards the
//! peer. See docs/packet-copy.md.
//!
//! Written on `libc` against the kernel ABI (linux/if_xdp.h) rather than on
//! a crate: the one pure-Rust crate that fits (xdpilone) is EUPL-1.2, the
//! others load their own XDP program or build C (docs/packet-copy.md).
//!
//! What it sets up: a UMEM of `frames` chunks, the fill ring (which the
//! kernel requires at bind but a TX-only socket never uses), the
//! completion ring and the TX ring, both with `frames` slots, so that a
//! free UMEM frame always implies a free TX slot. No RX ring and no XDP
//! program: a TX-only socket needs neither (an XSKMAP redirect is only
//! for receiving). Bound without XDP_COPY/XDP_ZEROCOPY, the kernel tries
//! zero-copy and falls back to copy mode when the driver has none (veth).
//!
//! The socket belongs to the network namespace of the thread that opens
//! it: enter the namespace first (crate::netns::enter), then open.
mod config;
mod error;
mod mmap;
mod ring;
mod sys;

use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

pub use config::{Config, Interface};
pub use error::SendError;
use mmap::Mmap;
use ring::{CompletionRing, TxRing};

/// The fill ring is mandatory at bind even for a socket without an RX
/// ring; nothing ever produces to it, so the smallest size does.
const FILL_RING_SIZE: u32 = 1;

/// Kicks a busy kernel gets before `send` reports the ring full.
const FULL_RETRIES: u32 = 3;

/// What the socket did, since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames the kernel completed (transmitted, or dropped by the driver
    /// after it took them: the completion ring does not tell which).
    pub sent: u64,
    /// Frames on the TX ring or in flight, not completed yet.
    pub pending: u32,
    /// `send` calls that returned an error (the frame was not queued, or
    /// the kick failed).
    pub failed: u64,
    /// Kicks the kernel answered with EAGAIN/EBUSY/ENOBUFS: the frames stay
    /// queued and leave with a later kick.
    pub busy_kicks: u64,
}

/// The kernel's own counters of the socket (XDP_STATISTICS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Descriptors the kernel refused (bad address, length over the MTU).
    pub tx_invalid_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// Why this process cannot open an AF_XDP socket (None: it can). One
/// socket opened and closed: the kernel's own answer covers the
/// capability, a sandbox's address-family filter and a kernel built
/// without AF_XDP alike.
pub fn unavailable() -> Option<String> {
    let e = sys::socket().err()?;
    Some(match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => "sending needs CAP_NET_RAW (for an AF_XDP socket), which this process lacks; give it to the daemon (systemd: CAP_NET_RAW in CapabilityBoundingSet and AmbientCapabilities; Kubernetes: NET_RAW in securityContext.capabilities.add)".to_string(),
        Some(libc::EAFNOSUPPORT) => "AF_XDP sockets are not available to this process: the kernel lacks CONFIG_XDP_SOCKETS, or a sandbox restricts address families (systemd: add AF_XDP to RestrictAddressFamilies)".to_string(),
        _ => format!("cannot open an AF_XDP socket: {e}"),
    })
}

/// One TX-only AF_XDP socket on (interface, queue).
pub struct Sender {
    // Field order is drop order: rings first, then the socket (which
    // releases the kernel's pin on the UMEM pages), then the UMEM.
    tx: TxRing,
    cq: CompletionRing,
    fd: OwnedFd,
    umem: Mmap,
    frame_size: u32,
    frames: u32,
    /// UMEM offsets of the frames we may write.
    free: Vec<u64>,
    zero_copy: bool,
    ifindex: u32,
    queue: u32,
    counters: Counters,
    /// Frames the device dropped (`EBUSY` at a kick) whose completion is
    /// still to come: completed, but not sent.
    dropped: u32,
}

// SAFETY: the raw pointers inside point into mappings the Sender owns;
// moving it to another thread moves them together. Not Sync: sending
// needs &mut self (the rings are single-producer/single-consumer).
unsafe impl Send for Sender {}

impl Sender {
    /// Opens a TX-only socket on `queue` of `iface` with the default sizes.
    pub fn open(iface: impl Into<Interface>, queue: u32) -> Result<Sender, SendError> {
        Self::open_with(iface, queue, Config::default())
    }

    pub fn open_with(
        iface: impl Into<Interface>,
        queue: u32,
        cfg: Config,
    ) -> Result<Sender, SendError> {
        let iface = iface.into();
        check_config(&cfg)?;
        let ifindex = match &iface {
            Interface::Index(i) => *i,
            Interface::Name(n) => {
                sys::ifindex(n).map_err(|_| SendError::InterfaceNotFound(iface.clone()))?
            }
        };
        let setup = |what| move |source| SendError::Setup { what, source };

        let fd = sys::socket().map_err(setup("socket(AF_XDP) (needs CAP_NET_RAW)"))?;
        let umem = Mmap::anonymous(cfg.frames as usize * cfg.frame_size as usize)
            .map_err(setup("mapping the UMEM"))?;
        let reg = libc::xdp_umem_reg {
            addr: umem.as_ptr() as u64,
            len: umem.len() as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sys::set(&fd, libc::XDP_UMEM_REG, &reg).map_err(setup("XDP_UMEM_REG"))?;
        sys::set(&fd, libc::XDP_UMEM_FILL_RING, &FILL_RING_SIZE)
            .map_err(setup("XDP_UMEM_FILL_RING"))?;
        sys::set(&fd, libc::XDP_UMEM_COMPLETION_RING, &cfg.frames)
            .map_err(setup("XDP_UMEM_COMPLETION_RING"))?;
        sys::set(&fd, libc::XDP_TX_RING, &cfg.frames).map_err(setup("XDP_TX_RING"))?;
        let off: libc::xdp_mmap_offsets =
            sys::get(&fd, libc::XDP_MMAP_OFFSETS).map_err(setup("XDP_MMAP_OFFSETS"))?;
        let tx = TxRing::map(&fd, &off.tx, cfg.frames).map_err(setup("mapping the TX ring"))?;
        let cq = CompletionRing::map(&fd, &off.cr, cfg.frames)
            .map_err(setup("mapping the completion ring"))?;

        sys::bind(&fd, ifindex, queue, libc::XDP_USE_NEED_WAKEUP).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EBUSY) => SendError::QueueBusy {
                    iface: iface.clone(),
                    queue,
                },
                Some(libc::ENODEV) => SendError::InterfaceNotFound(iface.clone()),
                _ => SendError::Bind {
                    iface: iface.clone(),
                    queue,
                    source: e,
                },
            }
        })?;
        let opts: libc::xdp_options =
            sys::get(&fd, libc::XDP_OPTIONS).map_err(setup("XDP_OPTIONS"))?;

        // Pop from the end: the first frames go out first (no reason other
        // than readable addresses when debugging).
        let free = (0..cfg.frames)
            .rev()
            .map(|i| u64::from(i) * u64::from(cfg.frame_size))
            .collect();
        tracing::debug!(
            ifindex,
            queue,
            zero_copy = opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
            "AF_XDP sender bound"
        );
        Ok(Sender {
            tx,
            cq,
            fd,
            umem,
            frame_size: cfg.frame_size,
            frames: cfg.frames,
            free,
            zero_copy: opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
            ifindex,
            queue,
            counters: Counters::default(),
            dropped: 0,
        })
    }

    /// Copies `frame` (a complete Ethernet frame) into a UMEM frame, queues
    /// it and kicks the kernel. Ok means queued: in copy mode it has then
    /// normally left already; `counters().sent` counts completions.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        let r = self.enqueue(frame).and_then(|()| self.kick());
        if r.is_err() {
            self.counters.failed += 1;
        }
        r
    }

    /// Queues every frame, then kicks once (the kernel sends up to 32 per
    /// kick in copy mode; more kicks follow as needed). Returns how many
    /// were queued: fewer than given only with Err(RingFull) for the rest.
    pub fn send_batch<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<usize, SendError> {
        let mut n = 0;
        for f in frames {
            if let Err(e) = self.enqueue(f) {
                self.counters.failed += 1;
                if n > 0 {
                    self.kick()?;
                }
                return Err(e);
            }
            n += 1;
            if n % 32 == 0 {
                self.kick()?;
            }
        }
        if n % 32 != 0 {
            self.kick()?;
        }
        Ok(n)
    }

    /// Reaps completions and kicks again while frames are pending, until
    /// none is or `timeout` passes. Returns true when all completed.
    pub fn flush(&mut self, timeout: Duration) -> Result<bool, SendError> {
        let end = Instant::now() + timeout;
        loop {
            self.reap();
            if self.pending() == 0 {
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            self.kick()?;
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    pub fn counters(&self) -> Counters {
        Counters {
            pending: self.pending(),
            ..self.counters
        }
    }

    /// The kernel's counters of this socket (XDP_STATISTICS).
    pub fn kernel_stats(&self) -> io::Result<KernelStats> {
        let s: libc::xdp_statistics = sys::get(&self.fd, libc::XDP_STATISTICS)?;
        Ok(KernelStats {
            tx_invalid_descs: s.tx_invalid_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// True when the driver runs this socket in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    fn pending(&self) -> u32 {
        self.frames - self.free.len() as u32
    }

    fn reap(&mut self) {
        let free = &mut self.free;
        let n = self.cq.drain(|addr| free.push(addr));
        // Completions include the dropped frames' (the kernel completes
        // them in the kick that failed): those are not counted as sent.
        let dropped = n.min(self.dropped);
        self.dropped -= dropped;
        self.counters.sent += u64::from(n - dropped);
    }

    fn enqueue(&mut self, frame: &[u8]) -> Result<(), SendError> {
        if frame.len() > self.frame_size as usize {
            return Err(SendError::FrameTooLarge {
                len: frame.len(),
                max: self.frame_size,
            });
        }
        if frame.len() < 14 {
            return Err(SendError::FrameTooShort(frame.len()));
        }
        self.reap();
        let mut tries = 0;
        let addr = loop {
            if let Some(a) = self.free.pop() {
                break a;
            }
            // Every frame is pending: push the kernel to complete some.
            if tries == FULL_RETRIES {
                return Err(SendError::RingFull(self.pending()));
            }
            tries += 1;
            self.kick()?;
            self.reap();
        };
        // SAFETY: addr is a free frame's offset (not on the TX ring, not in
        // flight), so the kernel does not read it; addr + len is within the
        // UMEM (len <= frame_size, checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                frame.as_ptr(),
                self.umem.as_ptr().add(addr as usize),
                frame.len(),
            )
        };
        debug_assert!(self.tx.free() > 0, "a free frame implies a free TX slot");
        self.tx.push(addr, frame.len() as u32);
        Ok(())
    }

    fn kick(&mut self) -> Result<(), SendError> {
        if !self.tx.needs_wakeup() {
            return Ok(());
        }
        match sys::kick(&self.fd) {
            Ok(()) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // The kernel could not take everything now (driver queue or
                // completion ring full): the descriptors stay on the ring.
                Some(libc::EAGAIN | libc::ENOBUFS) => {
                    self.counters.busy_kicks += 1;
                    Ok(())
                }
                // Copy mode: the device took the frame and dropped it
                // (`NET_XMIT_DROP`: no carrier, or its queue refused it);
                // the descriptor is consumed, the frame is not on the wire.
                Some(libc::EBUSY) => {
                    self.dropped += 1;
                    Err(SendError::Dropped)
                }
                // The netdev unregistered: the kernel unbound the socket.
                Some(libc::ENXIO) => Err(SendError::InterfaceGone),
                Some(libc::ENETDOWN) => Err(SendError::InterfaceDown),
                _ => Err(SendError::Kick(e)),
            },
        }
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("ifindex", &self.ifindex)
            .field("queue", &self.queue)
            .field("zero_copy", &self.zero_copy)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl AsFd for Sender {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn check_config(c: &Config) -> Result<(), SendError> {
    let page = page_size();
    if !c.frames.is_power_of_two() {
        return Err(SendError::Config(format!(
            "frames must be a power of two, got {}",
            c.frames
        )));
    }
    if !c.frame_size.is_power_of_two() || c.frame_size < 2048 || c.frame_size as usize > page {
        return Err(SendError::Config(format!(
            "frame_size must be a power of two from 2048 to the page size ({page}), got {}",
            c.frame_size
        )));
    }
    Ok(())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked_before_any_syscall() {
        let bad = |frames, frame_size| {
            matches!(
                Sender::open_with("lo", 0, Config { frames, frame_size }),
                Err(SendError::Config(_))
            )
        };
        assert!(bad(300, 2048));
        assert!(bad(256, 1024));
        assert!(bad(256, 3000));
        assert!(bad(256, 1 << 20));
    }

    #[test]
    fn unknown_interface_is_named() {
        let e = Sender::open("emptcp-no-such0", 0).unwrap_err();
        assert!(matches!(e, SendError::InterfaceNotFound(_)), "{e}");
        assert!(e.to_string().contains("emptcp-no-such0"));
    }
}
