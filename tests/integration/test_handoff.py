"""Connections that change hands between processes, under the preload, compared with plain
TCP: fork per connection (socketserver.ForkingTCPServer, socat fork), fork+exec (socat
EXEC:...,nofork; a program started with the socket as an inherited fd), SCM_RIGHTS to a
worker, and dup/dup2 within one process.

Closing one descriptor of a socket never ends the connection: only the last close does,
wherever it happens. The process that ends up serving an undecided connection decides it
and moves it onto SMC; a client that does not run smcpre gets plain TCP, byte for byte.
Every echo is verified by tcpapp; the path is read from the client's TCP_INFO.
"""
import os
import shutil
import sys
import unittest

from harness import MIB, SmcTestCase, app, main

HANDOFF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps", "handoff.py")
SIZE = 256 * 1024 + 7


class HandoffTest(SmcTestCase):

    def clients(self, port, preload, conns, parallel=1, size=SIZE):
        """tcpapp echo clients (verifying every byte, half-closing), `conns` per thread;
        returns their records."""
        cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port", str(port),
                          "--mode", "echo", "--bytes", str(size), "--half-close",
                          "--conns", str(conns), "--parallel", str(parallel),
                          "--timeout", "60"],
                         preload, name="client" if preload else "plain-client")
        self.finish(cli, 90, 0, self.procs)
        crec = cli.records()
        self.assertEqual(len(crec), conns * parallel, cli.describe())
        for r in crec:
            self.assertTrue(r["ok"], "%s\n%s" % (r, self.describe_all(self.procs)))
        return cli, crec

    def serve(self, argv):
        srv = self.start(argv, True, name="server")
        # handoff.py prints 'listening <port>'; socat -d -d '... listening on AF=2 0.0.0.0:<port>'
        m = srv.wait_stderr(r"listening (?:on AF=\d+ [0-9.]+:)?(\d+)$", 20)
        self.assertIsNotNone(m, srv.describe())
        return srv, int(m.group(1))

    def run_model(self, argv_for, expect_exit=True):
        """Preloaded clients (sequential, then parallel) move over SMC; plain clients
        (sequential, then parallel) get exact TCP. `argv_for(conns)` is the server."""
        for preload in (True, False):
            srv, port = self.serve(argv_for(8))
            _, seq = self.clients(port, preload, 4)
            _, par = self.clients(port, preload, 1, parallel=4)
            if preload:
                self.assert_smc([], seq + par, ())
            else:
                self.assert_tcp([], seq + par, ())
            if expect_exit:
                self.finish(srv, 30, 0, self.procs)
            else:
                srv.kill()

    # ---- fork per connection ------------------------------------------------------------

    def test_forking_tcp_server(self):
        """socketserver.ForkingTCPServer: the child serves, the parent closes its copy."""
        self.run_model(lambda n: [sys.executable, HANDOFF, "--mode", "forking", "--conns", str(n)])

    @unittest.skipUnless(shutil.which("socat"), "socat not installed")
    def test_socat_fork(self):
        """socat TCP-LISTEN:P,fork: a child per connection, relaying to a `cat` it runs."""
        self.run_model(lambda n: ["socat", "-d", "-d", "TCP-LISTEN:0,fork,reuseaddr", "EXEC:cat"],
                       expect_exit=False)

    # ---- fork + exec ----------------------------------------------------------------------

    @unittest.skipUnless(shutil.which("socat"), "socat not installed")
    def test_socat_fork_exec_nofork(self):
        """socat ...,fork EXEC:cat,nofork: the exec'd `cat` itself holds the connection
        (stdin and stdout, one socket under two fds) and decides it."""
        self.run_model(lambda n: ["socat", "-d", "-d", "TCP-LISTEN:0,fork,reuseaddr",
                                      "EXEC:cat,nofork"],
                       expect_exit=False)

    def test_exec_with_inherited_fd(self):
        """A server that fork+execs a program per connection, passing the socket as an fd
        (subprocess pass_fds), and closes its own copy."""
        self.run_model(lambda n: [sys.executable, HANDOFF, "--mode", "exec", "--conns", str(n)])

    # ---- SCM_RIGHTS, dup ----------------------------------------------------------------

    def test_scm_rights_to_worker(self):
        """The acceptor passes each connection to a worker over a unix socket and closes
        its copy; the worker forks a child per connection, which serves it."""
        self.run_model(lambda n: [sys.executable, HANDOFF, "--mode", "scm", "--conns", str(n)])

    def test_dup_then_close_original(self):
        """dup(), close the original, dup2() to a high fd, close the copy: the connection
        lives on under the last descriptor."""
        self.run_model(lambda n: [sys.executable, HANDOFF, "--mode", "dup", "--conns", str(n)])


if __name__ == "__main__":
    main()
