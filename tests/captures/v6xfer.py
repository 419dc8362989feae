#!/usr/bin/env python3
"""IPv6 MPTCP downloads for tests/captures/make.sh (the testbed's own
mptcp_xfer.py speaks IPv4 only).

  v6xfer.py server ADDR PORT         serve "GET N" with N bytes, then close
  v6xfer.py client ADDR PORT N [S]   download N bytes, keep the connection
                                     open S seconds more (default 0.5) so the
                                     join the server's ADD_ADDR allows settles
"""
import socket
import sys
import threading
import time

IPPROTO_MPTCP = 262


def sock():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, IPPROTO_MPTCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s


def serve(c):
    with c:
        line = b""
        while not line.endswith(b"\n"):
            chunk = c.recv(64)
            if not chunk:
                return
            line += chunk
        n = int(line.split()[1])
        block = bytes(65536)
        while n > 0:
            c.sendall(block[: min(n, len(block))])
            n -= min(n, len(block))
        # Wait for the client's close: the client ends the connection.
        while c.recv(65536):
            pass


def server(addr, port):
    s = sock()
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    s.listen(8)
    print("listening", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def client(addr, port, n, linger):
    s = sock()
    s.connect((addr, port))
    s.sendall(b"GET %d\n" % n)
    got = 0
    while got < n:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += len(chunk)
    time.sleep(linger)
    s.close()
    if got != n:
        sys.exit("got %d of %d bytes" % (got, n))
    print("downloaded %d bytes" % got)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
               float(sys.argv[5]) if len(sys.argv) > 5 else 0.5)
