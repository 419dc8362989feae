//! Which interfaces' drivers run native XDP: the `xdp-features` of the
//! `netdev` generic netlink family (Linux 6.3+), one dump per observation.
//!
//! `xdp_mode: auto` lets the kernel choose, and it chooses generic (skb)
//! XDP where the driver has no native XDP. The plan must know that choice
//! before the attach: in generic mode an IPv4 insert breaks a
//! CHECKSUM_COMPLETE skb (docs/datapath.md, "Generic (skb) XDP and
//! CHECKSUM_COMPLETE"), and the entry that tells the datapath so is
//! written before the link. Raw netlink, as watch/netlink.rs: iproute2
//! does not print these features.
use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use crate::nlmsg::{NLMSG_HDRLEN, attrs, messages};

/// `NETDEV_XDP_ACT_BASIC`: the driver runs XDP programs itself (native
/// mode; XDP_ABORTED, DROP, PASS, TX).
pub const XDP_ACT_BASIC: u64 = 1;

const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_FAMILY_NAME: &str = "netdev";
const NETDEV_FAMILY_VERSION: u8 = 1;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// The xdp-features of every interface of the current network namespace
/// by ifindex, or `None` when the kernel has no `netdev` family (before
/// Linux 6.3: then nobody can tell before the attach).
pub fn by_ifindex() -> std::io::Result<Option<BTreeMap<u32, u64>>> {
    let fd = open()?;
    send(
        &fd,
        &request(GENL_ID_CTRL, 0, CTRL_CMD_GETFAMILY, 1, &{
            let mut name = NETDEV_FAMILY_NAME.as_bytes().to_vec();
            name.push(0);
            attr(CTRL_ATTR_FAMILY_NAME, &name)
        }),
    )?;
    let Some(family) = family_id(&recv(&fd)?)? else {
        return Ok(None);
    };
    send(
        &fd,
        &request(
            family,
            NLM_F_DUMP,
            NETDEV_CMD_DEV_GET,
            NETDEV_FAMILY_VERSION,
            &[],
        ),
    )?;
    let mut features = BTreeMap::new();
    while !devices(&recv(&fd)?, &mut features)? {}
    Ok(Some(features))
}

fn open() -> std::io::Result<OwnedFd> {
    // SAFETY: a plain socket call; the fd is ours from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_GENERIC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(fd: &OwnedFd, msg: &[u8]) -> std::io::Result<()> {
    // SAFETY: `msg` is a valid buffer of its length; the kernel's address
    // is the default destination of an unbound netlink socket.
    let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn recv(fd: &OwnedFd) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// One generic netlink request: header, genl header, attributes.
fn request(ty: u16, flags: u16, cmd: u8, version: u8, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + GENL_HDRLEN + payload.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel fills it
    m.extend_from_slice(&[cmd, version, 0, 0]);
    m.extend_from_slice(payload);
    m
}

/// One attribute, padded to 4 bytes.
fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&((NLA_HDRLEN + payload.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize(a.len().next_multiple_of(4), 0);
    a
}

/// An NLMSG_ERROR's error code (0 is the acknowledgement).
fn error_of(body: &[u8]) -> i32 {
    body.get(0..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(-libc::EPROTO)
}

/// The family id in the answer to CTRL_CMD_GETFAMILY; `None` when the
/// kernel has no such family (ENOENT).
fn family_id(buf: &[u8]) -> std::io::Result<Option<u16>> {
    for (ty, body) in messages(buf) {
        match ty {
            NLMSG_ERROR if error_of(body) == -libc::ENOENT => return Ok(None),
            NLMSG_ERROR => return Err(std::io::Error::from_raw_os_error(-error_of(body))),
            GENL_ID_CTRL => {
                if let Some((_, id)) =
                    attrs(body, GENL_HDRLEN).find(|(t, _)| *t == CTRL_ATTR_FAMILY_ID)
                {
                    return Ok(id.get(0..2).map(|b| u16::from_ne_bytes([b[0], b[1]])));
                }
            }
            _ => {}
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "no family id in the generic netlink controller's answer",
    ))
}

/// Adds the devices of one datagram of the dump to `out`; true once the
/// dump is done.
fn devices(buf: &[u8], out: &mut BTreeMap<u32, u64>) -> std::io::Result<bool> {
    if buf.is_empty() {
        return Ok(true);
    }
    for (ty, body) in messages(buf) {
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR if error_of(body) == 0 => return Ok(true),
            NLMSG_ERROR => return Err(std::io::Error::from_raw_os_error(-error_of(body))),
            _ => {
                let (mut ifindex, mut features) = (None, 0u64);
                for (t, p) in attrs(body, GENL_HDRLEN) {
                    match (t, p.len()) {
                        (NETDEV_A_DEV_IFINDEX, 4) => {
                            ifindex = Some(u32::from_ne_bytes([p[0], p[1], p[2], p[3]]))
                        }
                        (NETDEV_A_DEV_XDP_FEATURES, 8) => {
                            features = u64::from_ne_bytes(p.try_into().unwrap_or_default())
                        }
                        _ => {}
                    }
                }
                if let Some(i) = ifindex {
                    out.insert(i, features);
                }
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as the kernel sends it: header, genl header, attributes.
    fn message(ty: u16, attrs: &[u8]) -> Vec<u8> {
        request(ty, 0, 0, 1, attrs)
    }

    fn done() -> Vec<u8> {
        let mut m = message(NLMSG_DONE, &[]);
        m.truncate(NLMSG_HDRLEN);
        m[0..4].copy_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
        m
    }

    #[test]
    fn reads_the_family_id_or_its_absence() {
        let mut a = attr(CTRL_ATTR_FAMILY_NAME, b"netdev\0");
        a.extend(attr(CTRL_ATTR_FAMILY_ID, &0x1du16.to_ne_bytes()));
        assert_eq!(family_id(&message(GENL_ID_CTRL, &a)).unwrap(), Some(0x1d));
        let mut err = message(NLMSG_ERROR, &[]);
        err.truncate(NLMSG_HDRLEN);
        err.extend((-libc::ENOENT).to_ne_bytes());
        let len = err.len() as u32;
        err[0..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(family_id(&err).unwrap(), None);
    }

    #[test]
    fn reads_every_device_of_a_dump_until_done() {
        let dev = |ifindex: u32, features: u64| {
            let mut a = attr(NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes());
            a.extend(attr(NETDEV_A_DEV_XDP_FEATURES, &features.to_ne_bytes()));
            message(0x1d, &a)
        };
        let mut first = dev(1, 0);
        first.extend(dev(7, XDP_ACT_BASIC | 2));
        let mut out = BTreeMap::new();
        assert!(!devices(&first, &mut out).unwrap());
        let mut last = dev(9, 0);
        last.extend(done());
        assert!(devices(&last, &mut out).unwrap());
        assert_eq!(out, BTreeMap::from([(1, 0), (7, 3), (9, 0)]));
    }

    #[test]
    fn a_truncated_datagram_stops_without_panicking() {
        let mut m = message(0x1d, &attr(NETDEV_A_DEV_IFINDEX, &3u32.to_ne_bytes()));
        m[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        let mut out = BTreeMap::new();
        assert!(!devices(&m, &mut out).unwrap());
        assert!(out.is_empty());
    }
}
