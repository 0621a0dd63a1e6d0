#!/usr/bin/env python3
"""smcpre over real RC queue pairs: Soft-RoCE (rdma_rxe) in the guest of scripts/rxe-vm.

The guest has rxe0 on veth0 (10.77.0.1) and rxe1 on veth1 (10.77.0.2), and policy routing
sends traffic between the two addresses across the veth pair. A client bound to 10.77.0.1
that connects to a server on 10.77.0.2 therefore has its route on veth0 and must use rxe0,
the server's accepted socket has its route on veth1 and must use rxe1: the two processes
behave like two hosts. Both run with SMCPRE_DEVICE=verbs (auto would pick shm for a peer on
the same host; one test checks that it still does).

What is proven, per connection: the bytes (the programs verify the pattern and a checksum),
the path (the kernel's TCP_INFO shows only the CLC handshake; small transfers also need the
"connection SMC established" log line on both sides), and the device (each side's log
names the RDMA device it opened, and only that one).

Tests: blocking transfers of many sizes each way and echo, ring-size boundaries; many
connections on one link group (sequential and concurrent); fallback to TCP when the server
has no RDMA device, by configuration or because its address is on an interface without
one; a peer killed mid-stream or while the survivor waits (error or EOF within a bound,
never a hang or a crash); SMCPRE_DEVICE=auto between local peers still uses shm;
smcpre-stat lists a held connection with its verbs path and link.

Runs only in the guest: `scripts/rxe-vm -- python3 tests/integration/test_verbs.py` (meson
test 'verbs' in suite 'rxe'). Elsewhere every test is skipped, except that under rxe-vm
(RXE_VM_SCRATCH set) a guest without its rxe devices is an error.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (KIB, MIB, PROOF_MIN, SMC_ESTABLISHED, SMC_TCP_LIMIT,  # noqa: E402
                     SmcTestCase, app, main)

# The guest's two "hosts" (scripts/rxe-vm): netdev, address and RDMA device of each side.
CLIENT_ADDR, CLIENT_DEV = "10.77.0.1", "rxe0"  # veth0
SERVER_ADDR, SERVER_DEV = "10.77.0.2", "rxe1"  # veth1
# An interface without RDMA for the fallback test (created by the test, in the guest only).
NORDMA_IF, NORDMA_ADDR = "dummy0", "10.78.0.1"

VERBS = {"SMCPRE_DEVICE": "verbs"}
# Under TCG everything is ~50x slower than on hardware: generous per-run bounds.
RUN_TIMEOUT = 60
START_TIMEOUT = 60
# The default 2 s handshake bound covers the first contact (device open, QP setup, CONFIRM
# LINK) on real hardware; under TCG on a busy host that alone has been seen taking 2 s.
HANDSHAKE_TIMEOUT_MS = "15000"
# How long a survivor may take to notice a killed peer (its send/recv must end by then).
PEER_DEATH_BOUND = 30

CREATED = "link group created"
REUSED = "link group reused"
# Both "no SMC device" (0x03030000) and "no SMC-R device" (0x03030002) say what the test
# wants to see: the server had no RDMA device for this connection.
NO_DEVICE_DECLINE = re.compile(r"declined: NOSMC\w* \(0x0303000[02]\)")
# What a survivor's failed call may report (tcpapp prints strerror or "EOF after ...").
PEER_GONE = re.compile(r"Connection reset by peer|Broken pipe|EOF after")
# A stream no test run ever completes: the peer is killed long before.
ENDLESS = str(1 << 40)


# (test, seconds) of every test run, printed at the end: the file must stay well within
# scripts/rxe-vm's --timeout under TCG.
TIMES = []


def tearDownModule():
    if TIMES:
        sys.stderr.write("\ntimes:\n" + "".join("  %6.1f s  %s\n" % (t, name) for name, t in TIMES)
                         + "  %6.1f s  in all\n" % sum(t for _, t in TIMES))


def guest_problem():
    """None in scripts/rxe-vm's guest (rxe0/rxe1 ACTIVE, both addresses local); otherwise
    what is missing."""
    for dev in (CLIENT_DEV, SERVER_DEV):
        path = "/sys/class/infiniband/%s/ports/1/state" % dev
        try:
            with open(path) as f:
                state = f.read().strip()
        except OSError:
            return "no RDMA device %s (%s)" % (dev, path)
        if "ACTIVE" not in state:
            return "%s port 1 is %s" % (dev, state)
    for addr in (CLIENT_ADDR, SERVER_ADDR):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((addr, 0))
        except OSError:
            return "%s is not a local address" % addr
        finally:
            s.close()
    return None


def rxe_packets():
    """{device: (sent_pkts, rcvd_pkts)} of both rxe devices: the kernel's own count of the
    RoCE packets each sent and received, independent of anything smcpre logs."""
    out = {}
    for dev in (CLIENT_DEV, SERVER_DEV):
        counters = "/sys/class/infiniband/%s/ports/1/hw_counters/" % dev
        with open(counters + "sent_pkts") as f_sent, open(counters + "rcvd_pkts") as f_rcvd:
            out[dev] = (int(f_sent.read()), int(f_rcvd.read()))
    return out


def min_packets(nbytes):
    """The fewest RoCE packets that can carry nbytes: one per 4096 bytes (the largest
    InfiniBand MTU)."""
    return nbytes // 4096


def opened_devices(proc):
    """The RDMA/shm devices a process's log says it opened or uses ("device rxe0 port 1
    (gid index 1) opened for veth0", "verbs: using rxe0 port 1 ...", "device shm opened")."""
    names = set()
    for line in proc.stderr_text().splitlines():
        if re.search(r"\b(opened|using)\b", line):
            names.update(re.findall(r"\b(rxe\d+|shm)\b", line))
    return names


