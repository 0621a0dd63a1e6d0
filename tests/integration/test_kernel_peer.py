#!/usr/bin/env python3
"""smcpre against the Linux kernel's own SMC-R, in the guest of scripts/rxe-vm.

The guest runs Debian's 6.12 kernel with its SMC-R set up (pnet table, user EID; see
scripts/rxe-vm). The kernel's side of a connection is tcpapp under libsmc_af.so, which
turns its TCP sockets into AF_SMC sockets as smc_run does; smcpre's side is tcpapp under
libsmcpre.so with SMCPRE_DEVICE=verbs. As in test_verbs.py, 10.77.0.1 (veth0, rxe0) and
10.77.0.2 (veth1, rxe1) behave like two hosts.

What is proven, per case: the bytes (tcpapp verifies the pattern and a checksum), and the
path from the kernel's own view: its success and fallback counters and link groups, read
over generic netlink (scripts/kernel-smc).

Cases:
- the test bed itself: two kernel programs speak SMC-Rv2 with zero fallbacks;
- without the SMC TCP option on smcpre's side: a kernel client reaching a smcpre server
  stays plain TCP, intact (the kernel falls back for "peer did not indicate SMC"); a
  smcpre client reaching a kernel server sends no CLC byte (the server's TCP socket
  receives exactly the application's bytes);
- with the option program attached to smcpre's cgroup (smcpre-bpf): SMC-Rv2 both ways,
  64 MiB each way, proven by the rxe counters, the kernel's counters (a v2 success, no
  fallback) and a capture of the handshake (the option in SYN and SYN-ACK, version 2
  Proposal, Accept and Confirm); 16 sequential and 8 concurrent connections on one link
  group; a kernel peer that closes, aborts (closes with data unread) and is killed;
  mismatched EIDs, where the decline is honoured and the stream stays TCP.

Runs only in the guest: `scripts/rxe-vm -- python3 tests/integration/test_kernel_peer.py`
(meson test 'kernel_peer' in suite 'rxe'). Elsewhere every test is skipped.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lo_capture  # noqa: E402
from harness import MIB, REPO, SMC_ESTABLISHED, SMC_TCP_LIMIT, app, main  # noqa: E402
from test_verbs import (CLIENT_ADDR, CLIENT_DEV, PEER_DEATH_BOUND, PEER_GONE,  # noqa: E402
                        RUN_TIMEOUT, SERVER_ADDR, SERVER_DEV, VERBS, VerbsTestCase,
                        rxe_packets)
from test_option import cgroup2_mount  # noqa: E402

KERNEL_SMC = os.path.join(REPO, "scripts", "kernel-smc")
BPF = os.environ.get("SMCPRE_BPF") or os.path.join(REPO, "build", "tools", "smcpre-bpf")
# The user EID scripts/rxe-vm gives the guest's kernel.
KERNEL_EID = os.environ.get("RXE_VM_SMC_EID", "SMCPRE-TEST")
CLC_PROPOSAL, CLC_ACCEPT, CLC_CONFIRM = 1, 2, 3
ENDLESS = str(1 << 40)
# The kernel's reason when the peer's SYN or SYN-ACK had no SMC TCP option.
PEERNOSMC = "0x03010000"


def smc_af():
    return app("libsmc_af.so")


def kernel_view(what):
    """scripts/kernel-smc's JSON for `what` (stats, linkgroups)."""
    out = subprocess.run([sys.executable, KERNEL_SMC, what], check=True, capture_output=True,
                         text=True, timeout=30)
    return json.loads(out.stdout)


