"""The few bpf(2) and setns(2) calls the benchmarks make themselves,
through ctypes (x86-64 numbers): the prior-art benchmark runs fresh frames
from its own process (a process per `bpftool prog run` would make every
run cold), scripts/jit_profile.py reads programs' line info."""
import ctypes
import os
import struct

SYS_BPF = 321
BPF_MAP_UPDATE_ELEM, BPF_OBJ_GET, BPF_PROG_TEST_RUN = 2, 7, 10
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_BTF_GET_FD_BY_ID = 13, 15, 19
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    """bpf(2) with `attr` (bytes): (the return value, attr as the kernel left it)."""
    buf = ctypes.create_string_buffer(attr, len(attr))
    r = _libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return r, buf.raw


def obj_get(path):
    """A file descriptor of the program or map pinned at `path`."""
    p = ctypes.create_string_buffer(os.fsencode(str(path)))
    return bpf(BPF_OBJ_GET, struct.pack("<QIIi", ctypes.addressof(p), 0, 0, 0) + bytes(8))[0]


def fd_by_id(cmd, id_):
    """A file descriptor of the object `id_` (cmd: BPF_*_GET_FD_BY_ID)."""
    return bpf(cmd, struct.pack("<I", id_) + bytes(60))[0]


def obj_info(fd, buf):
    """BPF_OBJ_GET_INFO_BY_FD into the ctypes buffer `buf` (its length is
    the info size; pointers in it are filled by the kernel)."""
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, len(buf), ctypes.addressof(buf)) + bytes(8))


def map_update(fd, key, value):
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    bpf(BPF_MAP_UPDATE_ELEM, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))


class TestRun:
    """BPF_PROG_TEST_RUN of XDP programs on frames of one interface."""

    def __init__(self, ifindex):
        # struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
        self.ifindex = ifindex

    def run(self, fd, frame, repeat=1):
        """(XDP verdict, the kernel's ns per run)."""
        data = ctypes.create_string_buffer(frame, len(frame))
        ctx_b = struct.pack("<6I", 0, len(frame), 0, self.ifindex, 0, 0)
        ctx = ctypes.create_string_buffer(ctx_b, len(ctx_b))
        attr = struct.pack("<IIIIQQIIIIQQIII", fd, 0, len(frame), 0, ctypes.addressof(data), 0,
                           repeat, 0, len(ctx_b), 0, ctypes.addressof(ctx), 0, 0, 0, 0)
        _, out = bpf(BPF_PROG_TEST_RUN, attr + bytes(4))
        retval, duration = struct.unpack_from("<I", out, 4)[0], struct.unpack_from("<I", out, 36)[0]
        return retval, duration


class InNetns:
    """Enters the network namespace /run/netns/NAME for the `with` block
    (the device of a test run's ingress_ifindex is looked up there)."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {self.name}")
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        _libc.setns(self.home, CLONE_NEWNET)
        os.close(self.home)
