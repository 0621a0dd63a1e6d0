#!/usr/bin/env python3
"""A malicious shm peer against an unmodified program under the preload.

tests/hostile/malpeer runs the real CLC handshake and shm rendezvous against a preloaded
echo server (tcpapp), maps the victim's receive ring, regions and RMB as a peer does,
brings the link up, proves it with an echo, and then attacks: cursors outside the ring,
ahead of the data or running backwards (within a wrap and across one), CDCs for unknown
tokens, garbage CDC and LLC messages, ring slots with bad lengths and message numbers, a
lying `posted` word, bad memory regions and a flood of huge ones, bad rkeys and offsets
in the Confirm, and a peer that stops consuming.

Each case checks what the victim did against what a TCP application sees when its peer
resets the connection: the same ECONNRESET on its next call (the error text is compared
with a plain TCP run), one clear log line, and no crash, hang or spin: the victim then
serves a genuine preloaded client over SMC, and uses no CPU while idle. Attacks the
protocol shrugs off (unknown tokens, malformed CDCs, noise outside the cursors) leave the
connection working, as a TCP stack drops a segment that is not for it.
"""

import os
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import REPO, SMC_ESTABLISHED, SmcTestCase, app, cpu_seconds  # noqa: E402

MALPEER = os.environ.get("SMCPRE_MALPEER") or os.path.join(REPO, "build", "tests", "hostile",
                                                            "malpeer")
RESET = "Connection reset by peer"
IDLE_CPU = 0.1  # seconds of CPU the victim may use in IDLE_WINDOW while idle
IDLE_WINDOW = 1.0