class KernelPeerTestCase(VerbsTestCase):
    """Base: the kernel's SMC must be there, and each test reads its counters before and
    after."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.path.exists(smc_af()):
            raise unittest.SkipTest("not built: " + smc_af())
        try:
            kernel_view("stats")
        except (subprocess.CalledProcessError, OSError) as e:
            raise RuntimeError("in the guest, but the kernel's SMC is not usable: %s" % e)

    def setUp(self):
        super().setUp()
        self.kernel_before = kernel_view("stats")

    def kernel_delta(self):
        """What the kernel counted since setUp: {"v2_ok": (client, server),
        "fallbacks": {side: {reason: n}}}."""
        before, after = self.kernel_before, kernel_view("stats")
        smcr_b, smcr_a = before["smcr"], after["smcr"]
        delta = {"v2_ok": tuple(smcr_a.get(k, 0) - smcr_b.get(k, 0)
                                for k in ("client_v2_ok", "server_v2_ok")),
                 "v1_ok": tuple(smcr_a.get(k, 0) - smcr_b.get(k, 0)
                                for k in ("client_v1_ok", "server_v1_ok")),
                 "fallbacks": {}}
        for side in ("client", "server"):
            b, a = before["fallbacks"][side], after["fallbacks"][side]
            delta["fallbacks"][side] = {r: n - b.get(r, 0) for r, n in a.items()
                                        if n != b.get(r, 0)}
        return delta

    def kernel_env(self, extra=None):
        env = {"LD_PRELOAD": smc_af(), "SMC_AF_STRICT": "1"}
        env.update(extra or {})
        return env


class TestBedTest(KernelPeerTestCase):
    def test_kernel_to_kernel_is_smcr_v2(self):
        """Two kernel programs: SMC-Rv2 on both ends, no fallback, bytes over rxe."""
        before = rxe_packets()
        n = 4 * MIB
        srv, cli, srec, crec = self.pair("echo", n, server_preload=False, client_preload=False,
                                         server_env=self.kernel_env(),
                                         client_env=self.kernel_env())
        delta = self.kernel_delta()
        self.assertEqual(delta["v2_ok"], (1, 1), "%s\n%s" % (delta, self.describe_all(srv, cli)))
        self.assertEqual(delta["fallbacks"], {"client": {}, "server": {}}, delta)
        self.assert_rxe_carried(before, [("rxe0", "rxe1"), ("rxe1", "rxe0")], n, (srv, cli))


class WithoutOptionTest(KernelPeerTestCase):
    """smcpre without the SMC TCP option program: the kernel's SMC never sees it as SMC."""

    def test_kernel_client_smcpre_server_stays_tcp(self):
        """The kernel client's SYN carries the option, smcpre's SYN-ACK does not: the kernel
        falls back (PEERNOSMC) before any CLC byte, and the stream is plain TCP, intact."""
        n = MIB + 3
        srv, cli, srec, crec = self.pair("echo", n, client_preload=False,
                                         client_env=self.kernel_env())
        self.assert_tcp(srec, crec, (srv, cli))
        delta = self.kernel_delta()
        self.assertEqual(delta["fallbacks"]["client"], {PEERNOSMC: 1},
                         "%s\n%s" % (delta, self.describe_all(srv, cli)))
        self.assertEqual(delta["v2_ok"] + delta["v1_ok"], (0, 0, 0, 0), delta)

    def test_smcpre_client_kernel_server_sends_no_clc(self):
        """smcpre has no proof that the kernel's server speaks SMC: it sends no Proposal.
        The server's TCP socket receives exactly the application's bytes."""
        n = 65536 + 5
        srv, cli, srec, crec = self.pair("sink", n, server_preload=False,
                                         server_env=self.kernel_env())
        # The kernel counts the client's FIN in tcpi_bytes_received when it rides on the last
        # data segment: one byte more, never a 92-byte Proposal.
        received, on_tcp = srec[0]["bytes_received"], srec[0]["tcp_bytes_received"]
        self.assertTrue(received == n and on_tcp - n in (0, 1),
                        "the application sent %d bytes; the kernel server read %d and its TCP "
                        "socket received %d\n%s" % (n, received, on_tcp,
                                                    self.describe_all(srv, cli)))
        delta = self.kernel_delta()
        self.assertEqual(delta["fallbacks"]["server"], {PEERNOSMC: 1},
                         "%s\n%s" % (delta, self.describe_all(srv, cli)))


