"""The receive path (doc/design.md §3) seen from outside: backlog workers, the receive
buffer pool, RNR, and their counters as smcpre-stat shows them on live processes.

- Pool exhaustion: a receiver with a tiny pool makes the sender meet RNR; every byte still
  arrives intact (tcpapp verifies a checksum), and the counters of both live processes
  say what happened.
- Many connections through a worker per CPU, and inline mode: data intact, the
  workers did the work.
- A CPU list naming a CPU that does not exist: a clear error, the default CPUs, SMC.
- Fork: a child of a process whose workers run starts its own, both exit cleanly.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import KIB, MIB, SmcTestCase, app  # noqa: E402

STAT = os.environ.get("SMCPRE_STAT") or os.path.join(
    os.path.dirname(os.path.dirname(harness.LIB)), "tools", "smcpre-stat")


class ReceivePathTest(SmcTestCase):

    def stats(self, proc):
        """smcpre-stat show --json for one live process: its entry."""
        out = subprocess.run([STAT, "show", "--json", "--runtime-dir", self.runtime_dir,
                              str(proc.pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, timeout=20)
        self.assertEqual(out.returncode, 0, "smcpre-stat failed: %s\n%s" % (
            out.stderr, proc.describe()))
        processes = json.loads(out.stdout)["processes"]
        self.assertEqual(len(processes), 1, out.stdout)
        self.assertEqual(processes[0]["pid"], proc.pid)
        return processes[0]

    def held_transfer(self, nbytes, server_env, client_env, server_args=(), client_args=(),
                      conns=1):
        """A tcpapp sink transfer whose two processes stay alive (--hold) until released;
        returns (server, client) after both reported ok records (one per connection) and
        "done"."""
        srv, port = self.start_server(
            "tcpapp", ["--mode", "sink", "--bytes", str(nbytes), "--hold"] + list(server_args),
            env=server_env, stdin_pipe=True)
        cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port", str(port),
                          "--mode", "sink", "--bytes", str(nbytes), "--hold", "--timeout", "100"]
                         + list(client_args), True, client_env, "client", stdin_pipe=True)
        for p in (cli, srv):
            self.assertIsNotNone(p.wait_stderr(r"^done$", 110),
                                 "no 'done'\n" + self.describe_all(srv, cli))
            # stdout has its own reader thread: the records may trail the "done" line.
            deadline = time.monotonic() + 10
            while len(p.records()) < conns and time.monotonic() < deadline:
                time.sleep(0.05)
        self.assert_records_ok(srv.records(), cli.records(), srv, cli)
        self.assert_smc(srv.records(), cli.records(), (srv, cli))
        return srv, cli

    def test_pool_exhaustion_degrades_to_rnr_and_recovers(self):
        # Four receive buffers in the whole receiving process, a queue of four: every CDC
        # handed to the worker leaves the queue one short until the worker gives it back.
        tiny = {"SMCPRE_POOL_SIZE": "4", "SMCPRE_RQ_DEPTH": "4",
                "SMCPRE_BACKLOG_CPUS": str(max(os.sched_getaffinity(0)))}
        srv, cli = self.held_transfer(8 * MIB, tiny, None, client_args=["--chunk", "64"])
        receiver, sender = self.stats(srv), self.stats(cli)
        self.release(srv, cli)
        self.assertEqual(receiver["process"]["pool_size"], 4)
        self.assertEqual(receiver["process"]["pool_low_water"], 0, receiver)
        self.assertGreater(receiver["process"]["pool_exhausted"], 0, receiver)
        self.assertGreater(sum(l["rq_refill_short"] for l in receiver["links"]), 0, receiver)
        rnr = sum(l["rnr_events"] for l in sender["links"])
        self.assertGreater(rnr, 0, "the sender never met RNR: %s" % sender)
        # Recovered: the transfer completed (records ok above) and the queue is full again.
        for link in receiver["links"]:
            self.assertEqual(link["rq_posted"], link["rq_depth"], receiver)

    def many_connections(self, cpus):
        env = {"SMCPRE_BACKLOG_CPUS": cpus}
        srv, cli = self.held_transfer(
            1 * MIB, env, env, server_args=["--conns", "64", "--concurrent"],
            client_args=["--conns", "4", "--parallel", "16", "--chunk", "random"], conns=64)
        receiver = self.stats(srv)
        self.release(srv, cli)
        return receiver

    def test_many_connections_through_a_worker_per_cpu(self):
        # (A CPU may be named once: as many workers as CPUs. test_backlog puts four workers
        # on two CPUs.)
        cpus = sorted(os.sched_getaffinity(0))
        receiver = self.many_connections(",".join(str(c) for c in cpus))
        process = receiver["process"]
        self.assertEqual(process["backlog_workers"], len(cpus), receiver)
        self.assertEqual(sorted(w["cpu"] for w in receiver["workers"]), cpus, receiver)
        cdc = sum(l["cdc_received"] for l in receiver["links"])
        self.assertGreater(cdc, 64, receiver)
        # Every CDC was applied by a worker or, with its worker idle, by the reaping thread.
        self.assertEqual(process["cdc_backlogged"] + process["cdc_inline"], cdc, receiver)
        self.assertGreater(process["cdc_backlogged"], 0, receiver)

    def test_many_connections_inline_mode(self):
        receiver = self.many_connections("none")
        process = receiver["process"]
        self.assertEqual(process["backlog_workers"], 0, receiver)
        self.assertEqual(receiver["workers"], [], receiver)
        self.assertEqual(process["cdc_backlogged"], 0, receiver)
        self.assertEqual(process["cdc_inline"], sum(l["cdc_received"] for l in receiver["links"]))

    def test_cpu_list_naming_missing_cpus_falls_back_to_default(self):
        env = {"SMCPRE_BACKLOG_CPUS": "0,4000"}
        srv, cli = self.held_transfer(4 * MIB, env, env)
        receiver = self.stats(srv)
        self.release(srv, cli)
        for p in (srv, cli):
            self.assertIn("SMCPRE_BACKLOG_CPUS: CPU 4000 does not exist", p.stderr_text(),
                          p.describe())
        # The default: inline below 4 CPUs, else one worker per 8 CPUs on the highest.
        cpus = sorted(os.sched_getaffinity(0))
        expected = 0 if len(cpus) < 4 else min(max(len(cpus) // 8, 1), 8)
        self.assertEqual(receiver["process"]["backlog_workers"], expected, receiver)
        self.assertEqual(sorted(w["cpu"] for w in receiver["workers"]),
                         cpus[len(cpus) - expected:], receiver)

    def test_fork_child_starts_its_own_workers_and_both_exit_cleanly(self):
        srv, port = self.start_server("tcpapp", ["--mode", "echo", "--raw", "--conns", "2",
                                                 "--concurrent"])
        # A client whose workers are running forks; the child makes a connection of its own.
        script = textwrap.dedent("""
            import os, socket, sys
            def echo(sock, n, seed):
                data = bytes((i * seed + 7) & 0xff for i in range(n))
                sock.sendall(data)
                got = b""
                while len(got) < n:
                    chunk = sock.recv(65536)
                    if not chunk:
                        sys.exit("EOF after %d bytes" % len(got))
                    got += chunk
                if got != data:
                    sys.exit("echo differs")
            first = socket.create_connection(("127.0.0.1", PORT))
            echo(first, 256 * 1024, 3)
            pid = os.fork()
            if pid == 0:
                second = socket.create_connection(("127.0.0.1", PORT))
                echo(second, 256 * 1024, 5)
                second.close()
                sys.exit(0)  # exit() with its atexit handlers, in the child too
            echo(first, 256 * 1024, 11)
            _, status = os.waitpid(pid, 0)
            first.close()
            sys.exit(0 if status == 0 else 1)
            """).replace("PORT", str(port))
        cli = self.start([sys.executable, "-c", script], True,
                         {"SMCPRE_LOG": "debug",
                          "SMCPRE_BACKLOG_CPUS": str(max(os.sched_getaffinity(0)))}, "client")
        self.finish(cli, 60, 0, [srv])
        self.finish(srv, 30, 0, [cli])
        log = cli.stderr_text()
        # Two processes, each with its own workers started and stopped at exit.
        pids = {line.split("[")[1].split("/")[0] for line in log.splitlines()
                if "worker(s) on CPUs" in line}
        self.assertEqual(len(pids), 2, log)
        self.assertEqual(log.count("worker(s) stopped"), 2, log)
        self.assertEqual(log.count("connection SMC established"), 2, log)
        # Neither left a stats file behind.
        stats_dir = os.path.join(self.runtime_dir, "stats", str(os.geteuid()))
        left = os.listdir(stats_dir) if os.path.isdir(stats_dir) else []
        self.assertEqual(left, [], "stats files left: %s" % left)


if __name__ == "__main__":
    harness.main()
