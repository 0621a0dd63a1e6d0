#!/usr/bin/env python3
"""Same port elsewhere, and several users in one runtime dir.

A preloaded client proposes SMC only to the listener the kernel would connect it to, and
only if that listener is smcpre's. A plain server on the same port at another address, in
another network namespace, or on a port whose registry entry another user tries to pin or
fake, receives exactly the application's bytes (no CLC byte), and the client gets exactly
its echo. Root's and nobody's processes publish in one runtime dir and root's smcpre-stat
lists both. A fork child's log lines carry its own thread id."""

import json
import os
import re
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SMC_ESTABLISHED, SmcTestCase, main  # noqa: E402

STAT = os.environ.get("SMCPRE_STAT") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "build", "tools", "smcpre-stat")
NOBODY = 65534
PAYLOAD = b"application bytes, nothing else: " + bytes(range(256)) * 4
AS_NOBODY = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]

# A listener that only listens (published by smcpre when preloaded); exits on stdin EOF.
LISTEN_ONLY = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("listening %d" % s.getsockname()[1], file=sys.stderr, flush=True)
sys.stdin.read()
"""

# An echo server for one connection at a time; prints each connection's bytes (hex).
ECHO = r"""
import socket, sys, threading
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("listening %d" % s.getsockname()[1], file=sys.stderr, flush=True)
def serve():
    while True:
        c, _ = s.accept()
        got = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            got += b
            c.sendall(b)
        c.close()
        print("received " + got.hex(), flush=True)
threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()
"""

# Sends PAYLOAD, half-closes, reads the echo; prints it (hex).
CLIENT = r"""
import socket, sys
host, port, payload = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
c = socket.socket(fam)
c.settimeout(30)
c.connect((host, port))
c.sendall(payload)
c.shutdown(socket.SHUT_WR)
got = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    got += b
print("echoed " + got.hex(), flush=True)
"""

# As nobody: tries to pin and fake root's entries, then serves plain TCP on the port.
PIN_AND_SERVE = r"""
import fcntl, os, socket, sys
rt, port, plain_inode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
held = []
for top, dirs, files in os.walk(os.path.join(rt, "listeners")):
    for name in files:
        try:
            f = open(os.path.join(top, name), "rb")
            fcntl.flock(f, fcntl.LOCK_SH)
            held.append(f)
        except OSError:
            pass
made = 0
for path in ("listeners/tcp-%d" % port, "listeners/0/tcp-%d-%s" % (port, plain_inode),
             "listeners/%d/tcp-%d-%s" % (os.getuid(), port, plain_inode)):
    try:
        os.makedirs(os.path.dirname(os.path.join(rt, path)), exist_ok=True)
        f = open(os.path.join(rt, path), "ab")
        fcntl.flock(f, fcntl.LOCK_SH)
        held.append(f)
        made += 1
    except OSError:
        pass
print("pinned %d made %d" % (len(held) - made, made), file=sys.stderr, flush=True)
sys.stdin.readline()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen()
print("listening %d" % port, file=sys.stderr, flush=True)
c, _ = s.accept()
got = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    got += b
    c.sendall(b)
