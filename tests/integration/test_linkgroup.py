#!/usr/bin/env python3
"""Link groups: many sequential connections between the same two processes share one link
group (first contact once, then reuse), and concurrent connections in both directions stay
separate and correct."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import KIB, MIB, SmcTestCase, app, main  # noqa: E402

CREATED = "link group created"
REUSED = "link group reused"


class LinkGroupTest(SmcTestCase):

    def test_sequential_connections_reuse_one_link_group(self):
        conns, size = 50, 128 * KIB
        debug = {"SMCPRE_LOG": "debug"}
        srv, port = self.start_server("tcpapp", ["--mode", "sink", "--bytes", str(size),
                                                 "--conns", str(conns)], env=debug)
        cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port", str(port),
                          "--mode", "sink", "--bytes", str(size), "--conns", str(conns)],
                         True, debug, "client")
        self.finish(cli, 90, 0, [srv])
        self.finish(srv, 20, 0, [cli])
        srec, crec = srv.records(), cli.records()
        self.assertEqual((len(srec), len(crec)), (conns, conns))
        self.assert_records_ok(srec, crec, srv, cli)
        self.assert_smc(srec, crec, (srv, cli))
        for p in (srv, cli):
            log = p.stderr_text()
            self.assertEqual(
                (log.count(CREATED), log.count(REUSED)), (1, conns - 1),
                "%s: expected one '%s' and %d '%s' debug lines\n%s"
                % (p.name, CREATED, conns - 1, REUSED, p.describe(tail=20)))

    def concurrent(self, mode, conns, size):
        srv, port = self.start_server("tcpapp", ["--mode", mode, "--bytes", str(size),
                                                 "--conns", str(conns), "--concurrent"])
        cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port", str(port),
                          "--mode", mode, "--bytes", str(size), "--parallel", str(conns)],
                         True, name="client")
        self.finish(cli, 90, 0, [srv])
        self.finish(srv, 20, 0, [cli])
        srec, crec = srv.records(), cli.records()
        self.assertEqual((len(srec), len(crec)), (conns, conns))
        self.assert_records_ok(srec, crec, srv, cli)
        self.assert_smc(srec, crec, (srv, cli))

    def test_concurrent_client_to_server(self):
        self.concurrent("sink", 8, 8 * MIB)

    def test_concurrent_server_to_client(self):
        self.concurrent("source", 8, 8 * MIB)

    def test_concurrent_echo(self):
        self.concurrent("echo", 8, 4 * MIB)


if __name__ == "__main__":
    main()
