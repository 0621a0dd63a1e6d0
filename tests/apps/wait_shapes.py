#!/usr/bin/env python3
"""Readiness waits that smcpre cannot run in user space itself, each driving a ping-pong
echo with an asyncio_echo.py server (one message of --bytes per round, --rounds rounds,
one connection after another per shape):

  nested-epoll   the socket is in an epoll set that is itself in another epoll set; the
                 program waits on the outer set only, then reads
  nested-poll    the same inner set, waited on by poll()
  nested-select  the same inner set, waited on by select()
  fork-shared    the socket joins an epoll set, then the process forks: the child waits on
                 the inherited set while the parent sends; the child reports each wake-up
                 through a pipe and the parent reads the echo
  fork-late      the epoll set is made before the fork, the socket made, connected and
                 registered after it (in the parent); the child waits as above
  dup-epoll      the socket's epoll set is duplicated (dup) and the program waits on the
                 copy only
  exclusive      two threads, each with its own epoll set holding the socket with
                 EPOLLEXCLUSIVE; whichever wakes reads

  wait_shapes.py --port P --shape S [--shape S ...] [--bytes N] [--rounds R]
                 [--conns K] [--timeout S]

Each shape moves N bytes in R rounds. --conns, if given, must equal the number of shapes
(the server expects that many connections).

One tcpapp-style JSON record per shape on stdout (with the kernel's TCP_INFO byte
counters, so that a test can tell SMC from TCP). Exit status 0 when every round echoed
intact within the timeout.
"""
import argparse
import json
import os
import select
import socket
import struct
import sys
import threading
import time

TCP_INFO_LEN = 232
BYTES_ACKED_AT = 120  # struct tcp_info: u64 tcpi_bytes_acked, then u64 tcpi_bytes_received
SHAPES = ("nested-epoll", "nested-poll", "nested-select", "fork-shared", "fork-late",
          "dup-epoll", "exclusive")


class Failed(Exception):
    pass


def tcp_counters(sock):
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    return struct.unpack_from("<QQ", info, BYTES_ACKED_AT)


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


def drain(sock, want, got):
    """Reads what is there (non-blocking) into `got`, up to `want` bytes in all."""
    while len(got) < want:
        try:
            chunk = sock.recv(want - len(got))
        except BlockingIOError:
            return
        if not chunk:
            raise Failed("EOF after %d bytes" % len(got))
        got += chunk


