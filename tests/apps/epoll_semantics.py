#!/usr/bin/env python3
"""epoll's semantics on one connection, step by step, as a transcript to compare between
smcpre and plain TCP: the same program must print the same lines under both.

The process listens, forks a client that obeys commands read from a pipe (send N bytes,
shut down writing, close), accepts the connection and only then makes its epoll sets (a
set made before the fork would be shared with the child). Each step changes the
registration or the client's side and records what epoll_wait answers: level-triggered,
edge-triggered (a new edge per arrival, none while the data sits unread), one-shot
(disarmed once fired, re-armed by EPOLL_CTL_MOD), the error codes of epoll_ctl, a dup'd
fd, a registration that goes with the socket's last close, two sets holding the socket,
the peer's shutdown and close.

  epoll_semantics.py [--quiet-ms MS]

A wait expected to find something waits up to 5 s; one expected to find nothing waits
--quiet-ms (default 150). A line "# kernel set holds: K" says what the kernel's own epoll
set holds, by kind (conn, eventfd, socket): not part of the transcript. Exit status 0
when the transcript was written.
"""
import argparse
import errno
import os
import select
import socket
import sys

WAIT_MS = 5000


def client(port, commands):
    s = socket.create_connection(("127.0.0.1", port))
    with os.fdopen(commands, "r") as cmds:
        for line in cmds:
            word, *arg = line.split()
            if word == "send":
                s.sendall(b"x" * int(arg[0]))
            elif word == "shutdown":
                s.shutdown(socket.SHUT_WR)
            elif word == "close":
                s.close()
                break
    os._exit(0)


def names(mask):
    bits = [("IN", select.EPOLLIN), ("OUT", select.EPOLLOUT), ("RDHUP", select.EPOLLRDHUP),
            ("HUP", select.EPOLLHUP), ("ERR", select.EPOLLERR)]
    return "|".join(n for n, b in bits if mask & b) or "0"


class Transcript:
    def __init__(self, quiet_ms):
        self.quiet = quiet_ms / 1000.0
        self.step = 0

    def line(self, text):
        self.step += 1
        print("%02d %s" % (self.step, text), flush=True)

    def wait(self, ep, what, expect_events=True):
        events = ep.poll(WAIT_MS / 1000.0 if expect_events else self.quiet)
        shown = ",".join("%s:%s" % (tag_of(fd), names(m)) for fd, m in sorted(events))
        self.line("%s -> %s" % (what, shown or "none"))

    def ctl(self, what, call):
        try:
            call()
            self.line("%s -> ok" % what)
        except OSError as e:
            self.line("%s -> %s" % (what, errno.errorcode.get(e.errno, e.errno)))


TAGS = {}


def tag_of(fd):
    return TAGS.get(fd, "fd?")


