#!/usr/bin/env python3
"""A client that registers its socket with epoll before connect(), as proxies do for their
upstream connections (nginx, HAProxy, Envoy): the fresh socket goes into the set with
EPOLLIN|EPOLLOUT|EPOLLRDHUP (and EPOLLET unless --level), then a non-blocking connect, then
everything by readiness. Each of K connections, one after another, echoes N random bytes
with an asyncio_echo.py server; the bytes are checked, and a tcpapp-style JSON record per
connection carries the kernel's TCP_INFO byte counters, so a test can tell SMC from TCP.

  preconnect_client.py --port P --bytes N [--conns K] [--level] [--timeout S]

Exit status 0 when every connection echoed its bytes intact within the timeout.
"""
import argparse
import errno
import json
import os
import select
import socket
import struct
import sys
import time

TCP_INFO_LEN = 232
BYTES_ACKED_AT = 120  # struct tcp_info: u64 tcpi_bytes_acked, then u64 tcpi_bytes_received
CHUNK = 64 * 1024


def tcp_counters(sock):
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    return struct.unpack_from("<QQ", info, BYTES_ACKED_AT)


def echo_once(port, payload, edge, deadline):
    """One connection: returns (sent, received, error or None, sock)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    ep = select.epoll()
    mask = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP
    if edge:
        mask |= select.EPOLLET
    ep.register(sock.fileno(), mask)  # before connect(): the point of this program
    rc = sock.connect_ex(("127.0.0.1", port))
    if rc not in (0, errno.EINPROGRESS):
        return 0, 0, "connect: " + os.strerror(rc), sock
    connected = rc == 0
    sent = 0
    received = bytearray()
    while len(received) < len(payload):
        left = deadline - time.monotonic()
        if left <= 0:
            return sent, len(received), "timed out waiting for readiness", sock
        events = ep.poll(left)
        for _, ev in events:
            if not connected and ev & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err != 0:
                    return 0, 0, "connect: " + os.strerror(err), sock
                connected = True
            if connected and ev & select.EPOLLOUT:
                # Edge-triggered: write until the socket says EAGAIN, or all is out.
                while sent < len(payload):
                    try:
                        n = sock.send(payload[sent:sent + CHUNK])
                    except BlockingIOError:
                        break
                    sent += n
            if ev & (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP):
                while True:
                    try:
                        chunk = sock.recv(CHUNK)
                    except BlockingIOError:
                        break
                    if not chunk:
                        if len(received) < len(payload):
                            return sent, len(received), "EOF after %d bytes" % len(received), sock
                        break
                    received += chunk
            if not edge and sent == len(payload):
                ep.modify(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
    ep.close()
    if bytes(received) != payload:
        return sent, len(received), "echo differs from what was sent", sock
    return sent, len(received), None, sock


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--level", action="store_true")
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout
    all_ok = True
    for conn in range(args.conns):
        payload = os.urandom(args.bytes)
        sent, got, error, sock = echo_once(args.port, payload, not args.level, deadline)
        acked, rcvd = tcp_counters(sock)
        sock.close()
        ok = error is None
        all_ok &= ok
        print(json.dumps({"role": "client", "conn": conn, "mode": "echo", "bytes_sent": sent,
                          "bytes_received": got, "ok": ok, "tcp_bytes_received": rcvd,
                          "tcp_bytes_acked": acked, "error": error or ""}), flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
