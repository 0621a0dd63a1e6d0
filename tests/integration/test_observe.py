"""What an operator sees: smcpre-stat's processes, connections and show on live processes
under the preload, fallback reasons by name, the SMCPRE_STATS=exit summary, and no stale
entries after a process dies.

The programs here are small Python scripts (Python's socket module calls libc, so the
preload sees them as it sees any C program) that keep their connections open until told
to go on, so that the tables can be read while the connections live.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SmcTestCase, app  # noqa: E402

STAT = os.environ.get("SMCPRE_STAT") or os.path.join(
    os.path.dirname(os.path.dirname(harness.LIB)), "tools", "smcpre-stat")
README = os.path.join(harness.REPO, "README.md")

# Both programs' end: commands on stdin, "close <i>" closes connection i (of `conns`),
# "quit" (or the end of stdin) ends the program.
COMMANDS = r"""
for line in sys.stdin:
    cmd = line.split()
    if cmd and cmd[0] == "close":
        conns[int(cmd[1])].close()
        print("closed %s" % cmd[1], file=sys.stderr, flush=True)
    if cmd and cmd[0] == "quit":
        break
"""

# Accepts N connections, reads a 4-byte length and that many bytes from each, sends them
# back, and keeps the connections open (COMMANDS). Prints "listening <port>", then
# "accepted <i>" per connection.
SERVER = r"""
import socket, sys
n = int(sys.argv[1])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(16)
print("listening %d" % ls.getsockname()[1], file=sys.stderr, flush=True)
conns = []
for i in range(n):
    c, _ = ls.accept()
    size = int.from_bytes(c.recv(4, socket.MSG_WAITALL), "big")
    data = b""
    while len(data) < size:
        data += c.recv(size - len(data))
    c.sendall(data)
    conns.append(c)
    print("accepted %d" % i, file=sys.stderr, flush=True)
"""

# Opens one connection per size given, sends a 4-byte length and that many bytes, reads
# them back, and keeps the connections open (COMMANDS).
CLIENT = r"""
import socket, sys
port = int(sys.argv[1])
sizes = [int(a) for a in sys.argv[2:]]
conns = []
for size in sizes:
    c = socket.create_connection(("127.0.0.1", port))
    payload = bytes(i % 251 for i in range(size))
    c.sendall(size.to_bytes(4, "big") + payload)
    back = b""
    while len(back) < size:
        back += c.recv(size - len(back))
    assert back == payload
    conns.append(c)
