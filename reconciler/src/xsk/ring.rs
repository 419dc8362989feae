//! The two rings a TX-only socket uses, as single-producer/single-consumer
//! queues shared with the kernel (Documentation/networking/af_xdp.rst):
//! we produce descriptors on the TX ring and consume frame addresses from
//! the completion ring. Indexes are free-running u32 counters; the slot is
//! `index & (size - 1)`. The kernel reads our producer with acquire
//! semantics after we store it with release, so the descriptor written
//! before it is visible; symmetrically for the consumer side.
use std::{
    io,
    os::fd::AsRawFd,
    sync::atomic::{AtomicU32, Ordering},
};

use super::mmap::Mmap;

/// One mapped ring: its control words and its descriptor array.
struct Shared {
    _map: Mmap,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
}

impl Shared {
    fn map(
        fd: &impl AsRawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        entry: usize,
        pgoff: u64,
    ) -> io::Result<Shared> {
        let len = off.desc as usize + size as usize * entry;
        let map = Mmap::ring(fd, len, pgoff)?;
        let at = |o: u64| {
            assert!((o as usize) < map.len());
            // SAFETY: o is within the mapping (checked above).
            unsafe { map.as_ptr().add(o as usize) }
        };
        Ok(Shared {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            desc: at(off.desc),
            mask: size - 1,
            _map: map,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping, 4-byte aligned (kernel ABI).
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }
}

/// The TX ring: we are the producer.
pub(super) struct TxRing {
    ring: Shared,
    size: u32,
    /// Our producer index (the kernel never writes it).
    prod: u32,
}

impl TxRing {
    pub(super) fn map(
        fd: &impl AsRawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> io::Result<TxRing> {
        let ring = Shared::map(
            fd,
            off,
            size,
            size_of::<libc::xdp_desc>(),
            libc::XDP_PGOFF_TX_RING as u64,
        )?;
        let prod = ring.producer().load(Ordering::Relaxed);
        Ok(TxRing { ring, size, prod })
    }

    /// Free slots, as of the kernel's latest consumer index.
    pub(super) fn free(&self) -> u32 {
        let cons = self.ring.consumer().load(Ordering::Acquire);
        self.size - self.prod.wrapping_sub(cons)
    }

    /// Writes one descriptor and publishes it. The caller checked `free()`
    /// (or holds a free UMEM frame, which implies a free slot because the
    /// ring has as many slots as the UMEM has frames).
    pub(super) fn push(&mut self, addr: u64, len: u32) {
        debug_assert!(self.free() > 0);
        let slot = (self.prod & self.ring.mask) as usize;
        let desc = libc::xdp_desc {
            addr,
            len,
            options: 0,
        };
        // SAFETY: slot < size, inside the descriptor array; the kernel does
        // not read this slot until we publish the producer below.
        unsafe {
            self.ring
                .desc
                .cast::<libc::xdp_desc>()
                .add(slot)
                .write_volatile(desc)
        };
        self.prod = self.prod.wrapping_add(1);
        self.ring.producer().store(self.prod, Ordering::Release);
    }

    /// True when the kernel asks for a sendto() to process the ring (always
    /// so in copy mode; in zero-copy mode only when the driver sleeps).
    pub(super) fn needs_wakeup(&self) -> bool {
        // SAFETY: as for producer().
        let flags = unsafe { &*self.ring.flags }.load(Ordering::Relaxed);
        flags & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

/// The completion ring: the kernel returns the addresses of frames it has
/// finished sending; we are the consumer.
pub(super) struct CompletionRing {
    ring: Shared,
    cons: u32,
}

impl CompletionRing {
    pub(super) fn map(
        fd: &impl AsRawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> io::Result<CompletionRing> {
        let ring = Shared::map(
            fd,
            off,
            size,
            size_of::<u64>(),
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        let cons = ring.consumer().load(Ordering::Relaxed);
        Ok(CompletionRing { ring, cons })
    }

    /// Takes every completed address, handing each to `f`; returns how many.
    pub(super) fn drain(&mut self, mut f: impl FnMut(u64)) -> u32 {
        let prod = self.ring.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(self.cons);
        for i in 0..n {
            let slot = (self.cons.wrapping_add(i) & self.ring.mask) as usize;
            // SAFETY: slot < size; the kernel published it (acquire above)
            // and will not rewrite it before we move the consumer past it.
            f(unsafe { self.ring.desc.cast::<u64>().add(slot).read_volatile() });
        }
        if n > 0 {
            self.cons = prod;
            self.ring.consumer().store(prod, Ordering::Release);
        }
        n
    }
}
