//! Errors of the AF_XDP sender, one per situation an operator must tell
//! apart (docs/packet-copy.md has the errno behind each).
use std::io;

use super::Interface;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("interface {0} not found in this network namespace")]
    InterfaceNotFound(Interface),
    /// EBUSY at bind. Also seen for ~30 ms after the previous socket on the
    /// queue was closed: the kernel releases a queue in deferred work.
    #[error(
        "queue {queue} of {iface} already has an AF_XDP socket (EBUSY): one socket per (interface, queue); a socket closed a moment ago frees its queue some ms later"
    )]
    QueueBusy { iface: Interface, queue: u32 },
    #[error("binding to queue {queue} of {iface} (does the interface have that queue?)")]
    Bind {
        iface: Interface,
        queue: u32,
        source: io::Error,
    },
    #[error("setting up the AF_XDP socket: {what}")]
    Setup {
        what: &'static str,
        source: io::Error,
    },
    #[error("invalid AF_XDP configuration: {0}")]
    Config(String),
    #[error("the interface of this socket is gone (deleted or moved out of the namespace)")]
    InterfaceGone,
    #[error("the interface of this socket is down")]
    InterfaceDown,
    #[error(
        "the interface dropped the frame (no carrier: its link or, for a veth, its peer is down)"
    )]
    Dropped,
    #[error("TX ring full: {0} frames wait for the kernel to complete them; retry later")]
    RingFull(u32),
    #[error("frame of {len} bytes does not fit a UMEM frame of {max} bytes")]
    FrameTooLarge { len: usize, max: u32 },
    #[error("frame of {0} bytes is shorter than an Ethernet header")]
    FrameTooShort(usize),
    #[error("kicking the TX ring (sendto)")]
    Kick(#[source] io::Error),
}