print("ready", file=sys.stderr, flush=True)
"""


class ObserveTest(SmcTestCase):

    def run_stat(self, *args, expect_rc=0):
        out = subprocess.run([STAT] + list(args) + ["--runtime-dir", self.runtime_dir],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=20)
        self.assertEqual(out.returncode, expect_rc, "smcpre-stat %s: %s%s" % (
            " ".join(args), out.stdout, out.stderr))
        return out.stdout

    def stat_json(self, command, *pids):
        doc = json.loads(self.run_stat(command, "--json", *[str(p) for p in pids]))
        return {p["pid"]: p for p in doc["processes"]}

    def start_py_server(self, count, preload=True, env=None):
        argv = [sys.executable, "-c", SERVER + COMMANDS, str(count)]
        srv = self.start(argv, preload, env, "server", stdin_pipe=True)
        m = srv.wait_stderr(r"^listening (\d+)$", 15)
        self.assertIsNotNone(m, srv.describe())
        return srv, int(m.group(1))

    def start_client(self, port, sizes, env=None):
        argv = [sys.executable, "-c", CLIENT + COMMANDS, str(port)] + [str(s) for s in sizes]
        cli = self.start(argv, True, env, "client", stdin_pipe=True)
        self.assertIsNotNone(cli.wait_stderr(r"^ready$", 30), cli.describe())
        return cli

    def command(self, proc, text, answer):
        proc.popen.stdin.write((text + "\n").encode())
        proc.popen.stdin.flush()
        self.assertIsNotNone(proc.wait_stderr(answer, 15), proc.describe())

    def wait_for(self, predicate, what, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value or time.monotonic() > deadline:
                self.assertTrue(value, what)
                return value
            time.sleep(0.05)

    def quit(self, *procs):
        for p in procs:
            p.popen.stdin.write(b"quit\n")
            p.close_stdin()
        for p in procs:
            self.finish(p, 30, 0, procs)

    def test_connections_table_on_live_processes(self):
        srv, port = self.start_py_server(2)
        cli = self.start_client(port, [1000, 30000])
        self.assertIsNotNone(srv.wait_stderr(r"^accepted 1$", 15), srv.describe())
        procs = self.stat_json("show", srv.pid, cli.pid)
        server, client = procs[srv.pid], procs[cli.pid]
        peer = "127.0.0.1:%d" % port
        # The client: two connections to the server's port, on SMC, with their bytes.
        conns = client["connections"]
        self.assertEqual(len(conns), 2, client)
        for c, size in zip(conns, [1000, 30000]):
            self.assertEqual(c["peer"], peer)
            self.assertEqual(c["role_name"], "client")
            self.assertEqual(c["state_name"], "active")
            self.assertEqual(c["path_name"], "SMC-R/shm")
            self.assertEqual(c["bytes_sent"], size + 4)
            self.assertEqual(c["bytes_received"], size)
            self.assertNotEqual(c["link_group"], 0)
        # The server: the same two, seen from the other end.
        sconns = server["connections"]
        self.assertEqual(sorted(c["local"] for c in sconns), [peer, peer], server)
        self.assertEqual(sorted(c["peer"] for c in sconns), sorted(c["local"] for c in conns))
        self.assertEqual(sorted(c["bytes_received"] for c in sconns), [1004, 30004])
        self.assertTrue(all(c["role_name"] == "server" for c in sconns), server)
        for p in (server, client):
            self.assertEqual(p["totals"]["connections_smc"], 2, p)
            self.assertEqual(p["totals"]["connections_fallback"], 0, p)
            self.assertEqual(p["totals"]["open_smc"], 2, p)
            self.assertGreater(p["totals"]["cdc_received"], 0, p)
            self.assertGreater(p["totals"]["llc_received"] + p["totals"]["llc_sent"], 0, p)
            self.assertEqual(len(p["links"]), 1, p)
            self.assertEqual(p["links"][0]["state"], 1, p)  # active
        self.assertEqual(client["totals"]["smc_bytes_sent"], 31008)
        self.assertEqual(server["totals"]["smc_bytes_received"], 31008)

        # The text table: one line per connection, as smcss prints it.
        text = self.run_stat("connections")
        lines = text.splitlines()
        self.assertRegex(lines[0], r"^\s*PID\s+PROGRAM\s+ROLE\s+LOCAL\s+PEER\s+STATE\s+PATH\s+"
                         r"SENT\s+RECEIVED\s+RNR$")
        rows = [l.split() for l in lines[1:]]
        self.assertEqual(len(rows), 4, text)
        mine = [r for r in rows if r[0] == str(cli.pid)]
        self.assertEqual(len(mine), 2, text)
        for r in mine:
            self.assertEqual(r[2:4], ["client", r[3]])
            self.assertEqual(r[4], peer)
            self.assertEqual(r[5:7], ["active", "SMC-R/shm"])
        self.assertEqual(sorted(int(r[7]) for r in mine), [1004, 30004])
        procs_text = self.run_stat("processes")
        self.assertRegex(procs_text, r"(?m)^%d\s+python3\s+2\s+0\s+2\s+1\s" % cli.pid)

        # The client closes its first connection: closing on its side (its SMC close
        # waits for the peer's, as TCP's FIN_WAIT does), peer-closed on the server's.
        self.command(cli, "close 0", r"^closed 0$")

        def states():
            procs = self.stat_json("show", srv.pid, cli.pid)
            return {p: sorted(c["state_name"] for c in procs[p]["connections"])
                    for p in (srv.pid, cli.pid)}
        self.wait_for(lambda: states() == {srv.pid: ["active", "peer-closed"],
                                           cli.pid: ["active", "closing"]},
                      "the client's close did not show: %s" % self.run_stat("show"))
        # The server closes it too: gone from both tables, its bytes kept in the totals.
        self.command(srv, "close 0", r"^closed 0$")
        self.wait_for(lambda: states() == {srv.pid: ["active"], cli.pid: ["active"]},
                      "the server's close did not show: %s" % self.run_stat("show"))
        procs = self.stat_json("show", srv.pid, cli.pid)
        self.assertEqual(procs[cli.pid]["totals"]["smc_bytes_sent"], 31008)
        self.assertEqual(procs[srv.pid]["totals"]["smc_bytes_received"], 31008)
        self.quit(srv, cli)

    def test_fallbacks_by_reason_name(self):
        # A server without a device (SMCPRE_DEVICE=none): its port is published, the
        # client proposes, the server declines with NOSMCDEV, and both stay on TCP.
        srv, port = self.start_py_server(1, env={"SMCPRE_DEVICE": "none"})
        # A plain server (no preload): its port is not published, the client does not
        # propose at all.
        plain, plain_port = self.start_py_server(1, preload=False)
        cli = self.start_client(port, [100])
        self.assertIsNotNone(srv.wait_stderr(r"^accepted 0$", 15), srv.describe())
        cli2 = self.start_client(plain_port, [50])
        procs = self.stat_json("show", srv.pid, cli.pid, cli2.pid)
        client, server, other = procs[cli.pid], procs[srv.pid], procs[cli2.pid]
        self.assertEqual([(f["name"], f["count"]) for f in client["fallbacks"]],
                         [("NOSMCDEV", 1)], client)
        self.assertEqual(client["fallbacks"][0]["explanation"],
                         "no SMC device (SMCPRE_DEVICE=none)")
        self.assertEqual([f["name"] for f in server["fallbacks"]], ["NOSMCDEV"], server)
        self.assertEqual(client["connections"][0]["path_name"], "TCP (NOSMCDEV)")
        self.assertEqual(client["connections"][0]["bytes_sent"], 104)
        self.assertEqual(client["connections"][0]["bytes_received"], 100)
        self.assertEqual(server["connections"][0]["path_name"], "TCP (NOSMCDEV)")
        self.assertEqual(server["connections"][0]["bytes_received"], 104)
        self.assertEqual(client["totals"]["tcp_bytes_received"], 100)
        # Never proposed: counted with its reason, not listed.
        self.assertEqual([(f["name"], f["count"]) for f in other["fallbacks"]],
                         [("PEER_UNKNOWN", 1)], other)
        self.assertEqual(other["connections"], [], other)
        self.assertEqual(other["totals"]["connections_fallback"], 1, other)
        # In text: the reason, its code and its explanation.
        text = self.run_stat("show", str(cli.pid))
        self.assertIn("1 NOSMCDEV (0x03030000): no SMC device (SMCPRE_DEVICE=none)", text)
        self.assertRegex(text, r"client\s+127\.0\.0\.1:\d+\s+127\.0\.0\.1:%d\s+active\s+"
                         r"TCP \(NOSMCDEV\)\s+104\s+100\s+0" % port)
        self.quit(srv, plain, cli, cli2)

    def test_exit_summary(self):
        env = {"SMCPRE_STATS": "exit"}
        srv, cli, srec, crec = self.transfer("sink", 3 * 1024 * 1024, server_env=env,
                                             client_env=env)
        self.assert_smc(srec, crec, (srv, cli))
        for p, sent, received in ((cli, "3.0 MiB", "16 B"), (srv, "16 B", "3.0 MiB")):
            text = p.stderr_text()
            self.assertRegex(text, r"smcpre: pid %d \(tcpapp\), up \d+m\d\ds, at exit" % p.pid)
            # The client may exit before the server's close reached it: its connection
            # is then still closing.
            self.assertRegex(text, r"  connections +1 SMC, 0 TCP; open now (0 SMC|1 SMC, 0 TCP, "
                             r"0 in handshake \(1 (closing|peer-closed)\))")
            self.assertIn("  fallbacks   none", text)
            self.assertIn("  bytes       SMC %s sent, %s received; TCP 0 B sent" %
                          (sent, received), text)
            self.assertRegex(text, r"  messages    CDC [1-9]\d* sent, [1-9]\d* received; LLC")
            self.assertRegex(text, r"  pool        16384 buffers")
        # Into SMCPRE_LOG_FILE instead of stderr when that is set; nothing without the
        # variable.
        log = os.path.join(self.runtime_dir, "client.log")
        srv, cli, _, _ = self.transfer("sink", 1000, client_env=dict(env, SMCPRE_LOG_FILE=log))
        self.assertNotIn("at exit", cli.stderr_text() + srv.stderr_text())
        with open(log) as f:
            self.assertRegex(f.read(), r"smcpre: pid %d \(tcpapp\).*at exit" % cli.pid)

    def test_stats_none_publishes_nothing(self):
        srv, _ = self.start_py_server(1, env={"SMCPRE_STATS": "none"})
        self.assertNotIn(srv.pid, self.stat_json("processes"))
        self.assertFalse(os.path.exists(os.path.join(self.runtime_dir, "stats", str(srv.pid))))
        srv.kill()

    def test_no_stale_entries(self):
        srv, port = self.start_py_server(1)
        cli = self.start_client(port, [10])
        self.assertIn(srv.pid, self.stat_json("processes"))
        stats_dir = os.path.join(self.runtime_dir, "stats", str(os.geteuid()))
        self.assertTrue(os.path.exists(os.path.join(stats_dir, str(cli.pid))))
        # Killed: no exit handler runs. The next listing leaves it out and removes its file.
        os.killpg(cli.popen.pid, signal.SIGKILL)
        cli.popen.wait(10)
        self.assertNotIn(cli.pid, self.stat_json("processes"))
        self.assertFalse(os.path.exists(os.path.join(stats_dir, str(cli.pid))))
        self.run_stat("show", str(cli.pid), expect_rc=1)
        # An orderly exit removes the file itself.
        self.quit(srv)
        self.assertEqual(sorted(os.listdir(stats_dir)), [])

    def test_reasons_are_documented(self):
        reasons = json.loads(subprocess.run([STAT, "reasons", "--json"], stdout=subprocess.PIPE,
                                            check=True, text=True).stdout)["reasons"]
        with open(README) as f:
            documented = re.findall(r"^\| `([A-Z0-9_]+)` \| `(0x[0-9a-f]{8})` \| (.+) \|$",
                                    f.read(), re.M)
        self.assertEqual([(r["name"], "0x%08x" % r["code"], r["explanation"]) for r in reasons],
                         documented, "README's fallback reason table differs from the code")


if __name__ == "__main__":
    harness.main()
