#!/usr/bin/env python3
"""Every interposed data call (read, write, readv, writev, send, recv, sendto, recvfrom,
sendmsg, recvmsg, recvmmsg, sendmmsg, the fortified __read_chk/__recv_chk/__recvfrom_chk,
MSG_PEEK, MSG_WAITALL, ioctl FIONREAD/SIOCOUTQ/SIOCOUTQNSD, a dup'd fd, shutdown and close)
on one connection, over SMC and over TCP."""

import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SmcTestCase, app, main  # noqa: E402

# What the program must import for the test to mean anything.
REQUIRED_IMPORTS = {
    "read", "write", "readv", "writev", "send", "recv", "sendto", "recvfrom", "sendmsg",
    "recvmsg", "__read_chk", "__recv_chk", "__recvfrom_chk", "dup", "shutdown", "close",
    "recvmmsg", "sendmmsg", "ioctl", "splice",
}


class EntrypointsTest(SmcTestCase):

    def run_pair(self, preload):
        srv, port = self.start_server("entrypoints", [], preload)
        cli = self.start([app("entrypoints"), "client", "--host", "127.0.0.1", "--port",
                          str(port), "--timeout", "30"], preload, name="client")
        self.finish(cli, 40, 0, [srv])
        self.finish(srv, 20, 0, [cli])
        srec, crec = srv.records(), cli.records()
        self.assert_records_ok(srec, crec, srv, cli)
        for r in srec + crec:
            self.assertEqual(r["steps_done"], r["steps"], r)
        return srv, cli, srec, crec

    def test_imports_fortified_calls(self):
        """The binary really calls the fortified variants (and the plain ones)."""
        nm = shutil.which("nm")
        if nm is None:
            raise unittest.SkipTest("nm (binutils) is not installed")
        out = subprocess.run([nm, "-D", "--undefined-only", app("entrypoints")],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        imported = {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}
        self.assertEqual(REQUIRED_IMPORTS - imported, set(), "entrypoints does not import these")

    def test_over_smc(self):
        srv, cli, srec, crec = self.run_pair(True)
        self.assert_smc(srec, crec, (srv, cli))

    def test_rcvtimeo_over_smc(self):
        """SO_RCVTIMEO set with setsockopt() after connect on a blocking SMC socket: recv()
        fails with EAGAIN when it expires, as it would over TCP, and data still flows."""
        srv, port = self.start_server("tcpapp", ["--mode", "echo", "--raw"])
        body = r"""
import socket, struct, sys, time
c = socket.create_connection(('127.0.0.1', %d))
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack('ll', 0, 200000))
t0 = time.monotonic()
try:
    c.recv(10)
    sys.exit('recv returned without data')
except BlockingIOError:
    pass
waited = time.monotonic() - t0
if not 0.15 < waited < 5:
    sys.exit('timed out after %%.3f s' %% waited)
c.sendall(b'ping')
got = b''
while len(got) < 4:
    got += c.recv(4 - len(got))
assert got == b'ping', got
c.close()
""" % port
        out = subprocess.run([sys.executable, "-c", body], env=self.env(True), timeout=60,
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("connection SMC established", out.stderr)
        srv.kill()

    def test_sendfile_from_a_pipe_loses_nothing(self):
        """sendfile() from a pipe into an SMC socket whose peer starts reading late, with
        SO_SNDTIMEO expiring meanwhile: what was taken from the pipe is still sent, so the
        peer receives exactly what went into the pipe."""
        n = 1 << 20
        server = r"""
import socket, sys, time
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
s, _ = l.accept()
s.recv(1, socket.MSG_PEEK)  # settles SMC
time.sleep(0.5)             # the writer meanwhile meets a full ring and SO_SNDTIMEO
total = 0
while True:
    b = s.recv(65536)
    if not b:
        break
    total += len(b)
print('received', total, flush=True)
"""
        env = self.env(True, {"SMCPRE_RMB_SIZE": "64K"})
        srv = subprocess.Popen([sys.executable, "-c", server], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            port = int(srv.stdout.readline())
            client = r"""
import os, socket, struct, threading
c = socket.create_connection(('127.0.0.1', %d))
c.sendall(b'x')
c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack('ll', 0, 20000))
r, w = os.pipe()
def fill():
    view = memoryview(bytes(%d))
    while view:
        view = view[os.write(w, view):]
    os.close(w)
threading.Thread(target=fill).start()
sent = 0
while True:
    try:
        k = os.sendfile(c.fileno(), r, None, 200000)
    except BlockingIOError:
        continue
    if k == 0:
        break
    sent += k
print('sent', sent)
c.close()
""" % (port, n)
            out = subprocess.run([sys.executable, "-c", client], env=self.env(True), timeout=120,
                                 capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.assertIn("connection SMC established", out.stderr)
            self.assertIn("sent %d" % n, out.stdout)
            rest, err = srv.communicate(timeout=60)
            self.assertIn("received %d" % (n + 1), rest, err)
        finally:
            srv.kill()
            srv.wait()

    def test_over_tcp(self):
        srv, cli, srec, crec = self.run_pair(False)
        self.assert_tcp(srec, crec, (srv, cli))


if __name__ == "__main__":
    main()
