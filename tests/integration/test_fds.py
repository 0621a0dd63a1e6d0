"""File descriptors: smcpre never makes a program run out of them where TCP would not.

An asyncio echo server whose soft RLIMIT_NOFILE is 1024 serves 900 concurrent clients over
plain TCP. Preloaded, it must serve the same 900: the connections smcpre's share of the
limit allows go SMC, the others stay TCP with the reason NO_FDS, and the server never
meets EMFILE (once it did at about 200 connections, then spun in accept4 serving nobody).
While all 900 connections are open, the descriptors each side holds beyond its own
sockets are counted from /proc/<pid>/fd: what an SMC connection really costs.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SMC_TCP_LIMIT, SmcTestCase  # noqa: E402

STAT = os.environ.get("SMCPRE_STAT") or os.path.join(
    os.path.dirname(os.path.dirname(harness.LIB)), "tools", "smcpre-stat")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps",
                      "asyncio_echo.py")

CONNS = 900
SERVER_NOFILE = 1024
# The client holds 900 connections in one process: its limit must be above that (and
# smcpre's share of it bounds how many of them the client proposes on).
CLIENT_NOFILE = 4096
SIZE = 64 * 1024  # over TCP the kernel counts the payload; over SMC only the handshake
# Descriptors an SMC connection may hold beyond the application's socket: its readiness
# mirror's two ends while polled (before: 3 to 5, with a TCP watch and an RMB memfd) ...
MAX_FDS_PER_SMC = 2
# ... and a process's own, whatever its connections: the progress thread's epoll and
# eventfd, the stats file, the listener's registry entry, the shm device's listener, a
# link's queue pair (5) and memory areas (a few memfds).
FIXED_FDS = 16


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class FdLimitTest(SmcTestCase):

    log_level = "warn"

    def stat_json(self, pid):
        out = subprocess.run([STAT, "show", "--json", str(pid), "--runtime-dir",
                              self.runtime_dir], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        return {p["pid"]: p for p in json.loads(out.stdout)["processes"]}[pid]

    def serve(self, preload):
        """The server at 1024 descriptors and 900 held client connections: returns the
        processes, their records and the descriptors each holds beyond its own at start
        and its 900 sockets, counted while all connections are open."""
        srv = self.start([sys.executable, SCRIPT, "server", "--port", "0", "--conns",
                          str(CONNS), "--nofile", str(SERVER_NOFILE), "--timeout", "240"],
                         preload, name="server")
        m = srv.wait_stderr(r"^listening (\d+)$", 30)
        self.assertIsNotNone(m, srv.describe())
        srv_base = int(srv.wait_stderr(r"^fds (\d+)$", 1).group(1))
        cli = self.start([sys.executable, SCRIPT, "client", "--port", m.group(1), "--bytes",
                          str(SIZE), "--conns", str(CONNS), "--hold", "--nofile",
                          str(CLIENT_NOFILE), "--timeout", "240"],
                         preload, name="client", stdin_pipe=True)
        cli_base = int(cli.wait_stderr(r"^fds (\d+)$", 30).group(1))
        if cli.wait_stderr(r"^holding$", 120) is None:
            self.fail("the %d connections were not all echoed\n%s" % (
                CONNS, self.describe_all(srv, cli)))
        # Beyond what each had at start and its own 900 sockets (the server's listener is
        # in its start figure).
        extra = {"server": open_fds(srv.pid) - srv_base - CONNS,
                 "client": open_fds(cli.pid) - cli_base - CONNS}
        stats = {"server": self.stat_json(srv.pid), "client": self.stat_json(cli.pid)} \
            if preload else None
        self.release(cli)
        self.finish(srv, 60, 0, [cli])
        srec, crec = srv.records(), cli.records()
        self.assertEqual((len(srec), len(crec)), (CONNS, CONNS), self.describe_all(srv, cli))
        for r in srec + crec:
            self.assertTrue(r["ok"], r)
            self.assertEqual(r["bytes_received"], SIZE, r)
        for p in (srv, cli):
            self.assertNotIn("Too many open files", p.stderr_text(), p.describe())
            self.assertNotIn("out of system resource", p.stderr_text(), p.describe())
        return srv, cli, srec, crec, extra, stats

    def test_nofile_1024_serves_900_connections(self):
        # Plain TCP does it: the bar smcpre must meet.
        _, _, srec, _, tcp_extra, _ = self.serve(False)
        self.assertTrue(all(r["tcp_bytes_received"] >= SIZE for r in srec))
        print("TCP: 900 of 900 served at RLIMIT_NOFILE %d; descriptors beyond the sockets: "
              "server %d, client %d" % (SERVER_NOFILE, tcp_extra["server"],
                                        tcp_extra["client"]), file=sys.stderr)

        srv, cli, srec, crec, extra, stats = self.serve(True)
        # smcpre's own: beyond what asyncio opens for itself (its epoll, its self-pipe).
        extra = {k: v - tcp_extra[k] for k, v in extra.items()}
        smc = [r for r in srec if r["tcp_bytes_received"] <= SMC_TCP_LIMIT]
        tcp = [r for r in srec if r["tcp_bytes_received"] >= SIZE]
        self.assertEqual(len(smc) + len(tcp), CONNS)
        self.assertGreater(len(smc), 0, "no connection went SMC")
        server, client = stats["server"], stats["client"]
        self.assertEqual(server["totals"]["connections_smc"], len(smc), server["totals"])
        # Every TCP connection has its reason: the client's is NO_FDS (it did not propose,
        # or the server declined for that reason); the server's NO_FDS too, or PEERNOSMC
        # when the client, short itself, did not propose.
        creasons = {f["name"]: f["count"] for f in client["fallbacks"]}
        sreasons = {f["name"]: f["count"] for f in server["fallbacks"]}
        self.assertEqual(creasons, {"NO_FDS": len(tcp)}, client["fallbacks"])
        self.assertEqual(set(sreasons) - {"NO_FDS", "PEERNOSMC"}, set(), server["fallbacks"])
        self.assertEqual(sum(sreasons.values()), len(tcp), server["fallbacks"])
        per = {k: v / len(smc) for k, v in extra.items()}
        print("smcpre: 900 of 900 served at RLIMIT_NOFILE %d, %d SMC and %d TCP (client %s, "
              "server %s); smcpre's descriptors: server %d (%.2f per SMC connection), "
              "client %d (%.2f per SMC connection)" % (
                  SERVER_NOFILE, len(smc), len(tcp), creasons, sreasons, extra["server"],
                  per["server"], extra["client"], per["client"]), file=sys.stderr)
        for side in ("server", "client"):
            self.assertLessEqual(extra[side], FIXED_FDS + MAX_FDS_PER_SMC * len(smc),
                                 "%s: %d descriptors for %d SMC connections" % (
                                     side, extra[side], len(smc)))

    def test_lowered_limit_is_seen(self):
        """smcpre caches RLIMIT_NOFILE; a program that lowers it with setrlimit() after
        smcpre read it has its new limit respected: smcpre's descriptors go just below
        the new limit (not low, among the application's), and its share is cut to size."""
        srv = self.start([sys.executable, SCRIPT, "server", "--port", "0", "--conns", "1"],
                         True, name="server")
        m = srv.wait_stderr(r"^listening (\d+)$", 30)
        self.assertIsNotNone(m, srv.describe())
        code = (
            "import os, resource, select, socket, sys\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit("
            "resource.RLIMIT_NOFILE)[1]))\n"
            "warm = socket.create_connection(('127.0.0.1', %s))\n"  # smcpre reads the limit
            "warm.sendall(b'x'); assert warm.recv(1) == b'x'\n"
            "before = set(os.listdir('/proc/self/fd'))\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit("
            "resource.RLIMIT_NOFILE)[1]))\n"
            "p = select.poll(); p.register(warm, select.POLLIN); p.poll(0)\n"  # a mirror
            "new = sorted(int(f) for f in set(os.listdir('/proc/self/fd')) - before)\n"
            "print('new', ' '.join(map(str, new)), flush=True)\n"
            "warm.shutdown(socket.SHUT_WR); warm.recv(1)\n" % m.group(1))
        cli = self.start([sys.executable, "-c", code], True, {"SMCPRE_LOG": "info"},
                         name="client")
        self.finish(cli, 30, 0, [srv])
        self.finish(srv, 30, 0, [cli])
        self.assertIn(harness.SMC_ESTABLISHED, cli.stderr_text(), cli.describe())
        new = [int(f) for f in cli.wait_stdout(r"^new(.*)$", 1).group(1).split()]
        # The readiness mirror's two ends, made after the limit went down: in the upper
        # half below the new limit (with the old one cached, they were left low).
        self.assertEqual(len(new), 2, new)
        self.assertTrue(all(512 <= f < 1024 for f in new), new)


if __name__ == "__main__":
    harness.main()
