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
  receives exactly the application's bytes).

Runs only in the guest: `scripts/rxe-vm -- python3 tests/integration/test_kernel_peer.py`
(meson test 'kernel_peer' in suite 'rxe'). Elsewhere every test is skipped.
"""

import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import MIB, REPO, app, main  # noqa: E402
from test_verbs import VerbsTestCase, rxe_packets  # noqa: E402

KERNEL_SMC = os.path.join(REPO, "scripts", "kernel-smc")
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


if __name__ == "__main__":
    main()