class MalPeerTest(SmcTestCase):
    tcp_reset_error = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.path.exists(MALPEER):
            raise unittest.SkipTest("not built: " + MALPEER)

    # ---- the pieces of every case ----------------------------------------------------

    def start_victim(self, env=None):
        return self.start_server("tcpapp", ["--mode", "echo", "--raw", "--conns", "2",
                                            "--timeout", "60"], env=env, name="victim")

    def start_malpeer(self, port, attack, hold=False):
        argv = [MALPEER, "--port", str(port), "--attack", attack]
        return self.start(argv + (["--hold"] if hold else []), False, name="malpeer",
                          stdin_pipe=hold)

    def expect_line(self, proc, pattern, timeout, *others):
        m = proc.wait_stdout(pattern, timeout)
        if m is None:
            self.fail("%s did not say %r within %s s\n%s"
                      % (proc.name, pattern, timeout, self.describe_all(proc, *others)))
        return m

    def assert_idle(self, victim, what, *others):
        before = cpu_seconds(victim.pid)
        time.sleep(IDLE_WINDOW)
        used = cpu_seconds(victim.pid) - before
        self.assertLess(used, IDLE_CPU, "the victim used %.2f s of CPU in %.1f s %s\n%s"
                        % (used, IDLE_WINDOW, what, self.describe_all(victim, *others)))
        return used

    def genuine_client_then_exit(self, victim, *others):
        """The victim still serves: a preloaded client's echo moves over SMC, and the
        victim then exits by itself (its last connection done)."""
        cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port",
                          str(self.port), "--mode", "echo", "--bytes", "100000", "--timeout",
                          "30"], True, name="client")
        self.finish(cli, 40, 0, [victim, *others])
        self.assertIn(SMC_ESTABLISHED, cli.stderr_text(), self.describe_all(cli, victim))
        self.finish(victim, 30, None, [cli, *others])
        self.assertTrue(victim.popen.returncode in (0, 1),
                        "the victim died: exit %s\n%s" % (victim.popen.returncode,
                                                         self.describe_all(victim, *others)))
        records = victim.records()
        self.assertEqual(len(records), 2, self.describe_all(victim, *others))
        self.assertTrue(records[1]["ok"], self.describe_all(victim, cli))
        return records[0]

    def tcp_reset_reference(self):
        """What tcpapp reports when a plain TCP peer resets the connection after 1000
        echoed bytes: the text an SMC reset must match."""
        if MalPeerTest.tcp_reset_error is None:
            srv, port = self.start_server("tcpapp", ["--mode", "echo", "--raw", "--conns", "1",
                                                     "--timeout", "30"], preload=False,
                                          name="tcp-reference")
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(bytes(1000))
            got = 0
            while got < 1000:
                got += len(s.recv(4096))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            self.finish(srv, 30, 1)
            MalPeerTest.tcp_reset_error = srv.records()[0]["error"]
        return MalPeerTest.tcp_reset_error

    # ---- the three outcomes -------------------------------------------------------------

    def run_reset(self, attack, log, env=None, reference=True):
        """The attack resets the connection: the victim's next call fails with
        ECONNRESET (as after a TCP peer's RST), with `log` in its log."""
        victim, self.port = self.start_victim(env)
        peer = self.start_malpeer(self.port, attack)
        self.expect_line(peer, r"^echo-ok$", 20, victim)
        if victim.wait_stdout(r'"conn":0', 20) is None:
            self.fail("the victim did not end the attacked connection within 20 s\n"
                      + self.describe_all(victim, peer))
        self.finish(peer, 20, 0, [victim])
        # The first sign of the reset the peer saw: the victim's abort or its QP's hangup.
        m = self.expect_line(peer, r"^(victim-abort|link-down) after ([0-9.]+) ms$", 1, victim)
        took = float(m.group(2))
        self.assertIn(log, victim.stderr_text(), self.describe_all(victim, peer))
        self.assert_idle(victim, "after the attack", peer)
        record = self.genuine_client_then_exit(victim, peer)
        self.assertFalse(record["ok"], self.describe_all(victim, peer))
        self.assertIn(RESET, record["error"], self.describe_all(victim, peer))
        if reference:
            self.assertEqual(record["error"], self.tcp_reset_reference(),
                             self.describe_all(victim, peer))
        sys.stderr.write("%s: reset after %.3f ms\n" % (attack, took))
        return took

    def run_survive(self, attack, hold=True):
        """The attack is dropped: the connection goes on (an echo after it), the victim
        idle meanwhile, and closes in order."""
        victim, self.port = self.start_victim()
        peer = self.start_malpeer(self.port, attack, hold=hold)
        self.expect_line(peer, r"^attacked$", 20, victim)
        used = self.assert_idle(victim, "under the attack", peer)
        peer.close_stdin()
        self.finish(peer, 30, 0, [victim])
        self.expect_line(peer, r"^closed$", 1, victim)
        self.assertGreaterEqual(peer.stdout_lines.count("echo-ok"), 2,
                                self.describe_all(victim, peer))
        record = self.genuine_client_then_exit(victim, peer)
        self.assertTrue(record["ok"], self.describe_all(victim, peer))
        sys.stderr.write("%s: survived, %.3f s CPU in %.1f s\n" % (attack, used, IDLE_WINDOW))
        return victim

    def run_decline(self, attack, code):
        """The Confirm names memory the peer never registered: the victim declines with
        `code` and the connection goes on over TCP."""
        victim, self.port = self.start_victim()
        peer = self.start_malpeer(self.port, attack)
        self.finish(peer, 30, 0, [victim])
        self.expect_line(peer, r"^declined %s$" % code, 1, victim)
        self.expect_line(peer, r"^tcp-echo-ok$", 1, victim)
        record = self.genuine_client_then_exit(victim, peer)
        self.assertTrue(record["ok"], self.describe_all(victim, peer))

    # ---- a working peer first --------------------------------------------------------

    def test_honest_run(self):
        """The malicious peer's own machinery: without an attack it is an SMC peer the
        victim serves like any other (100 KiB echo through a 64 KiB ring, orderly close)."""
        self.run_survive("none")

    # ---- cursors ----------------------------------------------------------------------

    def test_producer_cursor_outside_the_ring(self):
        self.run_reset("prod-outside-ring", "producer cursor outside the ring")

    def test_producer_cursor_count_huge(self):
        self.run_reset("prod-count-huge", "producer cursor outside the ring")

    def test_producer_cursor_more_than_a_ring_ahead(self):
        self.run_reset("prod-ahead", "producer cursor more than one ring ahead")

    def test_producer_cursor_backwards(self):
        self.run_reset("prod-backwards", "producer cursor moved backwards")

    def test_producer_cursor_wraps_backwards(self):
        self.run_reset("prod-wrap-backwards", "producer cursor moved backwards", reference=False)

    def test_consumer_cursor_outside_the_ring(self):
        self.run_reset("cons-outside-ring", "consumer cursor outside the ring")

    def test_consumer_cursor_ahead_of_the_data(self):
        self.run_reset("cons-ahead", "consumer cursor ahead of what was sent")

    def test_consumer_cursor_backwards(self):
        self.run_reset("cons-backwards", "consumer cursor moved backwards")

    # ---- messages in the receive ring ---------------------------------------------------

    def test_cdc_for_unknown_tokens(self):
        """2000 aborts with absurd cursors for tokens that are not (or no longer) the
        connection's: dropped, the connection goes on."""
        self.run_survive("unknown-token")

    def test_malformed_cdc_messages(self):
        """2000 CDC frames with a wrong length byte or size: dropped as the kernel drops
        them; the connection goes on and the log is not flooded (1, 2, 4, 8... lines)."""
        victim = self.run_survive("garbage-cdc")
        self.assertLess(victim.stderr_text().count("malformed CDC message dropped"), 20,
                        victim.describe())

    def test_llc_message_of_unknown_type(self):
        self.run_reset("garbage-llc", "protocol violation")

    def test_malformed_llc_message(self):
        self.run_reset("malformed-llc", "protocol violation")

    def test_ring_slot_longer_than_the_buffer(self):
        self.run_reset("slot-too-long", "received message longer than the posted buffer")

    def test_ring_slots_with_wrong_message_numbers(self):
        """Noise in every slot of the victim's receive ring with wrong message numbers,
        and the shared `filled` word claiming messages that are not there: nothing is
        read, and the victim does not spin on the false promise."""
        self.run_survive("slot-bad-seq")

    def test_posted_count_beyond_the_ring(self):
        self.run_reset("posted-overflow", "more receive buffers than its receive queue holds",
                       reference=False)

    def test_garbage_in_the_victims_rmb(self):
        """Noise over the victim's RMB outside the cursors is never read as data."""
        self.run_survive("rmb-garbage")

    # ---- memory regions and the RDMA WRITE emulation -------------------------------------

    def test_region_that_is_not_a_memfd(self):
        self.run_reset("region-not-memfd", "not a memfd")

    def test_region_not_sealed(self):
        self.run_reset("region-unsealed", "not sealed against shrinking")

    def test_region_larger_than_its_memfd(self):
        self.run_reset("region-short", "smaller than announced")

    def test_region_flood(self):
        """Thousands of 64 GiB regions would fill the victim's address space (and its
        map count): it maps no more than a budget and resets the link."""
        self.run_reset("region-flood", "budget for peer mappings", reference=False)

    def test_confirm_with_an_unknown_rkey(self):
        self.run_decline("confirm-unknown-rkey", "0x09990001")

    def test_confirm_with_an_rmb_outside_the_region(self):
        self.run_decline("confirm-outside-region", "0x09990001")

    def test_confirm_with_an_rmb_larger_than_the_region(self):
        self.run_decline("confirm-huge-rmb", "0x09990001")

    # ---- a peer that stops consuming ----------------------------------------------------

    def test_peer_posts_no_more_receives(self):
        """Every CDC of the victim meets RNR for good. It must not spin meanwhile, and its
        keepalive (1 s here) finds the link dead: ECONNRESET."""
        self.run_reset("stop-receiving", "no answer to TEST LINK",
                       env={"SMCPRE_KEEPALIVE_MS": "1000"}, reference=False)

    def test_peer_stops_announcing_consumption(self):
        """The peer reads the victim's messages but never moves its consumer cursor: the
        victim's echo blocks once the ring is full, as a TCP writer does on a zero window,
        without using CPU; when the peer goes, the victim's call fails."""
        victim, self.port = self.start_victim()
        peer = self.start_malpeer(self.port, "stop-cons-updates", hold=True)
        self.expect_line(peer, r"^attacked$", 20, victim)
        self.assert_idle(victim, "blocked on a full ring", peer)
        self.assertIsNone(victim.wait_stdout(r'"conn":0', 0.1), victim.describe())
        peer.close_stdin()
        self.finish(peer, 20, 0, [victim])
        if victim.wait_stdout(r'"conn":0', 20) is None:
            self.fail("the victim's blocked send did not end when the peer left\n"
                      + self.describe_all(victim, peer))
        record = self.genuine_client_then_exit(victim, peer)
        self.assertFalse(record["ok"], self.describe_all(victim, peer))


if __name__ == "__main__":
    harness.main()
