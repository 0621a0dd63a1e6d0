#!/usr/bin/env python3
"""peer_gone: what a server sees of a peer process that goes away while the server holds
its connection without reading (for tests/integration/test_events.py). Like the other
test programs it knows nothing of smcpre; the test runs it with and without the preload
and compares.

  peer_gone.py server --wait epoll|poll|select|read [--reply N]
      Accepts one connection, reads the client's 2-byte greeting, sends N bytes (default
      0) and prints "ready". Then, with --wait read, one thread blocks in recv() at once;
      otherwise it waits for "gone" on stdin (the client has ended), measures its own CPU
      time over 2 s ("cpu <seconds>") and only then waits for the socket with the API.
      Prints one JSON line: the events reported (epoll names; poll's POLLIN/POLLRDHUP/
      POLLHUP/POLLERR as the same names; select: IN), whether the wait timed out, and
      what recv() returned ("eof", "data", or the errno name).
  peer_gone.py client --port P --end exit|close|kill [--read N]
      Connects, sends "hi", reads N bytes of the reply (default 0: none), prints "ready"
      and then: exit: exits with the socket open; close: closes it and exits; kill: waits
      for the test's SIGKILL.
"""

import argparse
import errno
import json
import os
import select
import socket
import sys
import threading
import time


def cpu_seconds():
    t = os.times()
    return t.user + t.system


def wait_events(sock, api):
    """Waits (10 s at most) for the socket; returns (event names, timed out)."""
    fd = sock.fileno()
    if api == "epoll":
        ep = select.epoll()
        ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        events = ep.poll(10)
        ep.close()
        mask = events[0][1] if events else 0
        names = [("IN", select.EPOLLIN), ("RDHUP", select.EPOLLRDHUP), ("HUP", select.EPOLLHUP),
                 ("ERR", select.EPOLLERR)]
    elif api == "poll":
        p = select.poll()
        p.register(fd, select.POLLIN | select.POLLRDHUP)
        events = p.poll(10000)
        mask = events[0][1] if events else 0
        names = [("IN", select.POLLIN), ("RDHUP", select.POLLRDHUP), ("HUP", select.POLLHUP),
                 ("ERR", select.POLLERR)]
    else:
        r, _, _ = select.select([fd], [], [], 10)
        return (["IN"] if r else []), not r
    return [n for n, bit in names if mask & bit], mask == 0


def recv_result(sock):
    try:
        data = sock.recv(4096)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "data" if data else "eof"


def server(args):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    print("listening %d" % lsock.getsockname()[1], file=sys.stderr, flush=True)
    conn, _ = lsock.accept()
    greeting = b""
    while len(greeting) < 2:
        chunk = conn.recv(2 - len(greeting))
        if not chunk:
            break
        greeting += chunk
    if args.reply:
        conn.sendall(b"r" * args.reply)
    print("ready", flush=True)
    out = {"role": "server", "wait": args.wait}
    if args.wait == "read":
        result = {}
        reader = threading.Thread(target=lambda: result.update(recv=recv_result(conn)))
        reader.daemon = True
        reader.start()
        sys.stdin.readline()  # "gone"
        reader.join(10)
        out.update(events=None, timeout=reader.is_alive(), recv=result.get("recv"))
    else:
        sys.stdin.readline()  # "gone"
        before = cpu_seconds()
        time.sleep(2)
        print("cpu %.3f" % (cpu_seconds() - before), flush=True)
        conn.setblocking(False)
        names, timed_out = wait_events(conn, args.wait)
        out.update(events=names, timeout=timed_out, recv=recv_result(conn))
        # What TCP says next: EOF (or the error once more, then EOF).
        out["recv_again"] = recv_result(conn)
    print(json.dumps(out), flush=True)
    conn.close()


def client(args):
    sock = socket.create_connection(("127.0.0.1", args.port))
    sock.sendall(b"hi")
    got = 0
    while got < args.read:
        chunk = sock.recv(args.read - got)
        if not chunk:
            break
        got += len(chunk)
    print("ready", flush=True)
    if args.end == "close":
        sock.close()
    elif args.end == "kill":
        time.sleep(60)
    # exit: the socket is still open when the process exits.


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=("server", "client"))
    ap.add_argument("--wait", choices=("epoll", "poll", "select", "read"), default="epoll")
    ap.add_argument("--reply", type=int, default=0)
    ap.add_argument("--port", type=int)
    ap.add_argument("--end", choices=("exit", "close", "kill"), default="exit")
    ap.add_argument("--read", type=int, default=0)
    args = ap.parse_args()
    server(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    main()
