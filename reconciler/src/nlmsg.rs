//! Walking netlink datagrams: the messages of one datagram and the
//! attributes of one message, for the raw netlink readers
//! (`watch/netlink.rs`, `xdp_features.rs`). Both stop at the first length
//! that is shorter than its header or runs past the buffer: a truncated
//! datagram yields what came before it, never a panic.

/// `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// `struct nlattr`.
const NLA_HDRLEN: usize = 4;

/// The messages of `buf`: (type, payload after the netlink header).
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let hdr = buf.get(off..off + NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
        if len < NLMSG_HDRLEN {
            return None;
        }
        let body = buf.get(off + NLMSG_HDRLEN..off + len)?;
        off += len.next_multiple_of(4);
        Some((ty, body))
    })
}

/// The attributes of a message payload after its `fixed` family header
/// (`struct ifinfomsg`, `struct genlmsghdr`, ...): (type, payload), the
/// type without the NLA_F_NESTED and NLA_F_NET_BYTEORDER flags.
pub fn attrs(body: &[u8], fixed: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = fixed;
    std::iter::from_fn(move || {
        let hdr = body.get(off..off + NLA_HDRLEN)?;
        let len = u16::from_ne_bytes([hdr[0], hdr[1]]) as usize;
        let ty = u16::from_ne_bytes([hdr[2], hdr[3]]) & 0x3fff;
        if len < NLA_HDRLEN {
            return None;
        }
        let payload = body.get(off + NLA_HDRLEN..off + len)?;
        off += len.next_multiple_of(4);
        Some((ty, payload))
    })
}