def kernel_members(ep):
    """What the kernel's own set holds (/proc/self/fdinfo), by kind: where smcpre keeps
    the SMC socket in user memory, the kernel sees only its notification eventfd."""
    kinds = []
    with open("/proc/self/fdinfo/%d" % ep.fileno()) as f:
        for line in f:
            if line.startswith("tfd:"):
                tfd = int(line.split()[1])
                try:
                    target = os.readlink("/proc/self/fd/%d" % tfd)
                except OSError:
                    target = "closed"
                kind = "eventfd" if "eventfd" in target else target.split(":")[0]
                kinds.append("conn" if tfd in TAGS else kind)
    return ",".join(sorted(kinds)) or "nothing"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quiet-ms", type=int, default=150)
    a = ap.parse_args()
    t = Transcript(a.quiet_ms)

    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(wr)
        ls.close()
        client(port, rd)
    os.close(rd)
    cmd = os.fdopen(wr, "w", buffering=1)
    conn, _ = ls.accept()
    conn.setblocking(False)
    fd = conn.fileno()
    TAGS[fd] = "conn"

    def send(n):
        cmd.write("send %d\n" % n)

    def drain():
        got = 0
        while True:
            try:
                d = conn.recv(65536)
            except BlockingIOError:
                return got
            if not d:
                return got
            got += len(d)

    def read_exactly(n):
        got = 0
        while got < n:
            try:
                got += len(conn.recv(n - got))
            except BlockingIOError:
                select.select([conn], [], [], 5)
        return got

    ep = select.epoll()
    # Level-triggered.
    ep.register(fd, select.EPOLLIN)
    t.wait(ep, "LT, nothing sent", False)
    send(100)
    t.wait(ep, "LT, 100 bytes sent")
    t.wait(ep, "LT, again without reading")
    read_exactly(60)
    t.wait(ep, "LT, 40 bytes left")
    print("# kernel set holds: %s" % kernel_members(ep), flush=True)
    read_exactly(40)
    t.wait(ep, "LT, drained", False)
    # Edge-triggered: an edge per arrival, none for data that sits unread.
    t.ctl("MOD IN|ET", lambda: ep.modify(fd, select.EPOLLIN | select.EPOLLET))
    t.wait(ep, "ET, nothing sent", False)
    send(100)
    t.wait(ep, "ET, 100 bytes sent")
    t.wait(ep, "ET, again without reading", False)
    read_exactly(50)
    t.wait(ep, "ET, 50 left unread", False)
    send(100)
    t.wait(ep, "ET, 100 more sent")
    t.line("ET, drained %d bytes" % drain())
    t.ctl("MOD IN|ET (data gone)", lambda: ep.modify(fd, select.EPOLLIN | select.EPOLLET))
    t.wait(ep, "ET, after MOD with nothing readable", False)
    # One-shot.
    t.ctl("MOD IN|ONESHOT", lambda: ep.modify(fd, select.EPOLLIN | select.EPOLLONESHOT))
    send(10)
    t.wait(ep, "ONESHOT, 10 bytes sent")
    t.wait(ep, "ONESHOT, fired, still readable", False)
    send(10)
    t.wait(ep, "ONESHOT, fired, more sent", False)
    t.ctl("MOD IN|ONESHOT re-arm", lambda: ep.modify(fd, select.EPOLLIN | select.EPOLLONESHOT))
    t.wait(ep, "ONESHOT, re-armed while readable")
    t.line("ONESHOT, drained %d bytes" % drain())
    # Writable, and both.
    t.ctl("MOD OUT", lambda: ep.modify(fd, select.EPOLLOUT))
    t.wait(ep, "OUT")
    send(5)
    select.select([conn], [], [], WAIT_MS / 1000.0)  # the 5 bytes are there
    t.ctl("MOD IN|OUT", lambda: ep.modify(fd, select.EPOLLIN | select.EPOLLOUT))
    t.wait(ep, "IN|OUT with 5 bytes")
    t.line("drained %d bytes" % drain())
    # epoll_ctl's answers.
    t.ctl("ADD again", lambda: ep.register(fd, select.EPOLLIN))
    t.ctl("DEL", lambda: ep.unregister(fd))
    t.ctl("DEL again", lambda: ep.unregister(fd))
    t.ctl("MOD unregistered", lambda: ep.modify(fd, select.EPOLLIN))
    send(7)
    t.wait(ep, "after DEL, 7 bytes sent", False)
    t.ctl("ADD IN|EXCLUSIVE|ONESHOT",
          lambda: ep.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE | select.EPOLLONESHOT))
    t.ctl("ADD IN|EXCLUSIVE", lambda: ep.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE))
    t.wait(ep, "EXCLUSIVE, 7 bytes readable")
    t.ctl("MOD an EXCLUSIVE one", lambda: ep.modify(fd, select.EPOLLIN))
    t.ctl("DEL", lambda: ep.unregister(fd))
    # Two sets hold the socket; then a dup'd fd in a third.
    ep2 = select.epoll()
    t.ctl("ADD IN set 1", lambda: ep.register(fd, select.EPOLLIN))
    t.ctl("ADD IN|ET set 2", lambda: ep2.register(fd, select.EPOLLIN | select.EPOLLET))
    t.wait(ep, "set 1, 7 bytes readable")
    t.wait(ep2, "set 2, 7 bytes readable")
    t.line("drained %d bytes" % drain())
    send(3)
    t.wait(ep, "set 1, 3 more")
    t.wait(ep2, "set 2, 3 more")
    dup = os.dup(fd)
    TAGS[dup] = "dup"
    ep3 = select.epoll()
    t.ctl("ADD dup IN set 3", lambda: ep3.register(dup, select.EPOLLIN))
    t.wait(ep3, "set 3 through the dup")
    t.line("drained %d bytes" % drain())
    # The dup's registration goes when the socket's last fd closes, not before.
    os.close(dup)
    send(4)
    t.wait(ep3, "set 3, dup closed, original open, 4 bytes sent")
    t.line("drained %d bytes" % drain())
    # The peer's shutdown, then close.
    t.ctl("MOD IN|RDHUP set 1", lambda: ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP))
    cmd.write("shutdown\n")
    t.wait(ep, "peer shut down writing")
    t.line("drained %d bytes" % drain())
    cmd.write("close\n")
    os.waitpid(pid, 0)
    t.wait(ep, "peer closed")
    ep.close()
    ep2.close()
    ep3.close()
    conn.close()
    t.line("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
