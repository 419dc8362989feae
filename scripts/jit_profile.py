#!/usr/bin/env python3
"""Where the time of emptcp's BPF programs goes, line by line of their source.

perf samples land in the JIT code of a program (bpf_prog_<tag>_<name>),
which this machine's perf and bpftool cannot disassemble (no libbfd). The
kernel keeps, for every loaded program, the JIT address of each BTF line
record (`jited_line_info`) and the record's source file, line and text
(`line_info`, strings in the program's BTF). This script reads those
through the bpf syscall (BPF_OBJ_GET_INFO_BY_FD) while the programs are
loaded, records `perf record -C CPU` for a few seconds, and attributes every
sample to the last line record at or before its address: the share of all
samples on that CPU per source line, with the first translated instruction
of the line (`bpftool prog dump xlated id ID linum` shows the instructions).

A sample lands on the instruction after the one that stalled, so read a
line's share together with its neighbours; the per-program totals are exact.

Usage (root): jit_profile.py --cpu N [--seconds S] [--top K] [NAME...]
  NAME: programs to break down (default: every XDP and TC program loaded).
scripts/bench.sh profile runs it on a datapath path (docs/benchmarks.md).
"""
import argparse
import bisect
import collections
import ctypes
import json
import os
import struct
import subprocess
import sys
import tempfile

PROG_INFO_LEN = 232  # struct bpf_prog_info up to attach_btf_id (Linux 5.x+)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "mptcp"))
from bpf_syscall import (  # noqa: E402
    BPF_BTF_GET_FD_BY_ID, BPF_PROG_GET_FD_BY_ID, fd_by_id, obj_info)


def btf_strings(btf_id):
    fd = fd_by_id(BPF_BTF_GET_FD_BY_ID, btf_id)
    try:
        hdr = ctypes.create_string_buffer(32)
        obj_info(fd, hdr)
        size = struct.unpack_from("<I", hdr.raw, 8)[0]
        data = ctypes.create_string_buffer(size)
        req = ctypes.create_string_buffer(32)
        struct.pack_into("<QI", req, 0, ctypes.addressof(data), size)
        obj_info(fd, req)
    finally:
        os.close(fd)
    d = data.raw
    hdr_len, _toff, _tlen, soff, slen = struct.unpack_from("<IIIII", d, 4)
    return d[hdr_len + soff: hdr_len + soff + slen]


def string_at(strs, off):
    return strs[off: strs.index(b"\0", off)].decode(errors="replace")


def program(id_):
    """(name, [(jit address, insn, 'file:line  text')], [(start, end)])."""
    fd = fd_by_id(BPF_PROG_GET_FD_BY_ID, id_)
    try:
        first = ctypes.create_string_buffer(PROG_INFO_LEN)
        obj_info(fd, first)
        i = first.raw
        name = i[64:80].split(b"\0")[0].decode()
        n_ksyms, n_lens = struct.unpack_from("<II", i, 104)
        btf_id = struct.unpack_from("<I", i, 128)[0]
        n_lines = struct.unpack_from("<I", i, 148)[0]
        n_jlines, rec, jrec = struct.unpack_from("<III", i, 168)
        if not (btf_id and n_lines and n_jlines == n_lines and n_ksyms):
            return name, [], []
        ksyms = (ctypes.c_uint64 * n_ksyms)()
        lens = (ctypes.c_uint32 * max(n_lens, 1))()
        lines = ctypes.create_string_buffer(n_lines * rec)
        jlines = (ctypes.c_uint64 * n_jlines)()
        req = ctypes.create_string_buffer(PROG_INFO_LEN)
        struct.pack_into("<IIQQ", req, 104, n_ksyms, n_lens, ctypes.addressof(ksyms), ctypes.addressof(lens))
        struct.pack_into("<IIQQ", req, 144, 0, n_lines, ctypes.addressof(lines), ctypes.addressof(jlines))
        struct.pack_into("<III", req, 168, n_jlines, rec, jrec)
        obj_info(fd, req)
    finally:
        os.close(fd)
    strs = btf_strings(btf_id)
    marks = []
    for k in range(n_lines):
        insn, file_off, line_off, line_col = struct.unpack_from("<IIII", lines.raw, k * rec)
        where = "%s:%d" % (string_at(strs, file_off).split("/")[-1], line_col >> 10)
        marks.append((jlines[k], insn, "%s  %s" % (where, string_at(strs, line_off).strip()[:80])))
    marks.sort()
    funcs = [(ksyms[k], ksyms[k] + (lens[k] if k < n_lens else 0)) for k in range(n_ksyms)]
    return name, marks, funcs


def loaded_programs():
    out = subprocess.run(["bpftool", "prog", "show", "-j"], check=True, capture_output=True, text=True).stdout
    return [p["id"] for p in json.loads(out) if p.get("type") in ("xdp", "sched_cls")]


def record(cpu, seconds):
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "perf.data")
        subprocess.run(["perf", "record", "-q", "-C", str(cpu), "-o", data, "--", "sleep", str(seconds)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], check=True,
                             capture_output=True, text=True).stdout
    samples = []
    for line in out.splitlines():
        parts = line.split(None, 1)
        if parts:
            samples.append((int(parts[0], 16), parts[1].strip() if len(parts) > 1 else "?"))
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    # Line info first: the programs must be loaded while it is read.
    progs = []
    for id_ in loaded_programs():
        try:
            name, marks, funcs = program(id_)
        except OSError:
            continue  # unloaded since the listing
        if marks and (not a.names or name in a.names):
            progs.append((id_, name, marks, funcs))
    if not progs:
        sys.exit("jit_profile: no loaded XDP/TC program with line info%s" %
                 (" named " + " ".join(a.names) if a.names else ""))
    samples = record(a.cpu, a.seconds)
    total = len(samples)
    if not total:
        sys.exit("jit_profile: no samples on CPU %d" % a.cpu)
    by_sym = collections.Counter(sym for _, sym in samples)
    print("%d samples on CPU %d over %.1f s; by symbol (as perf report):" % (total, a.cpu, a.seconds))
    for sym, n in by_sym.most_common(12):
        print("  %5.1f%%  %s" % (100.0 * n / total, sym))
    ips = collections.Counter(ip for ip, _ in samples)
    for id_, name, marks, funcs in progs:
        addrs = [m[0] for m in marks]
        hist = collections.Counter()
        for ip, n in ips.items():
            if not any(lo <= ip < hi for lo, hi in funcs):
                continue
            k = bisect.bisect_right(addrs, ip) - 1
            if k >= 0:
                hist["@%-5d %s" % (marks[k][1], marks[k][2])] += n
        in_prog = sum(hist.values())
        if not in_prog:
            continue
        print("\nprogram %s (id %d, with its subprograms): %.1f%% of the samples; by source line:"
              % (name, id_, 100.0 * in_prog / total))
        for line, n in hist.most_common(a.top):
            print("  %5.1f%%  %s" % (100.0 * n / total, line))


if __name__ == "__main__":
    main()