class OptionPeerTestCase(KernelPeerTestCase):
    """smcpre's side runs in a cgroup with the SMC TCP option program attached, as a user
    talking to the kernel's SMC-R would set it up (README, "Talking to the kernel's
    SMC-R"), with the kernel's EID."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.path.exists(BPF):
            raise unittest.SkipTest("not built: " + BPF)
        cls.tshark = shutil.which("tshark")
        cls.own_mount = None
        cls.mount = cgroup2_mount()
        if cls.mount is None:
            cls.own_mount = tempfile.mkdtemp(prefix="smcpre-cgroup2-")
            subprocess.run(["mount", "-t", "cgroup2", "none", cls.own_mount], check=True)
            cls.mount = cls.own_mount
        cls.pin_dir = "/sys/fs/bpf/smcpre-kernel-peer"
        cls.cgroup = os.path.join(cls.mount, "smcpre-kernel-peer")
        os.makedirs(cls.cgroup, exist_ok=True)
        out = subprocess.run([BPF, "attach", "--cgroup", cls.cgroup, "--pin-dir", cls.pin_dir],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("smcpre-bpf attach failed in the guest: %s%s"
                               % (out.stdout, out.stderr))

    @classmethod
    def tearDownClass(cls):
        subprocess.run([BPF, "detach", "--all", "--pin-dir", cls.pin_dir], capture_output=True,
                       timeout=60)
        for _ in range(50):
            try:
                os.rmdir(cls.cgroup)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        if cls.own_mount:
            subprocess.run(["umount", cls.own_mount])
            os.rmdir(cls.own_mount)
        super().tearDownClass()

    def smcpre_env(self, extra=None):
        env = dict(VERBS, SMCPRE_BPF_DIR=self.pin_dir, SMCPRE_EID=KERNEL_EID)
        env.update(extra or {})
        return env

    def in_cgroup(self, argv):
        return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.cgroup] + argv

    def side(self, kernel, argv, env=None, name=None):
        """tcpapp on the kernel's side (AF_SMC) or smcpre's (preloaded, in the cgroup)."""
        if kernel:
            return self.start(argv, False, self.kernel_env(), name)
        return self.start(self.in_cgroup(argv), True, self.smcpre_env(env), name)

    def run_pair(self, kernel_server, mode, server_args, client_args, env=None, capture=False,
                 wait=True):
        """A tcpapp server on SERVER_ADDR and a client from CLIENT_ADDR, one of them the
        kernel's; returns (server, client, capture file or None) after both finished (when
        `wait`)."""
        srv = self.side(kernel_server, [app("tcpapp"), "server", "--port", "0", "--bind",
                                        SERVER_ADDR, "--mode", mode, "--timeout",
                                        str(RUN_TIMEOUT)] + server_args, env, "server")
        m = srv.wait_stderr(r"^listening (\d+)$", 60)
        if m is None:
            self.fail("server did not report its port\n" + srv.describe())
        port = int(m.group(1))
        cap = pcap = None
        if capture and self.tshark:
            cap, pcap = lo_capture.start(self, self.tshark, port, self.runtime_dir,
                                         interface="veth1")
        cli = self.side(not kernel_server, [app("tcpapp"), "client", "--host", SERVER_ADDR,
                                            "--port", str(port), "--bind", CLIENT_ADDR, "--mode",
                                            mode, "--timeout", str(RUN_TIMEOUT)] + client_args,
                        env, "client")
        if wait:
            self.finish(cli, RUN_TIMEOUT + 20, 0, [srv])
            self.finish(srv, 30, 0, [cli])
            self.assert_records_ok(srv.records(), cli.records(), srv, cli)
        if cap is not None:
            lo_capture.stop(self, cap)
        return srv, cli, pcap

    def assert_v2_handshake(self, pcap, port_filter="tcp"):
        """The capture: the SMC option in the SYN and the SYN-ACK, then version 2 Proposal,
        Accept and Confirm (type byte 4, version nibble of byte 7), SMC-R, in that order."""
        if pcap is None:
            return
        syns = lo_capture.fields(self, self.tshark, pcap, "tcp.flags.syn == 1",
                                 "tcp.options.experimental.exid")
        self.assertEqual(len(syns), 2, syns)
        for (exid,) in syns:
            self.assertEqual(exid.lower().replace("0x", ""), "e2d4", syns)
        payloads = [row[0].replace(":", "") for row in lo_capture.fields(
            self, self.tshark, pcap, "tcp.len > 0", "tcp.payload") if row and row[0]]
        clc = [bytes.fromhex(p) for p in payloads if p.startswith("e2d4c3d9")][:3]
        self.assertEqual([(m[4], m[7] >> 4) for m in clc],
                         [(CLC_PROPOSAL, 2), (CLC_ACCEPT, 2), (CLC_CONFIRM, 2)],
                         [m.hex() for m in clc])

    def assert_kernel_v2(self, kernel_server, connections=1):
        delta = self.kernel_delta()
        want = (0, connections) if kernel_server else (connections, 0)
        self.assertEqual(delta["v2_ok"], want, delta)
        self.assertEqual(delta["fallbacks"], {"client": {}, "server": {}}, delta)
        return delta


class SmcrV2Test(OptionPeerTestCase):
    """SMC-Rv2 with the kernel, each way."""

    N = 64 * MIB

    def check_64mib(self, kernel_server):
        before = rxe_packets()
        srv, cli, pcap = self.run_pair(kernel_server, "echo", ["--bytes", str(self.N)],
                                       ["--bytes", str(self.N)], capture=True)
        srec, crec = srv.records(), cli.records()
        self.assertEqual((crec[0]["bytes_sent"], srec[0]["bytes_received"],
                          srec[0]["bytes_sent"], crec[0]["bytes_received"]), (self.N,) * 4)
        self.assert_smc(srec, crec, (srv, cli), by_log=False)
        smcpre = cli if kernel_server else srv
        self.assertIn(SMC_ESTABLISHED, smcpre.stderr_text(), smcpre.describe())
        self.assert_rxe_carried(before, [(CLIENT_DEV, SERVER_DEV), (SERVER_DEV, CLIENT_DEV)],
                                self.N, (srv, cli))
        self.assert_kernel_v2(kernel_server)
        self.assert_v2_handshake(pcap)

    def test_smcpre_client_kernel_server_64mib_each_way(self):
        self.check_64mib(kernel_server=True)

    def test_kernel_client_smcpre_server_64mib_each_way(self):
        self.check_64mib(kernel_server=False)


class OneLinkGroupTest(OptionPeerTestCase):
    """Many connections between smcpre and the kernel share one link group."""

    log_level = "debug"  # the link group lines are debug lines

    def check_one_link_group(self, kernel_server):
        """16 sequential connections, then 8 concurrent: one link group."""
        n = 256 * 1024
        for conns, parallel in ((16, 1), (8, 8)):
            with self.subTest(connections=conns, parallel=parallel):
                self.kernel_before = kernel_view("stats")
                # The client's --conns is per parallel stream.
                srv, cli, _ = self.run_pair(kernel_server, "echo",
                                            ["--bytes", str(n), "--conns", str(conns)]
                                            + (["--concurrent"] if parallel > 1 else []),
                                            ["--bytes", str(n), "--conns", str(conns // parallel),
                                             "--parallel", str(parallel)])
                srec, crec = srv.records(), cli.records()
                self.assertEqual((len(srec), len(crec)), (conns, conns))
                self.assert_smc(srec, crec, (srv, cli), by_log=False)
                self.assert_kernel_v2(kernel_server, conns)
                smcpre = cli if kernel_server else srv
                log = smcpre.stderr_text()
                self.assertEqual(log.count(SMC_ESTABLISHED), conns, smcpre.describe())
                self.assertEqual(log.count("link group created"), 1, smcpre.describe())
                self.assertEqual(log.count("link group reused"), conns - 1, smcpre.describe())

    def test_one_link_group_smcpre_client(self):
        self.check_one_link_group(kernel_server=True)

    def test_one_link_group_kernel_client(self):
        self.check_one_link_group(kernel_server=False)


class KernelPeerEndsTest(OptionPeerTestCase):
    """A kernel peer that closes, aborts or is killed: smcpre's side ends as TCP would let
    it (EOF, ECONNRESET or EPIPE) within a bound, never hangs."""

    def survivor_record(self, survivor, others):
        rc = survivor.finish(PEER_DEATH_BOUND)
        if rc is None:
            self.fail("%s still blocked %d s after its kernel peer went\n%s"
                      % (survivor.name, PEER_DEATH_BOUND, self.describe_all(survivor, others)))
        recs = survivor.records()
        self.assertEqual(len(recs), 1, survivor.describe())
        return rc, recs[0]

    def test_kernel_server_closes_after_sending(self):
        """source: the kernel's server sends 8 MiB and closes; smcpre's client reads to EOF."""
        n = 8 * MIB
        srv, cli, _ = self.run_pair(True, "source", ["--bytes", str(n)], ["--bytes", str(n)])
        self.assert_smc(srv.records(), cli.records(), (srv, cli), by_log=False)
        self.assertEqual(cli.records()[0]["bytes_received"], n)
        self.assert_kernel_v2(True)

    def test_kernel_server_aborts_with_data_unread(self):
        """The kernel's server reads 1 MiB, answers and closes with more unread: the kernel
        aborts the connection, and smcpre's sending client gets ECONNRESET or EPIPE."""
        srv, cli, _ = self.run_pair(True, "sink", ["--bytes", str(MIB)], ["--bytes", ENDLESS],
                                    wait=False)
        # The server reports the bytes after its 1 MiB as an error (exit 1) and closes.
        self.finish(srv, RUN_TIMEOUT, None, [cli])
        rc, rec = self.survivor_record(cli, srv)
        self.assertEqual(rc, 1, cli.describe())
        self.assertRegex(rec["error"] or "", r"Connection reset by peer|Broken pipe", rec)
        self.assertLess(rec["tcp_bytes_received"], SMC_TCP_LIMIT, rec)

    def test_kernel_client_killed_while_smcpre_sends(self):
        srv, cli, _ = self.run_pair(False, "source", ["--bytes", ENDLESS], ["--bytes", ENDLESS],
                                    wait=False)
        if srv.wait_stderr(re.escape(SMC_ESTABLISHED), 60) is None:
            self.fail("no SMC connection\n" + self.describe_all(srv, cli))
        time.sleep(2)
        cli.kill()
        rc, rec = self.survivor_record(srv, cli)
        self.assertEqual(rc, 1, srv.describe())
        self.assertRegex(rec["error"] or "", PEER_GONE, rec)
        self.assertGreater(rec["bytes_sent"], MIB, rec)

    def test_kernel_server_killed_while_smcpre_sends(self):
        srv, cli, _ = self.run_pair(True, "sink", ["--bytes", ENDLESS], ["--bytes", ENDLESS],
                                    wait=False)
        if cli.wait_stderr(re.escape(SMC_ESTABLISHED), 60) is None:
            self.fail("no SMC connection\n" + self.describe_all(srv, cli))
        time.sleep(2)
        srv.kill()
        rc, rec = self.survivor_record(cli, srv)
        self.assertEqual(rc, 1, cli.describe())
        self.assertRegex(rec["error"] or "", PEER_GONE, rec)


class MismatchedEidTest(OptionPeerTestCase):
    """EIDs that differ: whoever declines, the decline is honoured and the stream is plain
    TCP, intact."""

    def check(self, kernel_server):
        n = MIB + 7
        srv, cli, _ = self.run_pair(kernel_server, "echo", ["--bytes", str(n)],
                                    ["--bytes", str(n)], env={"SMCPRE_EID": "NOT-THE-KERNELS"})
        self.assert_tcp(srv.records(), cli.records(), (srv, cli))
        delta = self.kernel_delta()
        self.assertEqual(delta["v2_ok"] + delta["v1_ok"], (0, 0, 0, 0), delta)
        side = "server" if kernel_server else "client"
        self.assertEqual(sum(delta["fallbacks"][side].values()), 1, delta)
        return delta

    def test_smcpre_client_kernel_server(self):
        self.check(kernel_server=True)

    def test_kernel_client_smcpre_server(self):
        self.check(kernel_server=False)


if __name__ == "__main__":
    main()
