#!/usr/bin/env python3
"""Echo servers whose connections change hands between processes, as real servers do:

  handoff.py --mode M --port 0 --conns K      prints 'listening <port>' on stderr

  forking   socketserver.ForkingTCPServer: accept, fork, the child serves, the parent
            closes its copy at once (inetd, socat fork, many database daemons)
  exec      accept, then fork+exec a program (this script, --serve-fd) that serves the
            connection on an inherited fd; the parent closes its copy
  scm       accept, then pass the connection with SCM_RIGHTS to a worker process over a
            unix socket and close our copy; the worker serves it (systemd Accept=, load
            balancers handing connections to workers)
  dup       accept, dup() the socket, close the original, dup2() the copy to a high fd,
            close the copy, and serve on the last fd (one process, several descriptors)

Each connection is echoed until the client's EOF. Exits once K connections were served:
0 if every serving process exited 0 (forking: 0; the clients check the echo).
"""
import argparse
import os
import socket
import socketserver
import subprocess
import sys


def echo(conn):
    while True:
        data = conn.recv(1 << 20)
        if not data:
            return
        conn.sendall(data)


def serve_fd(fd):
    conn = socket.socket(fileno=fd)
    echo(conn)
    conn.close()
    return 0


def listener(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(64)
    print("listening %d" % ls.getsockname()[1], file=sys.stderr, flush=True)
    return ls


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        echo(self.request)


def run_forking(port, conns):
    # A child's exit status is collected (and dropped) by the server itself: the clients
    # check every byte of the echo instead.
    class Server(socketserver.ForkingTCPServer):
        allow_reuse_address = True
        block_on_close = True

    with Server(("127.0.0.1", port), EchoHandler) as server:
        print("listening %d" % server.server_address[1], file=sys.stderr, flush=True)
        for _ in range(conns):
            server.handle_request()
    return 0


def run_exec(port, conns):
    ls = listener(port)
    children = []
    for _ in range(conns):
        conn, _ = ls.accept()
        fd = conn.fileno()
        children.append(subprocess.Popen([sys.executable, __file__, "--serve-fd", str(fd)],
                                         pass_fds=[fd]))
        conn.close()
    return 0 if all(c.wait() == 0 for c in children) else 1


def run_scm(port, conns):
    ls = listener(port)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker = subprocess.Popen([sys.executable, __file__, "--worker", str(theirs.fileno()),
                               "--conns", str(conns)], pass_fds=[theirs.fileno()])
    theirs.close()
    for _ in range(conns):
        conn, _ = ls.accept()
        socket.send_fds(ours, [b"c"], [conn.fileno()])
        conn.close()
    return worker.wait()


def run_worker(fd, conns):
    unix = socket.socket(fileno=fd)
    pids = []
    for _ in range(conns):
        _, fds, _, _ = socket.recv_fds(unix, 1, 1)
        pid = os.fork()
        if pid == 0:
            os._exit(serve_fd(fds[0]))
        os.close(fds[0])
        pids.append(pid)
    return 0 if all(os.waitpid(p, 0)[1] == 0 for p in pids) else 1


def run_dup(port, conns):
    ls = listener(port)
    for _ in range(conns):
        conn, _ = ls.accept()
        copy = os.dup(conn.fileno())
        conn.close()
        high = os.dup2(copy, 900)
        os.close(copy)
        serve_fd(high)
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["forking", "exec", "scm", "dup"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--serve-fd", type=int)
    p.add_argument("--worker", type=int)
    args = p.parse_args()
    if args.serve_fd is not None:
        return serve_fd(args.serve_fd)
    if args.worker is not None:
        return run_worker(args.worker, args.conns)
    run = {"forking": run_forking, "exec": run_exec, "scm": run_scm, "dup": run_dup}[args.mode]
    return run(args.port, args.conns)


if __name__ == "__main__":
    sys.exit(main())
