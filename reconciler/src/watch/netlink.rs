//! Link events of the daemon's network namespace (rtnetlink, RTMGRP_LINK):
//! an interface that appears, disappears or changes (including its XDP
//! attachment, e.g. `ip link set dev X xdp off`) wakes the loop at once
//! instead of at the next drift pass. The socket is opened after `--netns`
//! was entered, so it listens in that namespace.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::nlmsg::{attrs, messages};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const RTMGRP_LINK: u32 = 1;

/// One interface event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// RTM_NEWLINK (created or changed) or RTM_DELLINK, with the name.
    Link { name: String, deleted: bool },
    /// The socket overflowed: events were lost; anything may have changed.
    Overflow,
}

fn open() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket/bind calls on a fresh fd we own.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK;
        if libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as u32,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Parses one datagram of netlink messages into link events.
pub fn parse(buf: &[u8]) -> Vec<LinkEvent> {
    messages(buf)
        .filter(|(ty, _)| *ty == RTM_NEWLINK || *ty == RTM_DELLINK)
        .filter_map(|(ty, body)| {
            Some(LinkEvent::Link {
                name: ifname(body)?,
                deleted: ty == RTM_DELLINK,
            })
        })
        .collect()
}

fn ifname(body: &[u8]) -> Option<String> {
    let (_, v) = attrs(body, IFINFOMSG_LEN).find(|(ty, _)| *ty == IFLA_IFNAME)?;
    let v = v.split(|b| *b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(v).into_owned())
}

/// Forwards link events to `tx` until the receiver is gone. Returns an
/// error only when the socket cannot be opened (the drift pass still
/// notices new interfaces then).
pub fn spawn(tx: mpsc::Sender<LinkEvent>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    // SAFETY (register): the OwnedFd is moved into the AsyncFd, which owns
    // it for its whole life; it is never closed or replaced behind it.
    let fd = unsafe { AsyncFd::register(open()?) }.map_err(|e| e.into_parts().1)?;
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return;
            };
            // SAFETY: recv into our buffer.
            let n = unsafe {
                libc::recv(
                    fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        guard.clear_ready();
                        continue;
                    }
                    Some(libc::ENOBUFS) => {
                        if tx.send(LinkEvent::Overflow).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => {
                        tracing::warn!(error = %e, "link monitor stopped; the drift pass still notices new interfaces");
                        return;
                    }
                }
            }
            for ev in parse(&buf[..n as usize]) {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nlmsg::NLMSG_HDRLEN;

    fn msg(ty: u16, name: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let alen = 4 + name.len() + 1;
        attr.extend_from_slice(&(alen as u16).to_ne_bytes());
        attr.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        attr.extend_from_slice(name.as_bytes());
        attr.push(0);
        while !attr.len().is_multiple_of(4) {
            attr.push(0);
        }
        let len = NLMSG_HDRLEN + IFINFOMSG_LEN + attr.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[0; IFINFOMSG_LEN]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn parses_new_and_deleted_links() {
        let mut buf = msg(RTM_NEWLINK, "eth0");
        buf.extend(msg(RTM_DELLINK, "veth12"));
        buf.extend(msg(20, "addr-event"));
        assert_eq!(
            parse(&buf),
            [
                LinkEvent::Link {
                    name: "eth0".into(),
                    deleted: false
                },
                LinkEvent::Link {
                    name: "veth12".into(),
                    deleted: true
                }
            ]
        );
        assert!(parse(&buf[..10]).is_empty());
    }
}