c.close()
print("received " + got.hex(), flush=True)
sys.stdin.read()
"""

# Listens, forks; the child listens again: both log with debug on.
FORK_LOG = r"""
import os, socket, sys
a = socket.socket(); a.bind(("127.0.0.1", 0)); a.listen()
pid = os.fork()
if pid == 0:
    b = socket.socket(); b.bind(("127.0.0.1", 0)); b.listen()
    print("child %d" % os.getpid(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("parent %d" % os.getpid(), flush=True)
"""


def free_port_on(hosts):
    """A port free on every address in `hosts`."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ok = True
        for h in hosts:
            fam = socket.AF_INET6 if ":" in h else socket.AF_INET
            try:
                with socket.socket(fam) as t:
                    t.bind((h, port))
            except OSError:
                ok = False
        if ok:
            return port
    raise RuntimeError("no common free port")


class SamePortTest(SmcTestCase):

    def py(self, code, args, preload, env=None, name=None, wrap=(), stdin_pipe=True):
        argv = list(wrap) + [sys.executable, "-c", code] + [str(a) for a in args]
        return self.start(argv, preload, env, name, stdin_pipe=stdin_pipe)

    def wait_listening(self, proc):
        m = proc.wait_stderr(r"^listening (\d+)$", 15)
        self.assertIsNotNone(m, proc.describe())
        return int(m.group(1))

    def smc_listener(self, host, port=0, wrap=()):
        p = self.py(LISTEN_ONLY, [host, port], True, name="smcpre-listener", wrap=wrap)
        return p, self.wait_listening(p)

    def plain_echo(self, host, port, wrap=()):
        p = self.py(ECHO, [host, port], False, name="plain-server", wrap=wrap)
        self.wait_listening(p)
        return p

    def assert_plain_exchange(self, server, host, port, env=None):
        """A preloaded client to the plain server: exact bytes both ways, never proposed."""
        cli = self.py(CLIENT, [host, port, PAYLOAD.hex()], True, env, "client",
                      stdin_pipe=False)
        self.finish(cli, 60, 0, [server])
        m = cli.wait_stdout(r"^echoed ([0-9a-f]*)$", 5)
        self.assertIsNotNone(m, cli.describe())
        got = server.wait_stdout(r"^received ([0-9a-f]*)$", 15)
        self.assertIsNotNone(got, self.describe_all(server, cli))
        received = bytes.fromhex(got.group(1))
        self.assertNotIn(bytes([0xE2, 0xD4, 0xC3, 0xD9]), received,
                         "the plain server received CLC bytes\n" + self.describe_all(server, cli))
        self.assertEqual(received, PAYLOAD, self.describe_all(server, cli))
        self.assertEqual(bytes.fromhex(m.group(1)), PAYLOAD, self.describe_all(server, cli))
        # Path TCP, and not by a fallback: no Proposal was made.
        log = cli.stderr_text()
        self.assertNotIn(SMC_ESTABLISHED, log)
        self.assertNotIn("falls back to TCP", log, cli.describe())

    def test_other_ipv4_address(self):
        smc, port = self.smc_listener("127.0.0.1")
        plain = self.plain_echo("127.0.0.2", port)
        self.assert_plain_exchange(plain, "127.0.0.2", port)
        self.release(smc, plain)

    def test_ipv6_and_ipv4_on_one_port(self):
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        port = free_port_on(["127.0.0.1", "::1"])
        with self.subTest("smcpre on 127.0.0.1, plain on ::1"):
            smc, _ = self.smc_listener("127.0.0.1", port)
            plain = self.plain_echo("::1", port)
            self.assert_plain_exchange(plain, "::1", port)
            self.release(smc, plain)
        with self.subTest("smcpre on ::1, plain on 127.0.0.1"):
            smc, _ = self.smc_listener("::1", port)
            plain = self.plain_echo("127.0.0.1", port)
            self.assert_plain_exchange(plain, "127.0.0.1", port)
            self.release(smc, plain)

    def test_other_network_namespace(self):
        if os.geteuid() != 0:
            self.skipTest("needs root for ip netns")
        ns = "smcpre-it-%d" % os.getpid()
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", ns], timeout=30)
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True,
                       timeout=30)
        port = free_port_on(["127.0.0.1"])
        # A container sharing the runtime dir: smcpre's listener at the same address and
        # port, in its own namespace.
        smc, _ = self.smc_listener("127.0.0.1", port, wrap=["ip", "netns", "exec", ns])
        plain = self.plain_echo("127.0.0.1", port)
        self.assert_plain_exchange(plain, "127.0.0.1", port)
        self.release(smc, plain)

    def test_entry_pinned_or_faked_by_another_uid(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run a process as nobody")
        os.chmod(self.runtime_dir, 0o755)
        smc, port = self.smc_listener("127.0.0.1")
        # Root's plain server on another port: nobody tries to vouch for it, too.
        plain_root = self.plain_echo("127.0.0.1", 0)
        plain_root_port = self.wait_listening(plain_root)
        inode = self.listener_inode(plain_root_port)
        nobody = self.py(PIN_AND_SERVE, [self.runtime_dir, port, inode], False, name="nobody",
                         wrap=AS_NOBODY)
        self.assertIsNotNone(nobody.wait_stderr(r"^pinned \d+ made \d+$", 15), nobody.describe())
        # Root's listener dies; nobody takes the port.
        self.release(smc)
        nobody.popen.stdin.write(b"go\n")
        nobody.popen.stdin.flush()
        self.wait_listening(nobody)
        self.assert_plain_exchange(nobody, "127.0.0.1", port)
        # Root's plain server with nobody's fake entries about it.
        self.assert_plain_exchange(plain_root, "127.0.0.1", plain_root_port)
        self.release(nobody, plain_root)

    @staticmethod
    def listener_inode(port):
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return fields[9]
        raise AssertionError("no listener on %d" % port)

    def test_several_users_share_a_runtime_dir(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run a process as nobody")
        # The first user (a database's own account, say) makes the runtime dir.
        os.chmod(self.runtime_dir, 0o755)
        shared = os.path.join(self.runtime_dir, "shared")
        os.mkdir(shared, 0o755)
        os.chown(shared, NOBODY, NOBODY)
        env = {"SMCPRE_RUNTIME_DIR": shared}
        theirs = self.py(ECHO, ["127.0.0.1", 0], True, env, "nobody-server", wrap=AS_NOBODY)
        their_port = self.wait_listening(theirs)
        ours = self.py(ECHO, ["127.0.0.1", 0], True, env, "root-server")
        our_port = self.wait_listening(ours)
        # Both publish: root's client moves onto SMC with each (nobody's server allowed).
        for server, port in ((theirs, their_port), (ours, our_port)):
            cli = self.py(CLIENT, ["127.0.0.1", port, PAYLOAD.hex()], True,
                          dict(env, SMCPRE_SHM_UIDS=str(NOBODY)), "client", stdin_pipe=False)
            self.finish(cli, 60, 0, [server])
            self.assertIn(SMC_ESTABLISHED, cli.stderr_text(), self.describe_all(cli, server))
            m = cli.wait_stdout(r"^echoed ([0-9a-f]*)$", 5)
            self.assertEqual(bytes.fromhex(m.group(1)), PAYLOAD)
        # Both are visible to root's smcpre-stat.
        out = subprocess.run([STAT, "processes", "--json", "--runtime-dir", shared],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=20)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        pids = {p["pid"] for p in json.loads(out.stdout)["processes"]}
        self.assertIn(ours.pid, pids, out.stdout + self.describe_all(ours, theirs))
        self.assertIn(theirs.pid, pids, out.stdout + self.describe_all(ours, theirs))
        for p in (ours, theirs):
            self.assertNotIn("not owned by", p.stderr_text(), p.describe())
            self.assertNotIn("not published", p.stderr_text(), p.describe())
        self.release(ours, theirs)

    def test_fork_child_logs_its_own_thread_id(self):
        proc = self.py(FORK_LOG, [], True, {"SMCPRE_LOG": "debug"}, "forker", stdin_pipe=False)
        self.finish(proc, 30, 0)
        child = int(proc.wait_stdout(r"^child (\d+)$", 5).group(1))
        parent = int(proc.wait_stdout(r"^parent (\d+)$", 5).group(1))
        ids = {}
        for line in proc.stderr_lines:
            m = re.search(r"smcpre\[(\d+)/(\d+)\]", line)
            if m:
                ids.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        self.assertIn(parent, ids.get(parent, set()), proc.describe())
        self.assertIn(child, ids, "the child logged nothing\n" + proc.describe())
        # The child's only thread that logs here is its main thread: tid == pid.
        self.assertNotIn(parent, ids[child], proc.describe())
        self.assertIn(child, ids[child], proc.describe())


if __name__ == "__main__":
    main()
