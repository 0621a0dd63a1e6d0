#!/usr/bin/env python3
"""asyncio echo server and client (Python's own event loop: epoll, non-blocking connect
and accept, flow control by pausing reads), printing tcpapp-style JSON records.

  asyncio_echo.py server --port 0 [--conns K]       prints 'listening <port>' on stderr
  asyncio_echo.py client --port P --bytes N [--conns K] [--hold]

--hold (client): every connection echoes its bytes, then 'holding' goes to stderr and all
stay open until stdin ends; then each half-closes and reads the server's EOF.
--nofile N: the soft RLIMIT_NOFILE (at most the hard one) set first thing.
Both print 'fds <n>' on stderr at start: the descriptors the process holds then.

Every connection echoes N random bytes; the client checks them byte for byte. Each record
carries the kernel's TCP_INFO byte counters of the socket (tcpi_bytes_acked and
tcpi_bytes_received), so a test can tell SMC (handshake only) from TCP (whole payload).
"""
import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import sys

TCP_INFO_LEN = 232
BYTES_ACKED_AT = 120  # struct tcp_info: u64 tcpi_bytes_acked, then u64 tcpi_bytes_received


def tcp_counters(sock):
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    acked, received = struct.unpack_from("<QQ", info, BYTES_ACKED_AT)
    return acked, received


def record(role, conn, sent, received, sock, ok, error):
    acked, rcvd = tcp_counters(sock)
    print(json.dumps({"role": role, "conn": conn, "mode": "echo", "bytes_sent": sent,
                      "bytes_received": received, "ok": ok, "tcp_bytes_received": rcvd,
                      "tcp_bytes_acked": acked, "error": error}), flush=True)


async def server(args):
    done = asyncio.Event()
    served = 0
    finished = 0  # the server ends when this many have finished, not been accepted

    async def handle(reader, writer):
        nonlocal served, finished
        conn, total = served, 0
        served += 1
        while True:
            data = await reader.read(65536)
            if not data:
                break
            total += len(data)
            writer.write(data)
            await writer.drain()
        record("server", conn, total, total, writer.get_extra_info("socket"), True, None)
        writer.close()
        await writer.wait_closed()
        finished += 1
        if finished == args.conns:
            done.set()

    # A backlog for every expected connection: with asyncio's default of 100, 900 clients
    # connecting at once overflow the accept queue, and the dropped handshakes' SYN-ACK
    # retries (1, 2, 4, ... s) made a run stall past its bound now and then.
    srv = await asyncio.start_server(handle, "127.0.0.1", args.port,
                                     backlog=max(100, args.conns))
    print("listening %d" % srv.sockets[0].getsockname()[1], file=sys.stderr, flush=True)
    async with srv:
        await asyncio.wait_for(done.wait(), args.timeout)
        await asyncio.sleep(0.1)  # let the last handler finish closing


def open_fds():
    return len(os.listdir("/proc/self/fd")) - 1  # listdir's own


async def client_conn(args, conn, hold):
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    payload = os.urandom(args.bytes)

    async def send():
        for i in range(0, len(payload), 100000):
            writer.write(payload[i:i + 100000])
            await writer.drain()
        if hold is not None:
            await hold.wait()
        writer.write_eof()

    sender = asyncio.create_task(send())
    got = bytearray()
    while len(got) < len(payload):
        data = await reader.read(1 << 20)
        if not data:
            break
        got.extend(data)
    if hold is not None:
        hold.echoed += 1
        if hold.echoed == args.conns:
            print("holding", file=sys.stderr, flush=True)
        if not await reader.read(1):  # the server's EOF, after ours
            pass
    await sender
    ok = bytes(got) == payload
    record("client", conn, len(payload), len(got), writer.get_extra_info("socket"), ok,
           None if ok else "echo differs (%d of %d bytes back)" % (len(got), len(payload)))
    writer.close()
    await writer.wait_closed()
    return ok


async def client(args):
    hold = None
    if args.hold:
        hold = asyncio.Event()
        hold.echoed = 0
        loop = asyncio.get_running_loop()
        stdin_end = loop.run_in_executor(None, sys.stdin.buffer.read)
        stdin_end.add_done_callback(lambda _: hold.set())
    results = await asyncio.wait_for(
        asyncio.gather(*(client_conn(args, i, hold) for i in range(args.conns))), args.timeout)
    return all(results)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bytes", type=int, default=1 << 20)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--hold", action="store_true")
    p.add_argument("--nofile", type=int, default=0)
    args = p.parse_args()
    if args.nofile:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY:
            args.nofile = min(args.nofile, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    print("fds %d" % open_fds(), file=sys.stderr, flush=True)
    if args.role == "server":
        asyncio.run(server(args))
        return 0
    return 0 if asyncio.run(client(args)) else 1


if __name__ == "__main__":
    sys.exit(main())
