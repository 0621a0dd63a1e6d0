#!/usr/bin/env python3
"""A pre-fork echo server (blocking sockets): the parent listens, then forks workers that
each accept and serve connections (like Apache's prefork or nginx's worker processes);
with --inherit the parent itself accepts and hands each connection to a short-lived child
that closes its inherited copy at once, and then echoes in the parent (a child's close of
an inherited SMC socket must not disturb the parent's use of it).

  prefork.py --port 0 --workers W --conns K [--inherit]   prints 'listening <port>' on stderr

Exits 0 once K connections were served (each echoed until the client's EOF).
"""
import argparse
import os
import socket
import sys


def echo(conn):
    while True:
        data = conn.recv(1 << 20)
        if not data:
            return
        conn.sendall(data)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--inherit", action="store_true")
    args = p.parse_args()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", args.port))
    ls.listen(64)
    print("listening %d" % ls.getsockname()[1], file=sys.stderr, flush=True)
    if args.inherit:
        for _ in range(args.conns):
            conn, _ = ls.accept()
            pid = os.fork()
            if pid == 0:
                conn.close()  # the child's copy only
                os._exit(0)
            os.waitpid(pid, 0)
            echo(conn)
            conn.close()
        return 0
    # Workers share the listener; each serves until the parent says stop (all served).
    per_worker, extra = divmod(args.conns, args.workers)
    pids = []
    for w in range(args.workers):
        count = per_worker + (1 if w < extra else 0)
        pid = os.fork()
        if pid == 0:
            for _ in range(count):
                conn, _ = ls.accept()
                echo(conn)
                conn.close()
            os._exit(0)
        pids.append(pid)
    ls.close()
    status = 0
    for pid in pids:
        _, st = os.waitpid(pid, 0)
        status |= st
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