class VerbsTestCase(SmcTestCase):
    """Base: guest check, client/server placement on the two veth ends, device proofs."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        problem = guest_problem()
        if problem is None:
            return
        if os.environ.get("RXE_VM_SCRATCH"):
            # scripts/rxe-vm promised rxe0 and rxe1: their absence is a failure, not a skip.
            raise RuntimeError("running under scripts/rxe-vm, but " + problem)
        raise unittest.SkipTest("not in the Soft-RoCE guest (%s): run through scripts/rxe-vm"
                                % problem)

    def setUp(self):
        super().setUp()
        self.t0 = time.monotonic()

    def env(self, preload, extra=None):
        merged = {"SMCPRE_HANDSHAKE_TIMEOUT_MS": HANDSHAKE_TIMEOUT_MS}
        merged.update(extra or {})
        return super().env(preload, merged)

    def tearDown(self):
        super().tearDown()
        TIMES.append((self.id().split(".", 1)[-1], time.monotonic() - self.t0))

    def pair(self, mode, nbytes, server_args=(), client_args=(), server_env=VERBS,
             client_env=VERBS, host=SERVER_ADDR, client_bind=CLIENT_ADDR, **kw):
        """tcpapp server on `host`, client bound to `client_bind`; returns what
        harness.transfer returns."""
        cargs = list(client_args)
        if client_bind:
            cargs += ["--bind", client_bind]
        return self.transfer(mode, nbytes, ["--bind", host, "--timeout", str(RUN_TIMEOUT)]
                             + list(server_args), cargs, server_env=server_env,
                             client_env=client_env, timeout=RUN_TIMEOUT + 10, host=host,
                             start_timeout=START_TIMEOUT, **kw)

    def assert_devices(self, srv, cli, server_dev=SERVER_DEV, client_dev=CLIENT_DEV):
        """Each side opened exactly the device its route calls for."""
        for p, want in ((srv, server_dev), (cli, client_dev)):
            got = opened_devices(p)
            self.assertEqual(got, {want}, "%s: expected device %s in the log, found %s\n%s"
                             % (p.name, want, sorted(got) or "none", p.describe(tail=20)))

    def assert_rdma(self, srv, cli, srec, crec):
        """SMC over the verbs devices: path by TCP_INFO (and log for small transfers),
        device by log."""
        self.assert_smc(srec, crec, (srv, cli))
        self.assert_devices(srv, cli)

    def assert_rxe_carried(self, before, flows, nbytes, procs):
        """The rxe devices' own counters grew by at least the packets needed for nbytes in
        each (sending device, receiving device) flow since `before` (rxe_packets())."""
        after = rxe_packets()
        for src, dst in flows:
            sent = after[src][0] - before[src][0]
            rcvd = after[dst][1] - before[dst][1]
            self.assertTrue(
                sent >= min_packets(nbytes) and rcvd >= min_packets(nbytes),
                "%d bytes %s -> %s, but %s sent only %d RoCE packets and %s received %d "
                "(at least %d needed)\n%s" % (nbytes, src, dst, src, sent, dst, rcvd,
                                               min_packets(nbytes), self.describe_all(*procs)))

    def assert_rxe_idle(self, before, nbytes, procs):
        """Not even a fraction of nbytes went over rxe since `before`."""
        after = rxe_packets()
        for dev in after:
            moved = max(after[dev][0] - before[dev][0], after[dev][1] - before[dev][1])
            self.assertLess(moved, max(1, min_packets(nbytes)),
                            "%s moved %d RoCE packets during a transfer that should not "
                            "use it\n%s" % (dev, moved, self.describe_all(*procs)))

    def start_pair(self, server_args, client_args, env=VERBS):
        """A server on SERVER_ADDR and a client from CLIENT_ADDR, not waited for."""
        srv, port = self.start_server(
            "tcpapp", ["--bind", SERVER_ADDR, "--timeout", str(RUN_TIMEOUT)] + server_args,
            env=env, timeout=START_TIMEOUT)
        cli = self.start([app("tcpapp"), "client", "--host", SERVER_ADDR, "--port", str(port),
                          "--bind", CLIENT_ADDR, "--timeout", str(RUN_TIMEOUT)] + client_args,
                         True, env, "client")
        return srv, cli


class TransferTest(VerbsTestCase):
    """Blocking transfers of many sizes in each direction; bytes verified by tcpapp."""

    SIZES = [0, 1, 7, 4095, 4096, 65537, MIB + 3, 16 * MIB]

    FLOWS = {"sink": [(CLIENT_DEV, SERVER_DEV)], "source": [(SERVER_DEV, CLIENT_DEV)],
             "echo": [(CLIENT_DEV, SERVER_DEV), (SERVER_DEV, CLIENT_DEV)]}

    def check(self, mode, n, server_args=(), client_args=(), env=VERBS, **kw):
        before = rxe_packets()
        srv, cli, srec, crec = self.pair(mode, n, server_args, client_args, env, env, **kw)
        self.assertEqual((len(srec), len(crec)), (1, 1))
        s, c = srec[0], crec[0]
        if mode == "sink":
            # tcpapp's sink reply carries the server's count and Fletcher checksum, which
            # the client compared with its own.
            self.assertEqual((c["bytes_sent"], s["bytes_received"]), (n, n))
        elif mode == "source":
            self.assertEqual((s["bytes_sent"], c["bytes_received"]), (n, n))
        else:
            self.assertEqual((c["bytes_sent"], s["bytes_received"], s["bytes_sent"],
                              c["bytes_received"]), (n,) * 4)
        self.assert_rdma(srv, cli, srec, crec)
        self.assert_rxe_carried(before, self.FLOWS[mode], n, (srv, cli))

    def test_sink_sizes(self):
        """Client -> server, random chunks and calls. Zero bytes: the client half-closes
        and the server reads to EOF (a server told to expect nothing would reply without
        reading, before the Proposal arrived, and so stay TCP by design)."""
        for n in self.SIZES:
            with self.subTest(bytes=n):
                seed = ("--seed", str(n))
                if n == 0:
                    self.check("sink", n, seed, seed + ("--half-close",),
                               server_knows_size=False)
                else:
                    self.check("sink", n, seed, seed)

    def test_source_sizes(self):
        """Server -> client after the client's request; the client reads to EOF."""
        for n in self.SIZES:
            with self.subTest(bytes=n):
                self.check("source", n, ("--seed", "5"), ("--seed", "5"))

    def test_echo(self):
        """Both directions at once (the client sends from a second thread)."""
        for n in (1, 4096, MIB + 3, 16 * MIB):
            with self.subTest(bytes=n):
                self.check("echo", n)

    def test_ring_boundaries(self):
        """64 KiB RMBs on both sides and writes of 64 KiB - 1, 64 KiB and 64 KiB + 1: every
        write wraps the ring somewhere else or fills it exactly."""
        env = dict(VERBS, SMCPRE_RMB_SIZE=str(64 * KIB))
        n = 4 * 64 * KIB + 1
        for chunk in (64 * KIB - 1, 64 * KIB, 64 * KIB + 1):
            for mode in ("sink", "source", "echo"):
                with self.subTest(chunk=chunk, mode=mode):
                    args = ("--chunk", str(chunk))
                    self.check(mode, n, args, args, env)

    def test_plain_tcp_control(self):
        """Without the preload the same placement shows the payload in TCP_INFO, and no
        device in the log, and no RoCE packets: the proofs above discriminate."""
        before = rxe_packets()
        srv, cli, srec, crec = self.pair("sink", MIB, server_preload=False,
                                         client_preload=False)
        self.assert_tcp(srec, crec, (srv, cli))
        self.assertGreaterEqual(srec[0]["tcp_bytes_received"], MIB)
        self.assertEqual(opened_devices(srv) | opened_devices(cli), set())
        self.assert_rxe_idle(before, MIB, (srv, cli))


