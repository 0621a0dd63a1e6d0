#!/usr/bin/env python3
"""Data transfer between two preloaded processes: every size in each direction, echo,
half-close, fixed and random chunking; bytes verified by the programs, SMC path proven by
the kernel's TCP_INFO counters. A plain-TCP control run shows that the proof discriminates,
and a seed mismatch shows that the programs' verification can fail."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import KIB, MIB, SmcTestCase, app, main  # noqa: E402

SIZES = [1, 2, 100, 4095, 4096, 65536, MIB + 7, 64 * MIB]


class TransferTest(SmcTestCase):

    def check_smc(self, mode, nbytes, server_args=(), client_args=(), **kw):
        srv, cli, srec, crec = self.transfer(mode, nbytes, server_args, client_args, **kw)
        self.assertEqual(len(srec), 1)
        self.assertEqual(len(crec), 1)
        c, s = crec[0], srec[0]
        if mode == "sink":
            self.assertEqual((c["bytes_sent"], s["bytes_received"]), (nbytes, nbytes))
        elif mode == "source":
            self.assertEqual((s["bytes_sent"], c["bytes_received"]), (nbytes, nbytes))
        else:
            self.assertEqual((c["bytes_sent"], c["bytes_received"], s["bytes_received"],
                              s["bytes_sent"]), (nbytes,) * 4)
        self.assert_smc(srec, crec, (srv, cli))

    def test_sink_sizes(self):
        """Client -> server, random chunks and calls, server knows the size."""
        for n in SIZES:
            with self.subTest(bytes=n):
                self.check_smc("sink", n, ("--seed", str(n)), ("--seed", str(n)))

    def test_source_sizes(self):
        """Server -> client after a 4-byte request, the server closes after the data; the
        client reads to EOF. (A server that writes before the client's Proposal arrived
        stays TCP by design, doc/design.md §2.2: see test_fallback.)"""
        for n in SIZES:
            with self.subTest(bytes=n):
                self.check_smc("source", n, ("--seed", "7"), ("--seed", "7"))

    def test_peers_rule(self):
        """SMCPRE_PEERS: a client that cannot see the server's registry (another runtime
        dir, as for a server on another host) proposes SMC because a rule names the
        server; without the rule it stays TCP."""
        other = os.path.join(self.runtime_dir, "elsewhere")
        os.mkdir(other, 0o700)
        for rule in (None, "127.0.0.0/8:%d", "*:%d"):
            with self.subTest(rule=rule):
                srv, port = self.start_server("tcpapp", ["--mode", "sink", "--bytes", str(MIB)])
                env = {"SMCPRE_RUNTIME_DIR": other}
                if rule:
                    env["SMCPRE_PEERS"] = rule % port
                cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port",
                                  str(port), "--mode", "sink", "--bytes", str(MIB)], True,
                                 env, "client")
                self.finish(cli, 60, 0, [srv])
                self.finish(srv, 20, 0, [cli])
                srec, crec = srv.records(), cli.records()
                self.assert_records_ok(srec, crec, srv, cli)
                if rule:
                    self.assert_smc(srec, crec, (srv, cli))
                else:
                    self.assert_tcp(srec, crec, (srv, cli))

    def test_echo(self):
        """Both directions at once: the client sends from a second thread while it reads
        the echo (the receive buffers fill up in both directions)."""
        for n in (1, 4096, MIB + 7, 16 * MIB):
            with self.subTest(bytes=n):
                self.check_smc("echo", n)

    def test_half_close(self):
        """shutdown(SHUT_WR) after the data: the server reads to EOF (it is not told the
        size), replies on the half-closed connection and closes; the client sees EOF."""
        for n in (0, 1, 100, 65536, 4 * MIB + 3):
            with self.subTest(mode="sink", bytes=n):
                srv, cli, srec, crec = self.transfer(
                    "sink", n, client_args=["--half-close"], server_knows_size=False)
                self.assertEqual(srec[0]["bytes_received"], n)
                self.assertEqual(crec[0]["bytes_received"], 16)
                self.assert_smc(srec, crec, (srv, cli))
        for n in (1, 2 * MIB):
            with self.subTest(mode="echo", bytes=n):
                self.check_smc("echo", n, (), ("--half-close",))

    def test_fixed_chunks(self):
        """One-byte writes (one CDC per byte), RMB-sized and 1 MiB writes."""
        for chunk, n in ((1, 20000), (256 * KIB, 8 * MIB), (MIB, 8 * MIB + 1)):
            with self.subTest(chunk=chunk, bytes=n):
                self.check_smc("sink", n, ("--chunk", str(chunk)), ("--chunk", str(chunk)))

    def test_bind_addresses(self):
        """IPv6 loopback, and wildcard listeners reached over IPv4 and IPv6."""
        for bind, host in (("::1", "::1"), ("::", "127.0.0.1"), ("::", "::1"),
                           ("0.0.0.0", "127.0.0.1")):
            with self.subTest(bind=bind, host=host):
                srv, port = self.start_server("tcpapp", ["--bind", bind, "--mode", "echo",
                                                         "--bytes", str(MIB)])
                cli = self.start([app("tcpapp"), "client", "--host", host, "--port", str(port),
                                  "--mode", "echo", "--bytes", str(MIB)], True, name="client")
                self.finish(cli, 60, 0, [srv])
                self.finish(srv, 20, 0, [cli])
                self.assert_records_ok(srv.records(), cli.records(), srv, cli)
                self.assert_smc(srv.records(), cli.records(), (srv, cli))

    def test_plain_tcp_control(self):
        """Without the preload the same transfer shows the payload in TCP_INFO: the proof
        used above really tells the paths apart."""
        srv, cli, srec, crec = self.transfer("sink", 4 * MIB, server_preload=False,
                                             client_preload=False)
        self.assert_tcp(srec, crec, (srv, cli))
        self.assertGreaterEqual(srec[0]["tcp_bytes_received"], 4 * MIB)

    def test_verification_detects_corruption(self):
        """The receiver really verifies: a client using another seed is caught."""
        srv, port = self.start_server("tcpapp", ["--mode", "sink", "--bytes", "100000",
                                                 "--seed", "1"], preload=False)
        cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port", str(port),
                          "--mode", "sink", "--bytes", "100000", "--seed", "2"], False,
                         name="client")
        self.finish(cli, 30, 1, [srv])
        self.finish(srv, 10, 1, [cli])
        self.assertIn("data mismatch", srv.records()[0]["error"])


if __name__ == "__main__":
    main()