def message_sizes(args):
    """--bytes split into --rounds messages (the last one takes the remainder)."""
    base = max(1, args.bytes // args.rounds)
    sizes = [base] * (args.bytes // base)
    if sum(sizes) < args.bytes:
        sizes.append(args.bytes - sum(sizes))
    return sizes


def rounds_with(sock, args, wait, after_drain=None,
                waited_for="readiness"):
    """Ping-pong: send a message, then wait(left) for readiness and read (then
    after_drain(), if given), until the echo is complete. wait returns False on its
    timeout."""
    deadline = time.monotonic() + args.timeout
    moved = 0
    for size in message_sizes(args):
        msg = os.urandom(size)
        send_all(sock, msg, deadline)
        got = bytearray()
        while len(got) < len(msg):
            left = deadline - time.monotonic()
            if left <= 0 or not wait(left):
                raise Failed("timed out waiting for %s after %d of %d bytes"
                             % (waited_for, len(got), len(msg)))
            drain(sock, len(msg), got)
            if after_drain is not None:
                after_drain()
        if bytes(got) != msg:
            raise Failed("echo differs from what was sent")
        moved += len(msg)
    return moved


def send_all(sock, data, deadline):
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise Failed("timed out sending")
            select.select([], [sock], [], 0.1)


def nested(sock, args, outer_kind):
    inner = select.epoll()
    inner.register(sock.fileno(), select.EPOLLIN)
    if outer_kind == "epoll":
        outer = select.epoll()
        outer.register(inner.fileno(), select.EPOLLIN)
        wait = lambda left: bool(outer.poll(left))  # noqa: E731
    elif outer_kind == "poll":
        outer = select.poll()
        outer.register(inner.fileno(), select.POLLIN)
        wait = lambda left: bool(outer.poll(left * 1000))  # noqa: E731
    else:
        wait = lambda left: bool(select.select([inner.fileno()], [], [], left)[0])  # noqa: E731

    def wait_then_ask_inner(left):
        # The outer wait says the inner set has something; the inner set says what.
        return wait(left) and bool(inner.poll(0))
    return rounds_with(sock, args, wait_then_ask_inner)


def forked_waiter(args, make_set):
    """Forks a child that waits on the epoll set `ep` and writes one byte to a pipe per
    wake-up (then waits for the parent's go-ahead on another pipe before it waits again,
    so that a level-triggered set does not report the same data twice). The parent's wait
    is a read of that pipe."""
    ep, sock = make_set()
    woke_r, woke_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(woke_r)
            os.close(go_w)
            # The parent's "q" must end a wait too: the pipe joins the (shared) set.
            ep.register(go_r, select.EPOLLIN)
            while True:
                if not ep.poll(args.timeout):
                    code = 3
                    break
                os.write(woke_w, b"w")
                if os.read(go_r, 1) != b"g":
                    break
        except Exception:  # noqa: BLE001 -- the child reports by its exit status
            code = 4
        os._exit(code)
    os.close(woke_w)
    os.close(go_r)
    if sock is None:
        sock = connect(args.port)
        ep.register(sock.fileno(), select.EPOLLIN)

    def wait(left):
        ready, _, _ = select.select([woke_r], [], [], left)
        return bool(ready) and os.read(woke_r, 1) == b"w"

    try:
        moved = rounds_with(sock, args, wait, lambda: os.write(go_w, b"g"),
                            "the child's wait on the shared set to wake")
    finally:
        os.write(go_w, b"q")
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3:
        raise Failed("the child's wait on the shared set timed out")
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        raise Failed("the waiting child ended with status %#x" % status)
    return moved, sock


def exclusive(sock, args):
    sets = [select.epoll(), select.epoll()]
    for ep in sets:
        ep.register(sock.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
    woken = threading.Semaphore(0)
    stop = threading.Event()

    def waiter(ep):
        while not stop.is_set():
            if ep.poll(0.2):
                woken.release()
                time.sleep(0.001)  # level-triggered: let the reader take the data

    threads = [threading.Thread(target=waiter, args=(ep,), daemon=True) for ep in sets]
    for t in threads:
        t.start()
    try:
        return rounds_with(sock, args, lambda left: woken.acquire(timeout=left))
    finally:
        stop.set()
        for t in threads:
            t.join()


def run_shape(shape, args):
    if shape.startswith("nested-"):
        sock = connect(args.port)
        return nested(sock, args, shape.split("-")[1]), sock
    if shape == "dup-epoll":
        sock = connect(args.port)
        ep = select.epoll()
        ep.register(sock.fileno(), select.EPOLLIN)
        copy = select.epoll.fromfd(os.dup(ep.fileno()))
        return rounds_with(sock, args, lambda left: bool(copy.poll(left))), sock
    if shape == "exclusive":
        sock = connect(args.port)
        return exclusive(sock, args), sock
    if shape == "fork-shared":
        def make():
            sock = connect(args.port)
            ep = select.epoll()
            ep.register(sock.fileno(), select.EPOLLIN)
            return ep, sock
        return forked_waiter(args, make)
    return forked_waiter(args, lambda: (select.epoll(), None))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--shape", action="append", choices=SHAPES, required=True)
    ap.add_argument("--bytes", type=int, default=200 * 1000)
    ap.add_argument("--conns", type=int)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    if args.conns is not None and args.conns != len(args.shape):
        ap.error("--conns %d but %d shapes" % (args.conns, len(args.shape)))
    all_ok = True
    for conn, shape in enumerate(args.shape):
        error, moved, acked, rcvd = "", 0, 0, 0
        try:
            moved, sock = run_shape(shape, args)
            acked, rcvd = tcp_counters(sock)
            sock.close()
        except (Failed, OSError) as e:
            error = "%s: %s" % (shape, e)
        ok = not error
        all_ok &= ok
        print(json.dumps({"role": "client", "conn": conn, "shape": shape, "mode": "echo",
                          "bytes_sent": moved, "bytes_received": moved, "ok": ok,
                          "tcp_bytes_received": rcvd, "tcp_bytes_acked": acked,
                          "error": error}), flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