class LinkGroupTest(VerbsTestCase):
    """Many connections between one client process and one server process share one link
    group: one first contact (CONFIRM LINK), then reuse."""

    log_level = "debug"

    def check_one_group(self, srv, cli, conns):
        for p in (srv, cli):
            log = p.stderr_text()
            self.assertEqual(
                (log.count(CREATED), log.count(REUSED)), (1, conns - 1),
                "%s: expected one '%s' and %d '%s' debug lines\n%s"
                % (p.name, CREATED, conns - 1, REUSED, p.describe(tail=30)))

    def test_sequential_connections(self):
        conns, size = 32, 256 * KIB
        before = rxe_packets()
        srv, cli, srec, crec = self.pair("sink", size, ("--conns", str(conns)),
                                         ("--conns", str(conns)))
        self.assertEqual((len(srec), len(crec)), (conns, conns))
        self.assert_rdma(srv, cli, srec, crec)
        self.assert_rxe_carried(before, [(CLIENT_DEV, SERVER_DEV)], conns * size, (srv, cli))
        self.check_one_group(srv, cli, conns)

    def test_concurrent_connections(self):
        """16 connections at once, both directions busy (echo): the first contacts race
        and must still end up as one link group."""
        conns, size = 16, MIB
        before = rxe_packets()
        srv, cli, srec, crec = self.pair("echo", size, ("--conns", str(conns), "--concurrent"),
                                         ("--parallel", str(conns)))
        self.assertEqual((len(srec), len(crec)), (conns, conns))
        for r in srec + crec:
            self.assertEqual((r["bytes_sent"], r["bytes_received"]), (size, size), r)
        self.assert_rdma(srv, cli, srec, crec)
        self.assert_rxe_carried(before, [(CLIENT_DEV, SERVER_DEV), (SERVER_DEV, CLIENT_DEV)],
                                conns * size, (srv, cli))
        self.check_one_group(srv, cli, conns)


