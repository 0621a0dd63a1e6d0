#!/usr/bin/env python3
"""What loading libsmcpre.so costs a program, and what it leaves alone.

- A program that makes no TCP connection sees no thread, no fd and no file of smcpre's.
- Engine threads start on the first SMC connection only (not for an ineligible one).
- UDP and UNIX sockets pass through untouched; a TCP listener is published, a UDP one not.
"""

import json
import os
import subprocess
import sys

from harness import (LIB, SANITIZER_RUNTIME, SmcTestCase, app, main, registry_ports,
                     take_sanitizer_reports)

# Reports threads and open fds of the interpreter after running `body`.
PROBE = r"""
import json, os, socket, sys
def state():
    fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))
    targets = {}
    for f in fds:
        try:
            targets[f] = os.readlink('/proc/self/fd/%d' % f)
        except OSError:
            pass
    return {'threads': len(os.listdir('/proc/self/task')),
            # pipe:[inode] -> pipe: the inode differs from run to run
            'fds': sorted(t.split('[')[0] for t in targets.values()
                          if not t.startswith('/proc/'))}
%s
print(json.dumps(state()))
"""


class LoadTest(SmcTestCase):
    def probe(self, body, preload, env=None):
        e = self.env(preload, env)
        out = subprocess.run([sys.executable, "-c", PROBE.replace("%s", body)], env=e, timeout=60,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr

    def test_sanitizer_reports_reach_the_test(self):
        """In a sanitizer build, a report in a preloaded program fails its test: a double
        free in an uninstrumented program is caught by the runtime the harness preloads."""
        if not SANITIZER_RUNTIME:
            self.skipTest("not a sanitizer build (scripts/test --sanitize)")
        body = ("import ctypes; c = ctypes.CDLL(None); c.malloc.restype = ctypes.c_void_p\n"
                "p = c.malloc(32); c.free(ctypes.c_void_p(p)); c.free(ctypes.c_void_p(p))")
        e = self.env(True)
        out = subprocess.run([sys.executable, "-c", body], env=e, timeout=60,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertNotEqual(out.returncode, 0, "the double free went unnoticed")
        reports = "\n".join(take_sanitizer_reports(self.sanitizer_dir()))
        self.assertIn("attempting double-free", reports)

    def registry(self):
        return ["tcp-%d" % p for p in registry_ports(self.runtime_dir)]

    def test_loading_costs_nothing(self):
        plain, _ = self.probe("pass", False)
        pre, err = self.probe("pass", True, {"SMCPRE_LOG": "debug"})
        self.assertEqual(pre, plain, "the preload changed threads or fds of an idle program")
        self.assertEqual(pre["threads"], 1)
        self.assertEqual(err, "", "an idle program logged: " + err)
        self.assertEqual(os.listdir(self.runtime_dir), [], "files created at load time")

    def test_udp_and_unix_pass_through(self):
        body = r"""
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', 0))
v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v.sendto(b'datagram', u.getsockname())
assert u.recvfrom(100)[0] == b'datagram'
a, b = socket.socketpair()
a.sendall(b'unix stream'); assert b.recv(100) == b'unix stream'
b.shutdown(socket.SHUT_WR); assert a.recv(10) == b''
for s in (u, v, a, b): s.close()
"""
        plain, _ = self.probe(body, False)
        pre, err = self.probe(body, True, {"SMCPRE_LOG": "debug"})
        self.assertEqual(pre, plain)
        self.assertEqual(pre["threads"], 1, "engine threads started for UDP/UNIX sockets")
        self.assertEqual(self.registry(), [], "a UDP socket was published as a listener")
        self.assertEqual(err, "", "UDP/UNIX traffic reached the engine: " + err)

    def test_threads_start_with_the_first_smc_connection(self):
        srv, port = self.start_server("tcpapp", ["--mode", "echo", "--raw"])
        self.assertEqual(self.registry(), ["tcp-%d" % port])
        # An ineligible TCP connection (to a server not running smcpre) starts nothing.
        plain_srv, plain_port = self.start_server("tcpapp", ["--mode", "echo", "--raw"], preload=False,
                                                  name="plain-server")
        body_plain = r"""
c = socket.create_connection(('127.0.0.1', %d))
c.sendall(b'x'); assert c.recv(1) == b'x'
st = state(); c.close(); print(json.dumps(st)); sys.exit(0)
""" % plain_port
        st, _ = self.probe(body_plain, True)
        self.assertEqual(st["threads"], 1, "threads started for an ineligible connection")
        plain_srv.kill()
        # An SMC connection to the published echo server starts the engine's thread.
        body_smc = r"""
c = socket.create_connection(('127.0.0.1', %d))
c.sendall(b'ping'); got = b''
while len(got) < 4: got += c.recv(4 - len(got))
assert got == b'ping'
st = state(); c.close(); print(json.dumps(st)); sys.exit(0)
""" % port
        st, err = self.probe(body_smc, True)
        self.assertIn("connection SMC established", err)
        self.assertGreater(st["threads"], 1, "no engine thread on an SMC connection?")
        srv.kill()


class ExitTest(SmcTestCase):
    def test_exit_with_the_socket_open_is_an_orderly_close(self):
        """A program that exit()s with an SMC connection open: the kernel would close its
        TCP socket with a FIN, so the peer must read EOF (not ECONNRESET) after the data."""
        n = 1 << 20
        srv, port = self.start_server("tcpapp", ["--mode", "sink", "--raw", "--bytes", str(n)])
        body = r"""
import ctypes, socket
c = socket.create_connection(('127.0.0.1', %d))
c.sendall(bytes(%d))
reply = b''
while len(reply) < 16:
    reply += c.recv(16 - len(reply))
# libc exit(): atexit handlers run, Python's finalisation (which would close c) does not.
ctypes.CDLL(None).exit(0)
""" % (port, n)
        out = subprocess.run([sys.executable, "-c", body], env=self.env(True), timeout=60,
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("connection SMC established", out.stderr)
        self.finish(srv, 30, 0)
        rec = srv.records()
        self.assertTrue(rec and rec[0]["ok"], srv.describe())
        self.assertLess(rec[0]["tcp_bytes_received"], 4096, srv.describe())


if __name__ == "__main__":
    main()
