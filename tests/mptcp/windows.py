#!/usr/bin/env python3
"""The TCP window fields a host receives, as they arrive (AF_PACKET).

Run in the receiving namespace: it reads every IPv4 TCP segment that
arrives on IFACE for local port PORT and prints one JSON line when the
sender's FIN (or RST) came in, or after --seconds:

  {"segments": N, "syn_windows": [...], "windows": {"<field>": count, ...},
   "closing": {"<field>": count, ...}}

`windows` counts the raw 16-bit window field (the value on the wire,
before any scaling the receiver applies) of every segment between the
sender's SYN and its first FIN or RST; `closing` of that FIN or RST and
what follows it.
"""
import argparse
import json
import socket
import struct
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
FIN, SYN, RST = 0x01, 0x02, 0x04


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--ready-file", required=True)
    a = ap.parse_args()

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((a.iface, 0))
    s.settimeout(0.2)
    with open(a.ready_file, "w") as f:
        f.write("ready\n")

    res = {"segments": 0, "syn_windows": [], "windows": {}, "closing": {}}
    end = time.monotonic() + a.seconds
    done_at = None
    while time.monotonic() < end:
        if done_at is not None and time.monotonic() > done_at:
            break
        try:
            frame, addr = s.recvfrom(256)
        except socket.timeout:
            continue
        if addr[2] == PACKET_OUTGOING or len(frame) < 14 + 20 + 20:
            continue
        if struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ihl = (frame[14] & 0x0F) * 4
        if frame[14 + 9] != 6:
            continue
        t = 14 + ihl
        if len(frame) < t + 20:
            continue
        dport = struct.unpack_from("!H", frame, t + 2)[0]
        if dport != a.port:
            continue
        flags = frame[t + 13]
        win = struct.unpack_from("!H", frame, t + 14)[0]
        res["segments"] += 1
        k = str(win)
        if flags & SYN:
            res["syn_windows"].append(win)
        elif flags & (FIN | RST) or done_at is not None:
            res["closing"][k] = res["closing"].get(k, 0) + 1
        else:
            res["windows"][k] = res["windows"].get(k, 0) + 1
        if flags & (FIN | RST) and done_at is None:
            # The last ACKs of the close follow within a few ms.
            done_at = time.monotonic() + 0.5
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