class FallbackTest(VerbsTestCase):
    """A server without an RDMA device for the connection declines; both continue on TCP
    with exactly the application's bytes."""

    def check_declined(self, before, srv, cli, srec, crec):
        self.assert_tcp(srec, crec, (srv, cli))
        self.assert_rxe_idle(before, MIB, (srv, cli))
        for p in (srv, cli):
            self.assertNotIn(SMC_ESTABLISHED, p.stderr_text(), p.describe())
        # The client proposed (it has rxe0) and was told why not.
        self.assertRegex(cli.stderr_text(), NO_DEVICE_DECLINE,
                         "the client's log does not show a 'no SMC device' decline\n"
                         + self.describe_all(srv, cli))

    def test_server_device_none(self):
        """SMCPRE_DEVICE=none on the server."""
        for mode in ("sink", "source", "echo"):
            with self.subTest(mode=mode):
                before = rxe_packets()
                srv, cli, srec, crec = self.pair(mode, MIB + 1,
                                                 server_env={"SMCPRE_DEVICE": "none"})
                self.check_declined(before, srv, cli, srec, crec)

    def test_server_address_without_rdma(self):
        """The server listens on an address of an interface without RDMA (dummy0): a
        client forcing rxe0 proposes, the server (SMCPRE_DEVICE=verbs) finds no RDMA port
        for the connection's route and declines."""
        # Changes the machine's interfaces: only in the throw-away guest, where we are root.
        if not os.environ.get("RXE_VM_SCRATCH") or os.geteuid() != 0:
            self.skipTest("creates %s: only as root in scripts/rxe-vm's guest" % NORDMA_IF)
        subprocess.run(["ip", "link", "del", NORDMA_IF], stderr=subprocess.DEVNULL,
                       check=False)
        for cmd in (["ip", "link", "add", NORDMA_IF, "type", "dummy"],
                    ["ip", "addr", "add", NORDMA_ADDR + "/24", "dev", NORDMA_IF],
                    ["ip", "link", "set", NORDMA_IF, "up"]):
            subprocess.run(cmd, check=True, timeout=30)
        self.addCleanup(subprocess.run, ["ip", "link", "del", NORDMA_IF], check=False)
        for mode in ("sink", "source"):
            with self.subTest(mode=mode):
                before = rxe_packets()
                srv, cli, srec, crec = self.pair(mode, MIB + 1, host=NORDMA_ADDR,
                                                 client_env={"SMCPRE_DEVICE": CLIENT_DEV})
                self.check_declined(before, srv, cli, srec, crec)
                self.assertEqual(opened_devices(srv), set(), srv.describe())


