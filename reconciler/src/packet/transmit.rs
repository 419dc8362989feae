//! Where a built frame goes. The frame builder does not know; the sender
//! chosen by its user does:
//!
//! * [`Ingress`]: into the local stack as if received on the interface
//!   (BPF_PROG_RUN of a TC program that clones the frame's skb into the
//!   device's receive path, `sys::inject_ingress`). The recovery agent
//!   delivers a stored ADD_ADDR to the client this way: the frame is
//!   addressed from the peer to the local end.
//! * [`AfXdp`]: out of the interface to the peer, through a TX-only AF_XDP
//!   socket per interface (`crate::xsk`). Packet copy sends this way: the
//!   frame is addressed from the local end to the peer.
//! * [`Recorder`]: kept in memory (tests of the senders' users).
use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsFd as _, OwnedFd},
    time::Duration,
};

use crate::{
    sys,
    xsk::{SendError, Sender},
};

/// A sender of built frames.
pub trait Transmit: Send {
    /// Sends `frame` on the interface `ifindex`.
    fn transmit(&mut self, ifindex: u32, frame: &[u8]) -> Result<(), TransmitError>;

    /// Makes `transmit` on `ifindex` immediate: opens what the first send
    /// would open. Nothing by default.
    fn prepare(&mut self, _ifindex: u32) -> Result<(), TransmitError> {
        Ok(())
    }

    /// Releases what is held for interfaces `keep` says no longer carry
    /// frames (sockets, queues). Nothing by default.
    fn retain(&mut self, _keep: &dyn Fn(u32) -> bool) {}
}

#[derive(Debug, thiserror::Error)]
pub enum TransmitError {
    #[error(transparent)]
    Xsk(#[from] SendError),
    #[error("interface gone")]
    InterfaceGone,
    #[error("injecting a frame on the receive path (BPF_PROG_RUN, bpf_clone_redirect)")]
    Ingress(#[source] io::Error),
}

/// Into the local stack, as received on the interface. Not BPF_PROG_RUN's
/// live frames (an XDP_PASS program run with `BPF_F_TEST_XDP_LIVE_FRAMES`):
/// some kernels refuse that mode with EPERM even to root (seen on a
/// hardened 6.18 build), while a TC program's `bpf_clone_redirect` works
/// on every kernel emptcp supports (the in-kernel recovery relies on it).
pub struct Ingress {
    injector: OwnedFd,
}

impl Ingress {
    /// Loads the TC program frames are cloned into the stack through.
    pub fn new() -> io::Result<Ingress> {
        Ok(Ingress {
            injector: sys::load_ingress_injector("emptcp_inject")?,
        })
    }
}

impl Transmit for Ingress {
    fn transmit(&mut self, ifindex: u32, frame: &[u8]) -> Result<(), TransmitError> {
        sys::inject_ingress(self.injector.as_fd(), frame, ifindex).map_err(TransmitError::Ingress)
    }
}

/// Out of the interface, one AF_XDP socket per interface on `queue`,
/// opened on first use.
pub struct AfXdp {
    queue: u32,
    senders: BTreeMap<u32, Sender>,
}

impl AfXdp {
    pub fn new(queue: u32) -> AfXdp {
        AfXdp {
            queue,
            senders: BTreeMap::new(),
        }
    }

    /// Interfaces with an open socket.
    pub fn open_interfaces(&self) -> impl Iterator<Item = u32> + '_ {
        self.senders.keys().copied()
    }
}

impl Transmit for AfXdp {
    /// Opens the interface's socket (UMEM, rings, bind: milliseconds, tens
    /// of them under emulation) unless it is open.
    fn prepare(&mut self, ifindex: u32) -> Result<(), TransmitError> {
        if let std::collections::btree_map::Entry::Vacant(v) = self.senders.entry(ifindex) {
            v.insert(Sender::open(ifindex, self.queue)?);
        }
        Ok(())
    }

    /// Opens the interface's socket on first use and reopens it once when
    /// the interface was replaced.
    fn transmit(&mut self, ifindex: u32, frame: &[u8]) -> Result<(), TransmitError> {
        for attempt in 0..2 {
            let s = match self.senders.entry(ifindex) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Sender::open(ifindex, self.queue)?)
                }
            };
            match s.send(frame) {
                Ok(()) => {
                    // Reap the completion so the frame is known to be on its
                    // way and the UMEM frame is free again.
                    let _ = s.flush(Duration::from_millis(10));
                    return Ok(());
                }
                Err(SendError::InterfaceGone) if attempt == 0 => {
                    self.senders.remove(&ifindex);
                }
                Err(e) => {
                    // The socket is closed with its rings: a frame the
                    // kernel left in the TX ring (the interface was down,
                    // the ring busy) would otherwise leave with the next
                    // kick, perhaps long after its seq/ack went stale. The
                    // next send opens a fresh socket.
                    self.senders.remove(&ifindex);
                    return Err(e.into());
                }
            }
        }
        Err(TransmitError::InterfaceGone)
    }

    fn retain(&mut self, keep: &dyn Fn(u32) -> bool) {
        self.senders.retain(|ifindex, _| keep(*ifindex));
    }
}

/// Keeps every frame with its interface.
#[derive(Debug, Default)]
pub struct Recorder {
    pub frames: Vec<(u32, Vec<u8>)>,
}

impl Transmit for Recorder {
    fn transmit(&mut self, ifindex: u32, frame: &[u8]) -> Result<(), TransmitError> {
        self.frames.push((ifindex, frame.to_vec()));
        Ok(())
    }
}
