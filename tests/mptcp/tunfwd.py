#!/usr/bin/env python3
"""A raw-IP wire between two network namespaces: attaches to the TUN device
CLI_DEV in namespace CLI_NS and to SRV_DEV in SRV_NS (both created beforehand,
persistent, by `ip tuntap add ... mode tun`), and copies every packet one
device sends to the other one (IFF_NO_PI: the bytes are the IP packet, no
link-layer header). The devices have carrier only while this process holds
them, so the testbed waits for LOWER_UP after starting it.

usage: tunfwd.py CLI_NS CLI_DEV SRV_NS SRV_DEV [--ready-file F]

It stops on SIGTERM (the testbed's `down`), when a device goes away (a read
or write fails), and when either namespace's name is gone from /run/netns
(checked every second: a test killed before its `down` ran).
"""
import ctypes
import errno
import fcntl
import os
import select
import signal
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
LIBC = ctypes.CDLL(None, use_errno=True)


def enter(ns):
    """Switches this process to network namespace `ns` (setns(2); Python
    3.11 has no os.setns)."""
    fd = os.open("/run/netns/" + ns, os.O_RDONLY)
    try:
        if LIBC.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            sys.exit("tunfwd: setns %s: %s" % (ns, os.strerror(e)))
    finally:
        os.close(fd)


def attach(ns, dev):
    """An fd on TUN device `dev` of namespace `ns`: /dev/net/tun binds to the
    namespace of the process that opens it."""
    enter(ns)
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def copy_all(src, dst):
    """Moves every packet queued on `src` to `dst`; False when a device is
    gone (EBADFD: its fd lost the device). A packet the other side refuses
    (EAGAIN when full, EIO while it is still down) is dropped, as a wire
    would lose it."""
    while True:
        try:
            pkt = os.read(src, 65536)
        except BlockingIOError:
            return True
        except OSError as e:
            print("tunfwd: read: %s" % e, file=sys.stderr, flush=True)
            return e.errno != errno.EBADFD
        if not pkt:
            return False
        try:
            os.write(dst, pkt)
        except OSError as e:
            if e.errno == errno.EBADFD:
                return False


def main():
    args = sys.argv[1:]
    ready = None
    if "--ready-file" in args:
        i = args.index("--ready-file")
        ready = args[i + 1]
        del args[i:i + 2]
    if len(args) != 4:
        sys.exit(__doc__)
    cli_ns, cli_dev, srv_ns, srv_dev = args
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    a = attach(cli_ns, cli_dev)
    b = attach(srv_ns, srv_dev)
    peer = {a: b, b: a}
    if ready:
        with open(ready, "w") as f:
            f.write("%d\n" % os.getpid())
    while True:
        readable, _, _ = select.select([a, b], [], [], 1.0)
        for fd in readable:
            if not copy_all(fd, peer[fd]):
                return
        if not (os.path.exists("/run/netns/" + cli_ns) and os.path.exists("/run/netns/" + srv_ns)):
            return


if __name__ == "__main__":
    main()