class PeerKilledTest(VerbsTestCase):
    """SIGKILL of one side of an SMC connection over verbs: the survivor's blocked send or
    recv ends with ECONNRESET, EPIPE or EOF within PEER_DEATH_BOUND seconds; it neither
    hangs nor crashes (tcpapp reports the error and exits 1)."""

    # Idle variants: a low keepalive finds a dead peer that nothing is sent to.
    KEEPALIVE = dict(VERBS, SMCPRE_KEEPALIVE_MS="1000")

    def kill_and_watch(self, srv, cli, victim, settle):
        """Waits until both sides run on SMC, lets them run `settle` seconds, kills
        `victim` and returns the survivor's only record."""
        survivor = cli if victim is srv else srv
        for p in (srv, cli):
            # The first outcome line: established, or a fallback (which fails at once).
            m = p.wait_stderr(re.escape(SMC_ESTABLISHED) + "|falls back to TCP|: TCP$",
                              START_TIMEOUT)
            if m is None or m.group(0) != SMC_ESTABLISHED:
                self.fail("%s: no '%s' line\n%s" % (p.name, SMC_ESTABLISHED,
                                                    self.describe_all(srv, cli)))
        time.sleep(settle)
        self.assertTrue(victim.alive() and survivor.alive(),
                        "a side ended before the kill\n" + self.describe_all(srv, cli))
        victim.kill()
        t0 = time.monotonic()
        rc = survivor.finish(PEER_DEATH_BOUND)
        took = time.monotonic() - t0
        if rc is None:
            self.fail("%s still blocked %d s after its peer was killed\n%s"
                      % (survivor.name, PEER_DEATH_BOUND, self.describe_all(srv, cli)))
        self.assertEqual(rc, 1, "%s: exit status %s (1 = error reported, 3 = its own "
                         "timeout, negative = crashed)\n%s"
                         % (survivor.name, rc, self.describe_all(srv, cli)))
        recs = survivor.records()
        self.assertEqual(len(recs), 1, survivor.describe())
        rec = recs[0]
        self.assertFalse(rec["ok"], rec)
        self.assertRegex(rec["error"] or "", PEER_GONE,
                         "%s ended with an unexpected error (%.1f s after the kill)\n%s"
                         % (survivor.name, took, self.describe_all(srv, cli)))
        # The survivor's stream was on SMC: its TCP socket carried only the handshake.
        for key in ("tcp_bytes_received", "tcp_bytes_acked"):
            self.assertLess(rec[key], SMC_TCP_LIMIT, "%s: %s\n%s" % (key, rec, survivor.describe()))
        return rec

    def test_server_killed_while_client_sends(self):
        srv, cli = self.start_pair(["--mode", "sink", "--bytes", ENDLESS],
                                   ["--mode", "sink", "--bytes", ENDLESS])
        rec = self.kill_and_watch(srv, cli, srv, 2)
        self.assertGreaterEqual(rec["bytes_sent"], PROOF_MIN, rec)

    def test_client_killed_while_server_sends(self):
        srv, cli = self.start_pair(["--mode", "source", "--bytes", ENDLESS],
                                   ["--mode", "source", "--bytes", ENDLESS])
        rec = self.kill_and_watch(srv, cli, cli, 2)
        self.assertGreaterEqual(rec["bytes_sent"], PROOF_MIN, rec)

    # Idle: the client sends 64 KiB and waits for the sink reply, the server waits for the
    # 64 KiB more it was told to expect; neither sends anything when the other dies.
    IDLE = 64 * KIB

    def test_server_killed_while_client_waits(self):
        srv, cli = self.start_pair(["--mode", "sink", "--bytes", str(2 * self.IDLE)],
                                   ["--mode", "sink", "--bytes", str(self.IDLE)],
                                   self.KEEPALIVE)
        rec = self.kill_and_watch(srv, cli, srv, 3)
        # All sent, nothing received: the client was waiting for the reply.
        self.assertEqual((rec["bytes_sent"], rec["bytes_received"]), (self.IDLE, 0), rec)

    def test_client_killed_while_server_waits(self):
        srv, cli = self.start_pair(["--mode", "sink", "--bytes", str(2 * self.IDLE)],
                                   ["--mode", "sink", "--bytes", str(self.IDLE)],
                                   self.KEEPALIVE)
        rec = self.kill_and_watch(srv, cli, cli, 3)
        self.assertEqual(rec["bytes_received"], self.IDLE, rec)


class AutoDeviceTest(VerbsTestCase):
    """SMCPRE_DEVICE=auto: peers on the same host use shm, also where rxe would serve."""

    def test_local_peers_use_shm(self):
        auto = {"SMCPRE_DEVICE": "auto"}
        for host, bind in (("127.0.0.1", None), (SERVER_ADDR, CLIENT_ADDR)):
            with self.subTest(host=host):
                before = rxe_packets()
                srv, cli, srec, crec = self.pair("echo", MIB + 3, server_env=auto,
                                                 client_env=auto, host=host, client_bind=bind)
                self.assert_smc(srec, crec, (srv, cli))
                self.assert_devices(srv, cli, "shm", "shm")
                self.assert_rxe_idle(before, MIB, (srv, cli))


class StatsTest(VerbsTestCase):
    """What smcpre-stat shows for a connection over the verbs device: its path, its link
    group on an RDMA adapter, and no RNR figure (an adapter retries RNR in hardware and
    tells nobody which send met it)."""

    # Holds one connection open until stdin closes: the server reads the client's 5
    # bytes and answers them; both print "ready" on stderr.
    HOLD = r"""
import socket, sys
role, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if role == "server":
    ls = socket.socket()
    ls.bind((addr, 0))
    ls.listen(1)
    print("listening %d" % ls.getsockname()[1], file=sys.stderr, flush=True)
    c = ls.accept()[0]
    c.sendall(c.recv(5, socket.MSG_WAITALL))
else:
    c = socket.create_connection((addr, port), source_address=(sys.argv[4], 0))
    c.sendall(b"hello")
    assert c.recv(5, socket.MSG_WAITALL) == b"hello"
print("ready", file=sys.stderr, flush=True)
sys.stdin.read()
"""

    def test_connection_listed_with_its_path(self):
        stat = os.environ.get("SMCPRE_STAT")
        if not stat:
            self.skipTest("SMCPRE_STAT not set (meson sets it)")
        env = dict(VERBS, SMCPRE_HANDSHAKE_TIMEOUT_MS=HANDSHAKE_TIMEOUT_MS)
        srv = self.start([sys.executable, "-c", self.HOLD, "server", SERVER_ADDR, "0"], True,
                         env, "server", stdin_pipe=True)
        m = srv.wait_stderr(r"^listening (\d+)$", START_TIMEOUT)
        self.assertIsNotNone(m, srv.describe())
        cli = self.start([sys.executable, "-c", self.HOLD, "client", SERVER_ADDR, m.group(1),
                          CLIENT_ADDR], True, env, "client", stdin_pipe=True)
        for p in (srv, cli):
            self.assertIsNotNone(p.wait_stderr(r"^ready$", RUN_TIMEOUT),
                                 self.describe_all(srv, cli))

        def run_stat(*args):
            out = subprocess.run([stat] + list(args) + ["--runtime-dir", self.runtime_dir],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            return out.stdout
        procs = {p["pid"]: p for p in json.loads(run_stat("show", "--json"))["processes"]}
        for p, role, local, peer in ((cli, "client", CLIENT_ADDR, SERVER_ADDR),
                                     (srv, "server", SERVER_ADDR, CLIENT_ADDR)):
            mine = procs[p.pid]
            conns = mine["connections"]
            self.assertEqual(len(conns), 1, mine)
            self.assertEqual(conns[0]["path_name"], "SMC-R/verbs", mine)
            self.assertEqual(conns[0]["role_name"], role)
            self.assertTrue(conns[0]["local"].startswith(local + ":"), conns[0])
            self.assertTrue(conns[0]["peer"].startswith(peer + ":"), conns[0])
            self.assertEqual((conns[0]["bytes_sent"], conns[0]["bytes_received"]), (5, 5))
            self.assertEqual([(l["device"], l["state"]) for l in mine["links"]], [(2, 1)], mine)
        table = run_stat("connections", str(cli.pid))
        self.assertRegex(table, r"client\s+%s:\d+\s+%s:%s\s+active\s+SMC-R/verbs\s+5\s+5\s+-"
                         % (re.escape(CLIENT_ADDR), re.escape(SERVER_ADDR), m.group(1)))
        self.assertIn("(not counted on RDMA adapter links)", run_stat("show", str(cli.pid)))
        self.release(srv, cli)


MALPEER = os.environ.get("SMCPRE_MALPEER") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "build", "tests",
    "hostile", "malpeer")


class MalPeerVerbsTest(VerbsTestCase):
    """tests/hostile/malpeer over rxe0 against a preloaded echo server on rxe1: what a
    user-space verbs peer can do wrong (the shm file test_malpeer.py has the rest). Bad
    cursors and an LLC message of no known type reset the connection (ECONNRESET, a
    warning naming the violation); CDCs for unknown tokens are dropped and the echo goes
    on; a Confirm naming an rkey that does not exist is accepted (verbs cannot check it)
    and the victim's first WRITE ends in a remote access error: ECONNRESET too."""

    def attack(self, name):
        srv, port = self.start_server("tcpapp", ["--bind", SERVER_ADDR, "--mode", "echo", "--raw",
                                                 "--conns", "1", "--timeout", str(RUN_TIMEOUT)],
                                      env=VERBS, name="victim", timeout=START_TIMEOUT)
        peer = self.start([MALPEER, "--host", SERVER_ADDR, "--port", str(port), "--attack", name,
                           "--verbs", CLIENT_DEV, "--bind", CLIENT_ADDR], False, name="malpeer")
        self.finish(peer, RUN_TIMEOUT, 0, [srv])
        rc = self.finish(srv, RUN_TIMEOUT, None, [peer])
        self.assertIn(rc, (0, 1), "the victim died\n" + self.describe_all(srv, peer))
        recs = srv.records()
        self.assertEqual(len(recs), 1, self.describe_all(srv, peer))
        return srv, peer, recs[0]

    def assert_reset(self, name, log):
        srv, peer, rec = self.attack(name)
        self.assertFalse(rec["ok"], self.describe_all(srv, peer))
        self.assertIn("Connection reset by peer", rec["error"], self.describe_all(srv, peer))
        self.assertIn(log, srv.stderr_text(), self.describe_all(srv, peer))

    def test_producer_cursor_outside_the_ring(self):
        self.assert_reset("prod-outside-ring", "producer cursor outside the ring")

    def test_consumer_cursor_backwards(self):
        self.assert_reset("cons-backwards", "consumer cursor moved backwards")

    def test_llc_message_of_unknown_type(self):
        self.assert_reset("garbage-llc", "protocol violation")

    def test_confirm_with_an_unknown_rkey(self):
        self.assert_reset("confirm-unknown-rkey", "remote access error")

    def test_cdc_for_unknown_tokens(self):
        srv, peer, rec = self.attack("unknown-token")
        self.assertTrue(rec["ok"], self.describe_all(srv, peer))
        self.assertEqual(peer.stdout_lines.count("echo-ok"), 2, self.describe_all(srv, peer))


if __name__ == "__main__":
    main()
